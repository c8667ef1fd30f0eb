// User clients calling a replica's client port (docs/PROTOCOL.md §6) through
// the public API, over real sockets on 127.0.0.1: pipelining, calls of every
// size, deferred and error replies, unknown routes, the caller's identity.
// Deadlines and aborts: client-deadlines; bounds and sizes: client-limits;
// a server that dies and failover: client-failover; typed services:
// client-services; raw hostile sockets: client-hostile.

import t from 'tap'

import { Client, codecs, defineService, routeId } from 'nexres-rpc'

import { type CodedError, sleep, utf8, settleWithin, within, expectReject, startServer, connectClient, RawClient, frame, KIND_REQUEST, KIND_REPLY } from './client-support.js'
import { until } from './helpers.js'
import { FRAME_HEADER } from './wire-peer.js'

t.test('pipelined calls: 4 clients x 500 in flight, every reply matches its request', async (t) => {
  const { replica, endpoint } = await startServer(t)
  let handled = 0
  // reply = 'R' + the request reversed; answered at once, from a promise, or
  // later through ctx.reply, so replies come back out of order.
  replica.handle('transform', (req, ctx) => {
    const n = handled++
    const out = Buffer.allocUnsafe(req.length + 1)
    out[0] = 0x52
    for (let i = 0; i < req.length; i++) out[i + 1] = req[req.length - 1 - i]!
    if (n % 3 === 0) return out
    if (n % 3 === 1) return Promise.resolve().then(() => out)
    setTimeout(() => ctx.reply(out), n % 7)
    return undefined
  })
  const clients = await Promise.all(Array.from({ length: 4 }, () => connectClient(t, endpoint)))
  const N = 500
  const expected = (req: Buffer): Buffer => Buffer.concat([Buffer.from('R'), Buffer.from(req).reverse()])
  const runs = clients.map((c, ci) => {
    const calls: Promise<Uint8Array>[] = []
    const reqs: Buffer[] = []
    for (let i = 0; i < N; i++) {
      // distinct payloads, mostly small, some above the client's 16 KiB large-body threshold
      const size = i % 100 === 0 ? 20_000 + i : 12 + ((i * 37) % 300)
      const req = Buffer.alloc(size, `c${ci}/i${i};`)
      reqs.push(req)
      calls.push(c.call('transform', req))
    }
    t.equal(c.inFlight, N, `client ${ci}: ${N} calls in flight at once`)
    return Promise.all(calls).then((replies) => replies.filter((r, i) => Buffer.compare(r, expected(reqs[i]!)) !== 0).length)
  })
  const bad = await within(Promise.all(runs), 30_000, '2000 pipelined calls')
  t.same(bad, [0, 0, 0, 0], 'every reply is the answer to its own request')
  t.equal(handled, 4 * N, 'the server handled each request once')
  t.same(
    clients.map((c) => c.inFlight),
    [0, 0, 0, 0],
    'nothing left in flight',
  )
})

t.test('calls of every size, one after another and in bursts, over one connection', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('echo', (req) => req)
  replica.handle('empty', () => '')
  const c = await connectClient(t, endpoint)
  // around the client's 16 KiB large-body threshold and its 256 KiB staging buffer
  const sizes = [0, 1, 100, 1000, 4095, 4096, 5000, 8000, 12_000, 15_000, 16_383, 16_384, 20_000, 100_000, 1024 * 1024]
  const failures: string[] = []
  for (const size of sizes) {
    const rounds = size >= 100_000 ? 5 : 40
    for (let k = 0; k < rounds; k++) {
      const body = Buffer.alloc(size, (size + k) & 0xff)
      let p: Promise<Uint8Array>
      try {
        p = c.call('echo', body)
      } catch (err) {
        failures.push(`${size} bytes, call ${k + 1} in a row: call() threw synchronously: ${String(err)}`)
        break
      }
      const o = await settleWithin(p, 10_000)
      if (o.state !== 'fulfilled') {
        const e = o.state === 'rejected' ? (o.error as CodedError) : undefined
        failures.push(`${size} bytes, call ${k + 1} in a row: ${o.state} ${e?.code ?? ''} ${e?.message ?? ''}`)
        break
      }
      if (Buffer.compare(o.value, body) !== 0) {
        failures.push(`${size} bytes, call ${k + 1} in a row: wrong reply (${o.value.length} bytes)`)
        break
      }
    }
  }
  t.same(failures, [], 'sequential calls of every size are answered with their own bytes')

  // bursts: 40 calls of mixed sizes issued in one tick, ten times
  const burstFailures: string[] = []
  for (let round = 0; round < 10 && burstFailures.length === 0; round++) {
    const bodies = Array.from({ length: 40 }, (_, i) => Buffer.alloc(sizes[(i * 7 + round) % 13]!, (i + round) & 0xff))
    const calls: Promise<Uint8Array>[] = []
    for (const b of bodies) {
      try {
        calls.push(c.call('echo', b))
      } catch (err) {
        burstFailures.push(`round ${round}: call() threw synchronously: ${String(err)}`)
        break
      }
    }
    const outs = await within(Promise.allSettled(calls), 10_000, `burst ${round}`)
    outs.forEach((o, i) => {
      if (o.status === 'rejected') burstFailures.push(`round ${round}, call ${i}: ${(o.reason as CodedError).code} ${(o.reason as Error).message}`)
      else if (Buffer.compare(o.value, bodies[i]!) !== 0) burstFailures.push(`round ${round}, call ${i}: wrong reply`)
    })
  }
  t.same(burstFailures, [], 'bursts of mixed sizes are answered with their own bytes')

  const empty = await within(c.call('empty', 'x'), 5000, 'empty reply')
  t.equal(empty.length, 0, 'an empty reply arrives as zero bytes')
})

