// close() stops the handlers, not the links: while it waits for this
// replica's own queues to be acknowledged, peers' messages keep arriving.
// Those are not handled, so they must not be acknowledged either: the
// sender keeps them and delivers them to the replica's next process (or
// reports them in its own close() result). Found by the chaos run
// (npm run chaos): they were acknowledged unhandled, lost silently.
import t from 'tap'

import { Replica } from 'nexres-rpc'

import { loopbackCluster, until } from './helpers.js'

t.test('messages arriving while a replica closes are not acknowledged unhandled', async (t) => {
  // Replica 3 never starts: replica 2's message to it keeps 2's close()
  // waiting its whole timeout while replica 1 streams to 2.
  const cluster = await loopbackCluster(3, 'close-unhandled')
  const reconnect = { minMs: 10, maxMs: 50 }
  const a = await Replica.start({ auth: 'none', id: 1, cluster, reconnect })
  t.teardown(() => a.close({ timeoutMs: 0 }))

  const start = async (into: number[]): Promise<Replica> => {
    const r = await Replica.start({ auth: 'none', id: 2, cluster, reconnect })
    r.on('seq', (msg) => into.push(new DataView(msg.payload.buffer, msg.payload.byteOffset, 4).getUint32(0, true)))
    return r
  }
  const got1: number[] = []
  const b1 = await start(got1)
  await a.waitForPeers([2], { timeoutMs: 10_000 })
  b1.send(3, 'x', 'waits for replica 3')

  let sent = 0
  const payload = new Uint8Array(4)
  const dv = new DataView(payload.buffer)
  const stream = setInterval(() => {
    for (let i = 0; i < 20; i++) {
      dv.setUint32(0, ++sent, true)
      a.send(2, 'seq', payload)
    }
  }, 2)
  t.teardown(() => clearInterval(stream))
  await until(() => got1.length >= 200, 10_000, 'the stream to replica 2')
  const handledBeforeClose = got1.length
  await b1.close({ timeoutMs: 400 })
  clearInterval(stream)
  t.ok(sent > handledBeforeClose + 200, `replica 1 went on sending while replica 2 closed (${sent - handledBeforeClose} more)`)
  t.same(got1, Array.from({ length: got1.length }, (_, i) => i + 1), 'the first process handled a prefix, in order')

  // The next process of replica 2 gets everything the first did not handle.
  const got2: number[] = []
  const b2 = await start(got2)
  t.teardown(() => b2.close({ timeoutMs: 0 }))
  await until(() => a.stats().peers.find((p) => p.id === 2)!.queuedBytes === 0, 10_000, "replica 1's queue to acknowledge")
  const handled = new Set([...got1, ...got2])
  const missing: number[] = []
  for (let s = 1; s <= sent; s++) if (!handled.has(s)) missing.push(s)
  t.equal(missing.length, 0, `every message handled by one of the two processes (missing ${missing.length}: ${missing.slice(0, 5).join(', ')}...)`)
  t.ok(got2.length === 0 || got2[0]! <= got1.length + 1, 'the second process starts where the first stopped (or before)')
})

t.test('close() called from a handler: what was not handled goes to the next process', async (t) => {
  const cluster = await loopbackCluster(2, 'close-from-handler')
  const reconnect = { minMs: 10, maxMs: 50 }
  const a = await Replica.start({ auth: 'none', id: 1, cluster, reconnect })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const seqOf = (payload: Uint8Array): number => new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true)

  const got1: number[] = []
  const b1 = await Replica.start({ auth: 'none', id: 2, cluster, reconnect })
  let closing: Promise<unknown> | undefined
  b1.on('seq', (msg) => {
    got1.push(seqOf(msg.payload))
    if (got1.length === 300) closing = b1.close({ timeoutMs: 0 })
  })
  await a.waitForPeers([2], { timeoutMs: 10_000 })
  // Ten bursts, 20 ms apart, while the JS thread stays busy: replica 2's io
  // threads read each as runs of its own, and its handlers then get them
  // all in one batch; close() comes in the first run.
  const N = 20_000
  const payload = new Uint8Array(4)
  const dv = new DataView(payload.buffer)
  const pause = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
  for (let s = 1; s <= N; s++) {
    dv.setUint32(0, s, true)
    a.send(2, 'seq', payload)
    if (s % 2000 === 0) {
      a.flush()
      pause(20)
    }
  }
  pause(300)
  await until(() => closing !== undefined, 10_000, 'the handler to close replica 2')
  await closing
  t.ok(got1.length < N, `the first process stopped handling at close() (${got1.length} of ${N})`)

  const got2: number[] = []
  const b2 = await Replica.start({ auth: 'none', id: 2, cluster, reconnect })
  t.teardown(() => b2.close({ timeoutMs: 0 }))
  b2.on('seq', (msg) => got2.push(seqOf(msg.payload)))
  await until(() => a.stats().peers[0]!.queuedBytes === 0, 10_000, "replica 1's queue to acknowledge")
  const handled = new Set([...got1, ...got2])
  const missing: number[] = []
  for (let s = 1; s <= N; s++) if (!handled.has(s)) missing.push(s)
  t.equal(missing.length, 0, `every message handled by one of the two processes (missing ${missing.length}: ${missing.slice(0, 5).join(', ')}...)`)
})
