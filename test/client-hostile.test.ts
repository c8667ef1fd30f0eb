// Raw hostile clients on the client port: wrong magic, a replica HELLO,
// junk frames, DATA frames, a request with a sender, a 2 GiB header, silent
// and partial handshakes, idle and trickling connections: each is refused
// with its reason and closed, and honest clients go on being served.

import t from 'tap'

import * as wire from '../lib/wire.js'

import { Client, type RequestContext, routeId } from 'nexres-rpc'

import { sleep, utf8, within, expectReject, startServer, connectClient, RawClient, frame, rawHello, TYPE_HELLO, KIND_REQUEST, REJECT } from './client-support.js'
import { until } from './helpers.js'
import { KIND_DATA } from './wire-peer.js'

t.test('raw hostile clients on the client port', async (t) => {
  t.test('garbage instead of a handshake -> refused and closed; clients are still served', async (t) => {
    const { replica, endpoint } = await startServer(t)
    replica.handle('echo', (req) => req)
    const before = await connectClient(t, endpoint)
    t.equal(utf8(await within(before.call('echo', '1'), 5000, 'echo')), '1')
    const garbage = Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n'.padEnd(64, 'x'))
    const hostile = await Promise.all(Array.from({ length: 10 }, () => RawClient.open(t, endpoint.port)))
    for (const h of hostile) h.write(garbage)
    const codes = await Promise.all(hostile.map((h) => h.refusal(8000)))
    t.same(codes, Array(10).fill(REJECT.BAD_MAGIC), 'each refused with BAD_MAGIC and closed')
    t.equal(utf8(await within(before.call('echo', '2'), 5000, 'echo')), '2', 'a client connected before is still served')
    const after = await connectClient(t, endpoint)
    t.equal(utf8(await within(after.call('echo', '3'), 5000, 'echo')), '3', 'a new client is served')
    t.equal(replica.stats().rejectsByReason.BAD_MAGIC, 10, '10 BAD_MAGIC counted')
  })

  t.test('a replica HELLO on the client port -> BAD_FRAME', async (t) => {
    const { replica, endpoint } = await startServer(t)
    replica.handle('echo', (req) => req)
    const h = await RawClient.open(t, endpoint.port)
    h.write(rawHello(TYPE_HELLO))
    t.equal(await h.refusal(8000), REJECT.BAD_FRAME, 'BAD_FRAME')
    const c = await connectClient(t, endpoint)
    t.equal(utf8(await within(c.call('echo', 'x'), 5000, 'echo')), 'x')
  })

  t.test('garbage after a valid handshake -> BAD_FRAME; an oversize header -> REQUEST_TOO_LARGE', async (t) => {
    const { replica, endpoint } = await startServer(t, { maxRequestBytes: 1024 })
    replica.handle('echo', (req) => req)
    const c = await connectClient(t, endpoint)
    const h1 = await RawClient.open(t, endpoint.port)
    await h1.handshake()
    const junk = Buffer.alloc(48, 0xee)
    junk.writeUInt32LE(8, 0) // a small length, then junk where kind, flags and ids go
    h1.write(junk)
    t.equal(await h1.refusal(8000), REJECT.BAD_FRAME, 'junk bytes as a frame: BAD_FRAME')
    const h2 = await RawClient.open(t, endpoint.port)
    await h2.handshake()
    h2.write(frame(KIND_DATA, routeId('echo'), 1, Buffer.from('x')))
    t.equal(await h2.refusal(8000), REJECT.BAD_FRAME, 'a DATA frame on a client connection: BAD_FRAME')
    const h3 = await RawClient.open(t, endpoint.port)
    await h3.handshake()
    const flagged = frame(KIND_REQUEST, routeId('echo'), 1, Buffer.from('x'))
    flagged[wire.OFFSET_FLAGS] = 0x01 // flags are not defined for REQUEST (the sender field is the call's timeout)
    h3.write(flagged)
    t.equal(await h3.refusal(8000), REJECT.BAD_FRAME, 'a REQUEST with flags: BAD_FRAME')
    const h4 = await RawClient.open(t, endpoint.port)
    await h4.handshake()
    const header = frame(KIND_REQUEST, routeId('echo'), 1, new Uint8Array(0))
    header.writeUInt32LE(0x7fffffff, 0) // claims 2 GiB, sends no body
    h4.write(header)
    t.equal(await h4.refusal(8000), REJECT.REQUEST_TOO_LARGE, 'a header claiming 2 GiB: REQUEST_TOO_LARGE')
    t.equal(utf8(await within(c.call('echo', 'fine'), 5000, 'echo')), 'fine', 'the honest client is still served')
  })

  t.test('maxClientConnections 2: a third connection is closed at accept, admitted once one closes', async (t) => {
    const { replica, endpoint } = await startServer(t, { maxClientConnections: 2 })
    replica.handle('echo', (req) => req)
    const c1 = await connectClient(t, endpoint)
    const c2 = await connectClient(t, endpoint)
    await expectReject(t, Client.connect({ ...endpoint, connectTimeoutMs: 2000 }), { code: 'CONNECTION_LOST' }, 10_000, 'a third client')
    t.ok((replica.stats().rejectsByReason.TOO_MANY_CONNECTIONS ?? 0) >= 1, 'TOO_MANY_CONNECTIONS counted')
    t.equal(utf8(await within(c1.call('echo', 'a'), 5000, 'echo')), 'a', 'the admitted clients are served')
    await c2.close()
    let c3: Client | undefined
    const end = Date.now() + 5000
    while (c3 === undefined && Date.now() < end) {
      c3 = await Client.connect({ ...endpoint, connectTimeoutMs: 2000 }).catch(() => undefined)
      if (c3 === undefined) await sleep(20)
    }
    if (c3 === undefined) {
      t.fail('no room for a new client within 5 s after one closed')
      return
    }
    const admitted = c3
    t.teardown(() => admitted.close())
    t.equal(utf8(await within(admitted.call('echo', 'b'), 5000, 'echo')), 'b', 'a new client is admitted once one closed')
  })

  t.test('a connection that sends nothing -> closed after handshakeTimeoutMs', async (t) => {
    const { replica, endpoint } = await startServer(t, { handshakeTimeoutMs: 300, clientIdleTimeoutMs: 300 })
    replica.handle('echo', (req) => req)
    const t0 = Date.now()
    const silent = await RawClient.open(t, endpoint.port)
    const partial = await RawClient.open(t, endpoint.port)
    partial.write(rawHello().subarray(0, 10))
    t.equal(await silent.refusal(8000), REJECT.HANDSHAKE_TIMEOUT, 'silent: HANDSHAKE_TIMEOUT')
    t.equal(await partial.refusal(8000), REJECT.HANDSHAKE_TIMEOUT, 'a partial HELLO: HANDSHAKE_TIMEOUT')
    const elapsed = Date.now() - t0
    t.ok(elapsed >= 250, `not before the deadline (${elapsed} ms)`)
  })

  t.test('a client that completes the handshake and then idles -> closed after clientIdleTimeoutMs', async (t) => {
    const { replica, endpoint } = await startServer(t, { handshakeTimeoutMs: 5000, clientIdleTimeoutMs: 300 })
    replica.handle('echo', (req) => req)
    const held: RequestContext[] = []
    replica.handle('hold', (_req, ctx) => {
      held.push(ctx)
    })
    const t0 = Date.now()
    const idle = await RawClient.open(t, endpoint.port)
    await idle.handshake()
    const trickle = await RawClient.open(t, endpoint.port)
    await trickle.handshake()
    const req = frame(KIND_REQUEST, routeId('echo'), 1, Buffer.from('slowly'))
    let sent = 0
    const dripper = setInterval(() => {
      if (sent < req.length && !trickle.closed) trickle.write(req.subarray(sent, ++sent))
    }, 40)
    t.teardown(() => clearInterval(dripper))
    t.equal(await idle.refusal(8000), REJECT.IDLE_TIMEOUT, 'idle after the handshake: IDLE_TIMEOUT')
    t.ok(Date.now() - t0 >= 250, `not before the idle timeout (${Date.now() - t0} ms)`)
    t.equal(await trickle.refusal(8000), REJECT.IDLE_TIMEOUT, 'a frame trickled byte by byte: IDLE_TIMEOUT')
    clearInterval(dripper)

    // a library client with a call in flight longer than the idle timeout is not cut off
    const c = await connectClient(t, endpoint)
    const p = c.call('hold', 'long')
    await until(() => held.length === 1, 5000, 'the held request')
    await sleep(900)
    held[0]!.reply('answered after 900 ms')
    t.equal(utf8(await within(p, 5000, 'the long call')), 'answered after 900 ms', 'a connection with a call in flight is not idle')
    // an idle library client is closed by the server and reconnects on its next call
    await until(() => !c.connected, 5000, 'the idle library client to be closed')
    t.equal(utf8(await within(c.call('echo', 'back'), 5000, 'echo after an idle close')), 'back', 'it reconnects on the next call')
  })
})
