// A client that pipelines requests but never reads the replies cannot make
// the replica buffer replies without bound: once its unread replies pass the
// backlog cap the replica stops reading its requests (TCP backpressure), and
// other clients are served meanwhile. Regression test for the unbounded
// reply queue found in review.
import net from 'node:net'

import t from 'tap'

import { Client, Replica, type RequestContext } from 'nexres-rpc'

import { freePorts, until } from './helpers.js'

t.test('a client that never reads its replies is throttled, others are served', async (t) => {
  const [port, clientPort] = await freePorts(2)
  const cluster = { id: 'backlog', replicas: [{ id: 1, host: '127.0.0.1', port: port!, clientPort: clientPort! }] }
  const r = await Replica.start({ auth: 'none', id: 1, cluster, maxClientInFlight: 64 })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  let handled = 0
  const reply = Buffer.alloc(64 * 1024, 1)
  r.handle('big', () => {
    handled++
    return reply
  })
  r.handle('echo', (req) => req)

  const sock = net.connect(r.clientPort!, '127.0.0.1')
  t.teardown(() => sock.destroy())
  await new Promise((res) => sock.once('connect', res))
  sock.pause() // never read
  const hello = Buffer.alloc(32)
  hello.write('NXRP', 0, 'latin1')
  hello.writeUInt16LE(1, 4)
  hello.writeUInt16LE(3, 6)
  sock.write(hello)
  const route = Buffer.from('big')
  let h = 0x811c9dc5
  for (const b of route) h = Math.imul(h ^ b, 0x01000193) >>> 0
  // Write small requests until the kernel stops taking them (bounded).
  let written = 0
  const deadline = Date.now() + 8000
  for (let id = 1; id <= 200_000 && Date.now() < deadline; id++) {
    const f = Buffer.alloc(24)
    f.writeUInt32LE(h, 4)
    f[12] = 6
    f.writeUInt32LE(id, 16)
    written++
    if (!sock.write(f)) {
      const drained = await Promise.race([
        new Promise<boolean>((res) => sock.once('drain', () => res(true))),
        new Promise<boolean>((res) => setTimeout(() => res(false), 1000)),
      ])
      if (!drained) break
    }
  }
  const handledAtStall = handled
  t.ok(handledAtStall < 4000, `the replica stopped taking requests after ${handledAtStall} replies of 64 KiB (${written} requests written)`)
  await new Promise((res) => setTimeout(res, 300))
  t.ok(handled - handledAtStall < 200, 'and stays stopped while the replies are not read')

  const c = await Client.connect({ host: '127.0.0.1', port: r.clientPort! })
  t.teardown(() => c.close())
  t.equal(Buffer.from(await c.call('echo', 'still served', { timeoutMs: 5000 })).toString(), 'still served', 'another client is served')

  // Per-connection stats show which connection is throttled and why.
  const stats = r.stats().clients
  t.equal(stats.length, 2, 'stats list both open client connections')
  const local = `127.0.0.1:${sock.localPort}`
  const slow = stats.find((x) => x.address === local)
  const fast = stats.find((x) => x.address !== local)
  t.ok(slow !== undefined && fast !== undefined, 'each connection is listed with its address')
  t.ok(slow!.paused, 'the one not reading its replies is paused')
  t.ok(slow!.replyBacklogBytes > 4 * 1024 * 1024, `with its reply backlog (${slow!.replyBacklogBytes} bytes)`)
  t.equal(slow!.replies, handled, 'its replies counted')
  t.ok(slow!.requests >= handled && slow!.requests - slow!.replies === slow!.inFlight, 'requests = replies + in flight')
  t.same(
    { requests: fast!.requests, replies: fast!.replies, inFlight: fast!.inFlight, paused: fast!.paused, backlog: fast!.replyBacklogBytes },
    { requests: 1, replies: 1, inFlight: 0, paused: false, backlog: 0 },
    'the other connection: one request, one reply, nothing pending',
  )
  t.equal(fast!.bytesIn, 24 + 'still served'.length, 'request bytes counted (header + body)')

  // Reading the replies lets the throttled client go on.
  let got = 0
  sock.on('data', (d: Buffer) => (got += d.length))
  sock.resume()
  await until(() => handled > handledAtStall + 100, 10_000, 'requests taken again once replies are read')
  t.ok(got > 0)
})

t.test('maxClientInFlight is exact: one write of 5,000 pipelined requests hands on only that many', async (t) => {
  const [port, clientPort] = await freePorts(2)
  const cluster = { id: 'inflight', replicas: [{ id: 1, host: '127.0.0.1', port: port!, clientPort: clientPort! }] }
  const r = await Replica.start({ auth: 'none', id: 1, cluster, maxClientInFlight: 64 })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  const held: RequestContext[] = []
  let maxHeld = 0
  r.handle('hold', (_req, ctx) => {
    held.push(ctx) // answered later
    maxHeld = Math.max(maxHeld, held.length)
  })
  const sock = net.connect(r.clientPort!, '127.0.0.1')
  t.teardown(() => sock.destroy())
  await new Promise((res) => sock.once('connect', res))
  const replies: Buffer[] = []
  sock.on('data', (d: Buffer) => replies.push(d))
  const hello = Buffer.alloc(32)
  hello.write('NXRP', 0, 'latin1')
  hello.writeUInt16LE(1, 4)
  hello.writeUInt16LE(3, 6)
  let h = 0x811c9dc5
  for (const b of Buffer.from('hold')) h = Math.imul(h ^ b, 0x01000193) >>> 0
  const frames = Buffer.alloc(24 * 5000)
  for (let i = 0; i < 5000; i++) {
    frames.writeUInt32LE(h, i * 24 + 4)
    frames[i * 24 + 12] = 6
    frames.writeUInt32LE(i + 1, i * 24 + 16)
  }
  sock.write(Buffer.concat([hello, frames]))
  await until(() => held.length >= 64, 5000, '64 requests handed on')
  await new Promise((res) => setTimeout(res, 200))
  t.equal(held.length, 64, 'exactly maxClientInFlight requests handed on')
  t.equal(r.stats().clients[0]!.inFlight, 64, 'stats agree')
  // Answering them lets the next ones through, in order.
  for (const ctx of held.splice(0)) ctx.reply('ok')
  await until(() => held.length >= 64, 5000, 'the next 64')
  t.equal(held[0]!.requestId, 65, 'the next request is number 65')
  const deadline = Date.now() + 15_000
  while (r.stats().clients[0]!.replies < 5000 && Date.now() < deadline) {
    for (const ctx of held.splice(0)) ctx.reply('ok')
    await new Promise((res) => setTimeout(res, 2))
  }
  t.ok(maxHeld <= 64, `never more than 64 unanswered at once (${maxHeld})`)
  t.equal(r.stats().clients[0]!.requests, 5000, 'every request handled, none lost')
})
