// Payload views whose properties lie. A Uint8Array subclass (or a plain
// Uint8Array with an own `length` property) may say its `length` is more or
// less than its bytes; another view may say its `buffer`, `byteOffset` or
// `byteLength` are something else. Exactly the view's own bytes must go out,
// on every path: copied (small), by reference (16 KiB and up), signed, in
// replies and in client requests. A frame sized from the lie would carry
// stale bytes of the staging buffer (earlier messages, to any peer) or
// misframe the stream; a large one made the flush throw in a microtask.
import t from 'tap'

import { codecs } from 'nexres-rpc'

import { connectClient, startServer } from './client-support.js'
import { hex, keyedPair, plainReplicas, until } from './helpers.js'

const SECRET = Buffer.from('SECRET-'.repeat(16))

class LongBytes extends Uint8Array {
  override get length(): number {
    return super.length + 40
  }
}
class ShortBytes extends Uint8Array {
  override get length(): number {
    return 1
  }
}
/** Four 16-bit values in the middle of a buffer full of SECRET; it says it spans the whole buffer. */
class WideWords extends Uint16Array {
  override get byteOffset(): number {
    return 0
  }
  override get byteLength(): number {
    return this.buffer.byteLength
  }
}

/** Views with honest bytes and lying properties, and the bytes each must send. */
function liars(): Array<{ name: string; view: Uint8Array | ArrayBufferView; want: Buffer }> {
  const out: Array<{ name: string; view: Uint8Array | ArrayBufferView; want: Buffer }> = []
  const small = (name: string, v: Uint8Array): void => {
    for (let i = 0; i < v.byteLength; i++) v[i] = 0x41 + (i % 26)
    out.push({ name, view: v, want: Buffer.from(Buffer.from(v.buffer, v.byteOffset, v.byteLength)) })
  }
  small('a subclass whose length says 40 more', new LongBytes(4))
  small('a subclass whose length says 1', new ShortBytes(12))
  const own = new Uint8Array(6)
  Object.defineProperty(own, 'length', { get: () => 30 })
  small('a Uint8Array with an own length of 30', own)
  const big = new LongBytes(20 * 1024)
  big.fill(0x5a)
  out.push({ name: 'a 20 KiB subclass (sent by reference) whose length says 40 more', view: big, want: Buffer.alloc(20 * 1024, 0x5a) })
  const bigShort = new ShortBytes(24 * 1024)
  bigShort.fill(0x33)
  out.push({ name: 'a 24 KiB subclass whose length says 1', view: bigShort, want: Buffer.alloc(24 * 1024, 0x33) })
  const backing = Buffer.concat([SECRET, Buffer.from([1, 0, 2, 0, 3, 0, 4, 0]), SECRET])
  const ab = backing.buffer.slice(backing.byteOffset, backing.byteOffset + backing.length)
  out.push({ name: 'a Uint16Array subclass whose byteOffset and byteLength say the whole buffer', view: new WideWords(ab, SECRET.length, 4), want: Buffer.from([1, 0, 2, 0, 3, 0, 4, 0]) })
  const dv = new DataView(ab, SECRET.length, 8)
  Object.defineProperty(dv, 'byteLength', { value: ab.byteLength })
  Object.defineProperty(dv, 'byteOffset', { value: 0 })
  out.push({ name: 'a DataView with own byteOffset and byteLength over the whole buffer', view: dv, want: Buffer.from([1, 0, 2, 0, 3, 0, 4, 0]) })
  return out
}