t.test('deferred replies: ctx.reply later, ctx.fail with a chosen code, one reply per request', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('later', (req, ctx) => {
    setTimeout(() => ctx.reply(`later:${utf8(req)}`), 30)
  })
  replica.handle('fail-now', (_req, ctx) => {
    ctx.fail('MY_CODE', 'msg')
    ctx.reply('ignored: after fail')
  })
  replica.handle('fail-later', (_req, ctx) => {
    setTimeout(() => ctx.fail('MY_CODE', 'failed later'), 30)
  })
  const repliedFlags: boolean[] = []
  replica.handle('twice', (_req, ctx) => {
    repliedFlags.push(ctx.replied)
    ctx.reply('first')
    repliedFlags.push(ctx.replied)
    ctx.reply('second')
    ctx.fail('NOPE', 'ignored')
    return 'returned, ignored'
  })
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)

  const t0 = Date.now()
  const r = await within(c.call('later', 'x1'), 5000, 'deferred call')
  const elapsed = Date.now() - t0
  t.equal(utf8(r), 'later:x1', 'the deferred reply arrives')
  t.ok(elapsed >= 28, `not before the handler replied (${elapsed} ms)`)

  // 20 deferred calls at once, each with its own reply
  const many = await within(
    Promise.all(Array.from({ length: 20 }, (_, i) => c.call('later', `m${i}`))),
    10_000,
    '20 deferred calls',
  )
  t.same(
    many.map(utf8),
    Array.from({ length: 20 }, (_, i) => `later:m${i}`),
    '20 concurrent deferred calls, each its own reply',
  )

  const e1 = await expectReject(t, c.call('fail-now', ''), { code: 'REMOTE_ERROR', remoteCode: 'MY_CODE', message: /msg/ }, 5000, 'ctx.fail')
  t.ok(e1 instanceof Error, 'an Error')
  await expectReject(t, c.call('fail-later', ''), { code: 'REMOTE_ERROR', remoteCode: 'MY_CODE', message: /failed later/ }, 5000, 'deferred ctx.fail')

  t.equal(utf8(await within(c.call('twice', ''), 5000, 'twice')), 'first', 'only the first reply counts')
  t.same(repliedFlags, [false, true], 'ctx.replied turns true on the first reply')
  t.equal(utf8(await within(c.call('echo', 'after'), 5000, 'echo')), 'after', 'the next call gets its own reply, not a stray one')
  t.ok(c.connected, 'still connected')
})

t.test('a handler that throws (sync or async) -> HANDLER_ERROR with its message; the server keeps serving', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('throw-sync', () => {
    throw new Error('sync boom')
  })
  replica.handle('throw-async', async () => {
    await sleep(2)
    throw new Error('async boom')
  })
  replica.handle('throw-coded', () => {
    throw Object.assign(new Error('no such key'), { code: 'NOT_FOUND' })
  })
  replica.handle('throw-coded-async', async () => {
    await sleep(1)
    throw Object.assign(new Error('over quota'), { code: 'QUOTA_EXCEEDED' })
  })
  replica.handle('throw-lowercase-code', () => {
    throw Object.assign(new Error('lower-case code'), { code: 'not-a-stable-code' })
  })
  replica.handle('throw-string', () => {
    throw 'a plain string'
  })
  replica.handle('bad-return', () => 42)
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)

  await expectReject(t, c.call('bad-return', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /number/ }, 5000, 'a handler returning a number')
  await expectReject(t, c.call('throw-sync', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /sync boom/ }, 5000, 'sync throw')
  t.equal(utf8(await within(c.call('echo', 'one'), 5000, 'echo')), 'one', 'served after a sync throw')
  await expectReject(t, c.call('throw-async', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /async boom/ }, 5000, 'async throw')
  t.equal(utf8(await within(c.call('echo', 'two'), 5000, 'echo')), 'two', 'served after an async throw')
  await expectReject(t, c.call('throw-coded', ''), { code: 'REMOTE_ERROR', remoteCode: 'NOT_FOUND', message: /no such key/ }, 5000, 'error with a code')
  await expectReject(t, c.call('throw-coded-async', ''), { code: 'REMOTE_ERROR', remoteCode: 'QUOTA_EXCEEDED', message: /over quota/ }, 5000, 'async error with a code')
  await expectReject(t, c.call('throw-lowercase-code', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /lower-case code/ }, 5000, 'a code that is not upper snake case')
  await expectReject(t, c.call('throw-string', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /a plain string/ }, 5000, 'a thrown string')

  // throws interleaved with good calls, pipelined
  const mixed = Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? c.call('echo', `e${i}`) : c.call(i % 4 === 1 ? 'throw-sync' : 'throw-async', '')))
  const outcomes = await within(Promise.allSettled(mixed), 10_000, 'mixed calls')
  const wrong = outcomes.filter((o, i) =>
    i % 2 === 0
      ? o.status !== 'fulfilled' || utf8(o.value) !== `e${i}`
      : o.status !== 'rejected' || (o.reason as CodedError).remoteCode !== 'HANDLER_ERROR',
  )
  t.equal(wrong.length, 0, 'pipelined throws and good calls each get their own answer')
  t.equal(replica.stats().handlerErrors, 6 + 30, 'every throw counted in stats().handlerErrors')
  t.ok(c.connected, 'the connection stays up')
})

