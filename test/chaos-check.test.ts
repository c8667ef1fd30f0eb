// The chaos run's invariant checker (tools/chaos/check.mjs) on hand-made
// reports: what the library promises passes, each kind of loss is caught.
// (The run itself, with processes, faults and network partitions, is
// `npm run chaos`; .ci/run runs it.)
import t from 'tap'

// @ts-expect-error plain .mjs tool without type declarations
import { check, normalize, uncovered } from '../tools/chaos/check.mjs'

type Range = [number, number]
interface Sender {
  id: number
  k: number
  graceful: boolean
  sentLast: Record<number, number> | null
  undelivered: Record<number, Range[]>
  closeFrom: Record<number, number>
}
interface Receiver {
  id: number
  k: number
  killed: boolean
  complete: boolean
  streams: Record<string, { first: number; last: number; count: number }>
  gaps: Record<string, Range[]>
}
interface Run {
  incarnations: Record<number, number[]>
  senders: Record<string, Sender>
  receivers: Record<string, Receiver>
  tolerance: number
}
const run = (r: Run): string[] => check(r) as string[]

function sender(id: number, k: number, over: Partial<Sender> = {}): Sender {
  return { id, k, graceful: true, sentLast: {}, undelivered: {}, closeFrom: {}, ...over }
}
function receiver(id: number, k: number, streams: Receiver['streams'], over: Partial<Receiver> = {}): Receiver {
  return { id, k, killed: false, complete: true, streams, gaps: {}, ...over }
}
const st = (first: number, last: number) => ({ first, last, count: last - first + 1 })

t.test('interval helpers', async (t) => {
  t.same(normalize([[5, 7], [1, 2], [3, 4], [10, 9], [8, 8]]), [[1, 8]])
  t.same(uncovered(1, 10, [[2, 3], [6, 20]]), [[1, 1], [4, 5]])
  t.same(uncovered(4, 5, [[1, 10]]), [])
})

t.test('everything delivered in order passes', async (t) => {
  t.same(
    run({
      incarnations: { 1: [1], 2: [1] },
      senders: { '1.1': sender(1, 1, { sentLast: { 2: 100 } }), '2.1': sender(2, 1, { sentLast: { 1: 50 } }) },
      receivers: { '1.1': receiver(1, 1, { '2.1': st(1, 50) }), '2.1': receiver(2, 1, { '1.1': st(1, 100) }) },
      tolerance: 32,
    }),
    [],
  )
})

t.test('a gap is fine only when the sender reported it undelivered', async (t) => {
  const base = (undelivered: Record<number, Range[]>): Run => ({
    incarnations: { 1: [1], 2: [1] },
    senders: { '1.1': sender(1, 1, { sentLast: { 2: 100 }, undelivered }), '2.1': sender(2, 1, { sentLast: { 1: 0 } }) },
    receivers: { '1.1': receiver(1, 1, {}), '2.1': receiver(2, 1, { '1.1': st(1, 100) }, { gaps: { '1.1': [[40, 59]] } }) },
    tolerance: 32,
  })
  t.same(run(base({ 2: [[40, 59]] })), [])
  t.same(run(base({ 2: [[30, 70]] })), [], 'reported and partly delivered anyway is fine')
  const v = run(base({ 2: [[40, 50]] }))
  t.equal(v.length, 1)
  t.match(v[0], /receiver 2 \(incarnation 1\) never got seqs 51\.\.59 \(9 messages\) of sender 1\.1/)
})

t.test('the tail: delivered, reported, or in close()', async (t) => {
  const base = (s: Partial<Sender>): Run => ({
    incarnations: { 1: [1], 2: [1] },
    senders: { '1.1': sender(1, 1, { sentLast: { 2: 100 }, ...s }), '2.1': sender(2, 1, { sentLast: { 1: 0 } }) },
    receivers: { '1.1': receiver(1, 1, {}), '2.1': receiver(2, 1, { '1.1': st(1, 90) }) },
    tolerance: 32,
  })
  t.match(run(base({})), [/never got seqs 91\.\.100 \(10 messages\) of sender 1\.1, which closed normally/])
  t.same(run(base({ closeFrom: { 2: 91 } })), [])
  t.same(run(base({ undelivered: { 2: [[91, 100]] } })), [])
  t.same(run(base({ graceful: false })), [], 'a killed sender lost its queue')
  t.match(run(base({ sentLast: { 2: 80 } })), [/got seq 90 of sender 1\.1, which sent it only 80/])
})