t.test('send, broadcast, sendAsync and sendMany send exactly the bytes of views that lie about their size', async (t) => {
  const [a, b, c] = await plainReplicas(t, 3, 'lying-views')
  const got = new Map<number, string[]>([
    [2, []],
    [3, []],
  ])
  let downs = 0
  for (const r of [b!, c!]) {
    r.on('v', (m) => got.get(r.id)!.push(hex(m.payload)))
    r.events.on('reject', (e) => t.fail(`replica ${r.id} rejected a frame: ${e.code} ${e.message}`))
  }
  a!.events.on('peer-down', () => downs++)
  const want = new Map<number, string[]>([
    [2, []],
    [3, []],
  ])
  for (const l of liars()) {
    // Stale bytes in the staging buffer, right where a lying frame would reach.
    a!.send(2, 'pad', SECRET)
    a!.send(3, 'pad', SECRET)
    t.equal(a!.send(2, 'v', l.view), true, `send: ${l.name}`)
    want.get(2)!.push(hex(l.want))
    a!.broadcast('v', l.view)
    want.get(2)!.push(hex(l.want))
    want.get(3)!.push(hex(l.want))
    await a!.sendAsync(3, 'v', l.view)
    want.get(3)!.push(hex(l.want))
    a!.sendMany(2, 'v', [l.view, SECRET, l.view])
    want.get(2)!.push(hex(l.want), hex(SECRET), hex(l.want))
  }
  await until(() => got.get(2)!.length >= want.get(2)!.length && got.get(3)!.length >= want.get(3)!.length, 10_000, 'every message delivered')
  t.same(got.get(2), want.get(2), 'replica 2 got exactly the views’ bytes, in order')
  t.same(got.get(3), want.get(3), 'replica 3 got exactly the views’ bytes, in order')
  t.equal(downs, 0, 'no link closed')
})

t.test('signed sends (auth mac) sign and send exactly the view’s bytes', async (t) => {
  const [a, b] = await keyedPair(t, 'lying-views-signed')
  const got: string[] = []
  let signed = 0
  b.on('v', (m) => {
    got.push(hex(m.payload))
    if (m.signature !== undefined) signed++
  })
  const want: string[] = []
  for (const l of liars()) {
    a.send(2, 'pad', SECRET)
    a.send(2, 'v', l.view, { sign: true })
    want.push(hex(l.want))
  }
  await until(() => got.length >= want.length, 10_000, 'every signed message delivered')
  t.same(got, want, 'the receiver got exactly the views’ bytes')
  t.equal(signed, want.length, 'each one signed (a signature over other bytes would have closed the link)')
})

t.test('replies and client requests carry exactly the view’s bytes', async (t) => {
  const server = await startServer(t)
  const views = liars()
  // A handler returns (or ctx.reply sends) the view named by the request's first byte.
  server.replica.handle('return', (req) => views[req[0]!]!.view)
  server.replica.handle('ctx', (req, ctx) => {
    ctx.reply(views[req[0]!]!.view)
  })
  server.replica.handle('echo', (req) => req)
  const c = await connectClient(t, { ...server.endpoint })
  for (let i = 0; i < views.length; i++) {
    const l = views[i]!
    t.equal(hex(await c.call('return', Uint8Array.of(i))), hex(l.want), `handler returned ${l.name}`)
    t.equal(hex(await c.call('ctx', Uint8Array.of(i))), hex(l.want), `ctx.reply(${l.name})`)
    t.equal(hex(await c.call('echo', l.view)), hex(l.want), `client.call with ${l.name}`)
    t.equal(hex(codecs.raw.encode(l.view as Uint8Array)), hex(l.want), `codecs.raw.encode(${l.name})`)
  }
})

t.test('what only looks like a Uint8Array is refused with INVALID_ARGUMENT, nothing sent', async (t) => {
  const [a, b] = await plainReplicas(t, 2, 'lying-views-fake')
  const fake = Object.create(Uint8Array.prototype) as Uint8Array
  t.throws(() => a!.send(2, 'v', fake), { code: 'INVALID_ARGUMENT', parameter: 'payload' }, 'send')
  t.throws(() => a!.broadcast('v', fake), { code: 'INVALID_ARGUMENT', parameter: 'payload' }, 'broadcast')
  t.throws(() => a!.sendMany(2, 'v', [Buffer.from('ok'), fake]), { code: 'INVALID_ARGUMENT', parameter: 'payloads[1]' }, 'sendMany names the element')
  const got: string[] = []
  b!.on('v', (m) => got.push(Buffer.from(m.payload).toString()))
  a!.send(2, 'v', 'after')
  await until(() => got.length === 1, 10_000, 'the good send delivered')
  t.same(got, ['after'], 'only the good send arrived')
})