t.test('unknown route -> NO_SUCH_ROUTE, the connection stays usable', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)
  let disconnects = 0
  c.events.on('disconnect', () => disconnects++)
  await expectReject(t, c.call('no.such.route', 'x'), { code: 'REMOTE_ERROR', remoteCode: 'NO_SUCH_ROUTE' }, 5000, 'unknown route')
  const Missing = defineService('missing', { m: { request: codecs.text, response: codecs.text } })
  await expectReject(t, c.service(Missing).m('x'), { code: 'REMOTE_ERROR', remoteCode: 'NO_SUCH_ROUTE' }, 5000, 'a service nobody serves')
  t.equal(utf8(await within(c.call('echo', 'still here'), 5000, 'echo')), 'still here')
  t.equal(disconnects, 0, 'no disconnect')
})

t.test('ctx.client: address 127.0.0.1:<port> and a positive connection id, different per client', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('whoami', (_req, ctx) =>
    JSON.stringify({ connectionId: ctx.client.connectionId, address: ctx.client.address, requestId: ctx.requestId, route: ctx.route }),
  )
  interface Who {
    connectionId: number
    address: string
    requestId: number
    route: string
  }
  const c1 = await connectClient(t, endpoint)
  const c2 = await connectClient(t, endpoint)
  const ask = async (c: Client): Promise<Who> => JSON.parse(utf8(await within(c.call('whoami', ''), 5000, 'whoami'))) as Who
  const [a1, a2, b1, b2] = [await ask(c1), await ask(c1), await ask(c2), await ask(c2)]
  for (const w of [a1, a2, b1, b2]) {
    t.match(w.address, /^127\.0\.0\.1:\d+$/, `address ${w.address}`)
    const port = Number(w.address.split(':')[1])
    t.ok(port >= 1 && port <= 65535, 'a real port')
    t.ok(Number.isInteger(w.connectionId) && w.connectionId > 0, `connection id ${w.connectionId} is a positive integer`)
    t.ok(Number.isInteger(w.requestId) && w.requestId > 0, `request id ${w.requestId}`)
    t.equal(w.route, 'whoami')
  }
  t.equal(a1.connectionId, a2.connectionId, 'same connection id for calls of one client')
  t.equal(a1.address, a2.address)
  t.not(a1.connectionId, b1.connectionId, 'different connection ids for two clients')
  t.not(a1.address, b1.address, 'different addresses for two clients')
  t.not(a1.requestId, a2.requestId, 'request ids differ between calls')
  t.equal(b1.connectionId, b2.connectionId)

  // a raw client knows its own port and the connection id from CLIENT_WELCOME
  const raw = await RawClient.open(t, endpoint.port)
  const welcomedId = await raw.handshake()
  raw.write(frame(KIND_REQUEST, routeId('whoami'), 77, new Uint8Array(0)))
  await until(() => raw.rx.length >= FRAME_HEADER && raw.rx.length >= FRAME_HEADER + raw.rx.readUInt32LE(0), 5000, 'the REPLY')
  t.equal(raw.rx[12], KIND_REPLY, 'a REPLY frame')
  t.equal(raw.rx.readUInt32LE(16), 77, 'for request 77')
  const w = JSON.parse(raw.rx.subarray(FRAME_HEADER, FRAME_HEADER + raw.rx.readUInt32LE(0)).toString()) as Who
  t.equal(w.address, `127.0.0.1:${raw.localPort}`, "the address is the client's own host:port")
  t.equal(w.connectionId, welcomedId, 'the connection id is the one CLIENT_WELCOME named')
  t.equal(w.requestId, 77, 'ctx.requestId is the id the client chose')
})
