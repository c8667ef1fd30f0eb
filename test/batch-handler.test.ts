// replica.onBatch (docs/API.md): runs of one route's messages from one
// sender in one call, no object per message. Everything a per-message
// handler gets must be there: every message once, in order, its bytes, its
// id, signed payloads without their trailer, promises holding the batch.
import t from 'tap'

import { MessageBatch } from 'nexres-rpc'

import { keyedPair, until } from './helpers.js'


t.test('every message once, in order, with its bytes and id; batches end where another route starts; signed payloads without their trailer', async (t) => {
  const [a, b] = await keyedPair(t, 'batch')
  const seen: { id: number; body: string; cluster: string; from: number }[] = []
  let batches = 0
  let largest = 0
  b.onBatch('b', (batch) => {
    t.ok(batch instanceof MessageBatch)
    batches++
    largest = Math.max(largest, batch.count)
    for (let i = 0; i < batch.count; i++) {
      const body = Buffer.from(batch.bytes.buffer, batch.bytes.byteOffset + batch.offset(i), batch.length(i)).toString()
      if (body !== Buffer.from(batch.payload(i)).toString()) t.fail('payload(i) and offset/length differ')
      seen.push({ id: batch.id(i), body, cluster: batch.cluster, from: batch.from })
    }
  })
  const other: number[] = []
  b.on('x', (m) => other.push(m.id))
  const n = 3000
  for (let i = 0; i < n; i++) {
    if (i % 100 === 99) a.send(2, 'x', 'interleaved')
    if (i % 500 === 250) a.send(2, 'b', `signed ${i}`, { sign: true })
    else a.send(2, 'b', i % 7 === 0 ? '' : `m${i}`)
  }
  await until(() => seen.length === n && other.length === n / 100, 10_000, 'every message')
  const ids = seen.map((s) => s.id)
  t.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]!), 'ids increase')
  t.same(
    seen.map((s) => s.body),
    Array.from({ length: n }, (_, i) => (i % 500 === 250 ? `signed ${i}` : i % 7 === 0 ? '' : `m${i}`)),
    'every payload, empty and signed ones too (the signature trailer is not in the payload)',
  )
  t.ok(seen.every((s) => s.from === 1 && s.cluster === 'batch'), 'from and cluster')
  t.ok(batches < n && largest > 1, `${n} messages in ${batches} calls (up to ${largest} at once)`)
  t.equal(b.stats().unrouted, 0)
})

t.test('a batch handler that returns a promise: the batch stays valid and unacknowledged until it settles; a throw is reported', async (t) => {
  const [a, b] = await keyedPair(t, 'batch')
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  const read: string[] = []
  let calls = 0
  b.onBatch('slow', async (batch) => {
    calls++
    await gate
    // Read after the await: other batches came meanwhile.
    for (let i = 0; i < batch.count; i++) read.push(Buffer.from(batch.payload(i)).toString())
  })
  const errors: string[] = []
  b.events.on('error', (err, info) => errors.push(`${info.route}: ${(err as Error).message}`))
  b.onBatch('boom', () => {
    throw new Error('batch handler failed')
  })
  for (let i = 0; i < 200; i++) {
    a.send(2, 'slow', `s${i}`)
    if (i % 50 === 0) a.flush()
  }
  a.send(2, 'boom', 'x')
  await until(() => calls >= 1 && errors.length === 1, 10_000, 'the handlers called')
  await new Promise((r) => setTimeout(r, 200))
  t.ok(a.stats().peers[0]!.queuedBytes > 0, 'nothing of the held batches acknowledged yet')
  release()
  await until(() => read.length === 200, 10_000, 'every held message read')
  t.same(read, Array.from({ length: 200 }, (_, i) => `s${i}`), 'each held batch still had its own messages')
  await until(() => a.stats().peers[0]!.queuedBytes === 0, 10_000, 'acknowledged once settled')
  t.same(errors, ['boom: batch handler failed'], 'a throw is reported like a handler’s')
})

t.test('onBatch checks its arguments', async (t) => {
  const [, b] = await keyedPair(t, 'batch')
  const r = b as unknown as { onBatch(route: unknown, fn: unknown): unknown }
  t.throws(() => r.onBatch(7, () => 0), { code: 'INVALID_ARGUMENT', parameter: 'route' })
  t.throws(() => r.onBatch('', () => 0), { code: 'INVALID_ARGUMENT', parameter: 'route' })
  t.throws(() => r.onBatch('r', 'not a function'), { code: 'INVALID_ARGUMENT', parameter: 'handler' })
  await b.close({ timeoutMs: 0 })
  t.throws(() => b.onBatch('r', () => 0), { code: 'CLOSED' })
})