t.test('a restarted receiver: what the killed one did not handle comes to the next', async (t) => {
  const base = (first2: number, killedLast: number): Run => ({
    incarnations: { 1: [1], 2: [1, 2] },
    senders: { '1.1': sender(1, 1, { sentLast: { 2: 200 } }), '2.1': sender(2, 1, { graceful: false, sentLast: null }), '2.2': sender(2, 2, { sentLast: { 1: 0 } }) },
    receivers: {
      '1.1': receiver(1, 1, {}),
      '2.1': receiver(2, 1, { '1.1': st(1, killedLast) }, { killed: true, complete: false }),
      '2.2': receiver(2, 2, { '1.1': st(first2, 200) }, { gaps: first2 > 1 ? { '1.1': [[1, first2 - 1]] } : {} }),
    },
    tolerance: 32,
  })
  t.same(run(base(90, 100)), [], 'overlap: handled, not acknowledged, delivered again')
  t.same(run(base(101, 100)), [])
  t.same(run(base(133, 100)), [], 'up to the tolerance past its last report')
  t.match(run(base(134, 100)), [/receiver 2 \(incarnation 2\) never got seqs 133 \(1 messages\) of sender 1\.1 before its first message/])
  // A receiver never killed has no earlier incarnation to cover its start.
  const r = base(5, 0)
  r.incarnations[2] = [2]
  t.match(run(r), [/never got seqs 1\.\.4 \(4 messages\) of sender 1\.1 before its first message/])
})

t.test('a killed receiver that reported nothing of a stream handled none of it', async (t) => {
  // (a stream's first message is reported at once)
  const r: Run = {
    incarnations: { 1: [1], 2: [1, 2] },
    senders: { '1.1': sender(1, 1, { sentLast: { 2: 100 } }), '2.1': sender(2, 1, { graceful: false, sentLast: null }), '2.2': sender(2, 2, { sentLast: { 1: 0 } }) },
    receivers: {
      '1.1': receiver(1, 1, {}),
      '2.1': receiver(2, 1, {}, { killed: true, complete: false }),
      '2.2': receiver(2, 2, { '1.1': st(20, 100) }, { gaps: { '1.1': [[1, 19]] } }),
    },
    tolerance: 32,
  }
  t.match(run(r), [/receiver 2 \(incarnation 2\) never got seqs 1\.\.19 \(19 messages\) of sender 1\.1/])
  r.senders['1.1']!.undelivered = { 2: [[1, 19]] }
  t.same(run(r), [])
})

t.test('a killed receiver that started a stream mid-way: tolerance after its last report only', async (t) => {
  // Sender 1 gave up 1..49 (and some of 93..99) for receiver 2; the first
  // process of 2 got 50.. (reported up to 60) and was killed; the second
  // starts at 100. 61..92 may have been handled unreported.
  const base = (givenUp: Range): Run => ({
    incarnations: { 1: [1], 2: [1, 2] },
    senders: { '1.1': sender(1, 1, { sentLast: { 2: 200 }, undelivered: { 2: [[1, 49], givenUp] } }), '2.1': sender(2, 1, { graceful: false, sentLast: null }), '2.2': sender(2, 2, { sentLast: { 1: 0 } }) },
    receivers: {
      '1.1': receiver(1, 1, {}),
      '2.1': receiver(2, 1, { '1.1': st(50, 60) }, { killed: true, complete: false, gaps: { '1.1': [[1, 49]] } }),
      '2.2': receiver(2, 2, { '1.1': st(100, 200) }, { gaps: { '1.1': [[1, 99]] } }),
    },
    tolerance: 32,
  })
  t.same(run(base([93, 99])), [])
  t.match(run(base([95, 99])), [/never got seqs 93\.\.94 \(2 messages\) of sender 1\.1 before its first message of that sender \(100; earlier incarnations of the receiver reached 92/])
})
