// Payloads of 16 KiB and up are sent by reference: the engine reads them
// after the call returns (at the end of the tick, on an io thread, again
// after a reconnect). A careless caller transfers the buffer to a worker,
// transfers it with ArrayBuffer.prototype.transfer, or shrinks the
// resizable ArrayBuffer under it, right after the send. Before, the flush
// threw "bad external payload" in a microtask (the process died) or the
// engine read memory that was no longer the message's. Now the buffer is
// marked untransferable (transfers copy it or throw DataCloneError) and a
// view of a resizable buffer is copied at send: the peer gets exactly the
// bytes that were sent. Smaller payloads are copied at send and left alone.
// The same holds for a client's large request bodies (before, a body
// transferred right after client.call misframed the stream: the call hung
// until its timeout).
import { MessageChannel, markAsUntransferable } from 'node:worker_threads'

import t from 'tap'

import type { Replica } from 'nexres-rpc'

import { connectClient, holdAndEcho, startServer } from './client-support.js'
import { type Tap, hex, plainReplicas, until } from './helpers.js'

const BIG = 32 * 1024

/** A resizable ArrayBuffer (ES2024; the test files compile against ES2022's lib). */
type Resizable = ArrayBuffer & { resize(byteLength: number): void }
const ResizableBuffer = ArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => Resizable

function pattern(n: number, seed: number): Uint8Array {
  const u = new Uint8Array(n)
  for (let i = 0; i < n; i++) u[i] = (i * 31 + seed) & 0xff
  return u
}

/** Tries to take `u`'s memory away by postMessage with a transfer list: false when the buffer was detached. */
function transferAway(t: Tap, u: Uint8Array, what: string): boolean {
  const { port1, port2 } = new MessageChannel()
  try {
    port1.postMessage(u, [u.buffer as ArrayBuffer])
  } catch (err) {
    t.equal((err as Error).name, 'DataCloneError', `${what}: postMessage refused the transfer (DataCloneError)`)
  } finally {
    port1.close()
    port2.close()
  }
  return u.buffer.byteLength > 0
}

t.test('a 32 KiB payload transferred, cloned with transfer or resized away right after send still arrives whole', async (t) => {
  const [a, b] = (await plainReplicas(t, 2, 'by-reference')) as [Replica, Replica]
  const got: string[] = []
  b.on('v', (m) => got.push(hex(m.payload)))
  let downs = 0
  a.events.on('peer-down', () => downs++)
  const want: string[] = []

  const posted = pattern(BIG, 1)
  want.push(hex(posted))
  t.equal(a.send(2, 'v', posted), true, 'sent by reference')
  t.ok(transferAway(t, posted, 'postMessage in the same tick'), 'the buffer was not detached by postMessage')
  t.equal(posted.length, BIG, 'and still has its bytes')

  const cloned = pattern(BIG, 2)
  want.push(hex(cloned))
  a.broadcast('v', cloned)
  try {
    structuredClone(cloned, { transfer: [cloned.buffer as ArrayBuffer] })
  } catch (err) {
    t.equal((err as Error).name, 'DataCloneError', 'structuredClone refused the transfer')
  }
  t.equal(cloned.buffer.byteLength, BIG, 'structuredClone did not detach it')

  const moved = pattern(BIG, 3)
  want.push(hex(moved))
  a.sendMany(2, 'v', [moved])
  const transfer = (ArrayBuffer.prototype as { transfer?: (this: ArrayBuffer, n?: number) => ArrayBuffer }).transfer
  if (typeof transfer === 'function') {
    // Older Node versions let transfer() detach a buffer marked untransferable (docs/API.md says so).
    const probe = new ArrayBuffer(8)
    markAsUntransferable(probe)
    let blocked = true
    try {
      transfer.call(probe)
      blocked = false
    } catch {}
    if (blocked) t.throws(() => transfer.call(moved.buffer as ArrayBuffer, 10), TypeError, 'ArrayBuffer.prototype.transfer is refused')
    else t.comment(`node ${process.version} lets ArrayBuffer.prototype.transfer detach a buffer marked untransferable: not checked here (docs/API.md says so)`)
  }
  t.equal(moved.buffer.byteLength, BIG, 'still attached')

  const rab = new ResizableBuffer(BIG, { maxByteLength: 2 * BIG })
  const fixed = new Uint8Array(rab, 0, BIG)
  fixed.set(pattern(BIG, 4))
  want.push(hex(fixed))
  a.send(2, 'v', fixed)
  const tracking = new Uint8Array(rab)
  want.push(hex(tracking))
  const queued = a.sendAsync(2, 'v', tracking) // queued at once: the queue is below the mark
  rab.resize(100) // both views shrink (the fixed one goes out of bounds) in the tick they were sent
  await queued

  const shared = new Uint8Array(new SharedArrayBuffer(BIG))
  shared.set(pattern(BIG, 5))
  want.push(hex(shared))
  a.send(2, 'v', shared)

  // After the flush (the engine holds the payload until it is acknowledged).
  const later = pattern(BIG, 6)
  want.push(hex(later))
  a.send(2, 'v', later)
  await new Promise((r) => setImmediate(r))
  t.ok(transferAway(t, later, 'postMessage after the flush'), 'not detached after the flush either')

  await until(() => got.length >= want.length, 10_000, 'every message delivered')
  t.same(got.map((h) => h.length / 2), want.map((h) => h.length / 2), 'sizes as sent')
  t.ok(got.every((h, i) => h === want[i]), 'every byte as sent, in order')
  t.equal(downs, 0, 'no link closed')
})

t.test('small payloads are copied at send: their buffers stay the caller’s to transfer', async (t) => {
  const [a, b] = (await plainReplicas(t, 2, 'by-reference-small')) as [Replica, Replica]
  const got: string[] = []
  b.on('v', (m) => got.push(hex(m.payload)))
  const small = pattern(1024, 7)
  const want = hex(small)
  a.send(2, 'v', small)
  t.notOk(transferAway(t, small, 'a 1 KiB payload'), 'its buffer was transferred (detached) as usual')
  await until(() => got.length === 1, 10_000, 'delivered')
  t.equal(got[0], want, 'the bytes as they were at send')
})

t.test('a reply of 32 KiB transferred right after ctx.reply reaches the client whole', async (t) => {
  const server = await startServer(t)
  server.replica.handle('big', (req, ctx) => {
    const body = pattern(BIG, req[0]!)
    ctx.reply(body)
    transferAway(t, body, 'reply')
    t.equal(body.buffer.byteLength, BIG, 'the reply buffer was not detached')
  })
  const c = await connectClient(t, { ...server.endpoint })
  for (let i = 0; i < 4; i++) t.equal(hex(await c.call('big', Uint8Array.of(i))), hex(pattern(BIG, i)), `reply ${i} whole`)
})

t.test('a 32 KiB request body transferred or resized right after client.call reaches the handler whole', async (t) => {
  const { c } = await holdAndEcho(t)
  const body = pattern(BIG, 9)
  const want = hex(body)
  const call = c.call('echo', body)
  t.ok(transferAway(t, body, 'request body'), 'the request body was not detached')
  t.equal(hex(await call), want, 'echoed whole')
  const rab = new ResizableBuffer(BIG, { maxByteLength: BIG })
  const view = new Uint8Array(rab)
  view.set(pattern(BIG, 10))
  const want2 = hex(view)
  const call2 = c.call('echo', view)
  rab.resize(10)
  t.equal(hex(await call2), want2, 'a resizable body shrunk after the call: echoed as it was')
})
