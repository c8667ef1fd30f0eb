// Client-side and server-side bounds on calls: maxInFlight with whenFull
// 'reject' and 'wait' (a waiting call still honours its signal and
// deadline), 1,000 concurrent calls on one connection, and request sizes
// (the server's maxRequestBytes announced in CLIENT_WELCOME, the client's
// own limit, both refused without I/O).

import t from 'tap'

import { type RequestContext } from 'nexres-rpc'

import { type CodedError, sleep, utf8, settleWithin, within, expectReject, startServer, connectClient, holdAndEcho, observed } from './client-support.js'
import { until, timeBound } from './helpers.js'

t.test("a call waiting for room (maxInFlight reached, whenFull 'wait') still honours its signal and timeoutMs", async (t) => {
  const { held, c } = await holdAndEcho(t, { maxInFlight: 1 })
  const blocker = observed(c.call('hold', 'blocker'))
  await until(() => held.length === 1, 5000, 'the blocking request')

  const ac = new AbortController()
  const queuedAborted = observed(c.call('echo', 'queued, aborted', { signal: ac.signal }))
  await sleep(20)
  const t0 = Date.now()
  ac.abort()
  await expectReject(t, queuedAborted, { code: 'ABORTED' }, 1000, 'abort of a call waiting for room')
  t.ok(Date.now() - t0 < timeBound(1000), `the abort took effect promptly (${Date.now() - t0} ms)`)

  const t1 = Date.now()
  const queuedTimed = observed(c.call('echo', 'queued, timeoutMs 100', { timeoutMs: 100 }))
  await expectReject(t, queuedTimed, { code: 'TIMEOUT' }, 1500, 'timeoutMs of a call waiting for room')
  t.ok(Date.now() - t1 < timeBound(1500), `timed out promptly (${Date.now() - t1} ms)`)

  // a plain call queued behind them must go out as soon as there is room
  const queuedPlain = observed(c.call('echo', 'queued, plain'))
  await sleep(20)
  held[0]!.reply('released')
  t.equal(utf8(await within(blocker, 5000, 'the blocking call')), 'released')
  const o = await settleWithin(queuedPlain, 5000)
  t.equal(o.state, 'fulfilled', `the plain queued call completes once there is room (${o.state})`)
  if (o.state === 'fulfilled') t.equal(utf8(o.value), 'queued, plain')
  await sleep(50)
  t.equal(held.length, 1, 'the aborted and timed-out calls were never sent')
  t.equal(c.inFlight, 0, 'nothing left in flight')
})

t.test("oversize requests: the server's maxRequestBytes (announced in CLIENT_WELCOME) and the client's own limit reject without I/O", async (t) => {
  const { replica, endpoint } = await startServer(t, { maxRequestBytes: 64 * 1024 })
  let handled = 0
  replica.handle('echo', (req) => {
    handled++
    return req
  })

  t.test("above the server limit: the client knows it from CLIENT_WELCOME and rejects that call alone, without I/O", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxRequestBytes: 1024 * 1024, reconnect: { minMs: 10, maxMs: 100 } })
    const events: string[] = []
    c.events.on('connect', () => events.push('connect'))
    c.events.on('disconnect', () => events.push('disconnect'))
    t.equal(c.limits.maxRequestBytes, 64 * 1024, "the server's 64 KiB, below the 1 MiB given")
    t.equal(utf8(await within(c.call('echo', 'small'), 5000, 'echo')), 'small')
    const before = handled
    const big = Buffer.alloc(100 * 1024, 7)
    await expectReject(t, c.call('echo', big), { code: 'REQUEST_TOO_LARGE' }, 10_000, '100 KiB request to a server with maxRequestBytes 64 KiB')
    t.equal(handled, before, 'the handler never saw it')
    t.equal(replica.stats().rejectsByReason.REQUEST_TOO_LARGE ?? 0, 0, 'the server refused nothing')
    const atLimit = Buffer.alloc(64 * 1024, 9)
    const r = await within(c.call('echo', atLimit), 10_000, 'a 64 KiB request after the refusal')
    t.equal(Buffer.compare(r, atLimit), 0, 'a request of exactly maxRequestBytes goes through')
    t.same(events, [], 'the connection was kept')
  })

  t.test("above the client's own maxRequestBytes: REQUEST_TOO_LARGE, nothing sent", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxRequestBytes: 1000 })
    let disconnects = 0
    c.events.on('disconnect', () => disconnects++)
    const before = handled
    const bytes = Buffer.alloc(1001, 1)
    const first = await Promise.race([
      c.call('echo', bytes).then(
        () => 'resolved',
        (err: CodedError) => err.code,
      ),
      new Promise((r) => setImmediate(() => r('still pending after setImmediate'))),
    ])
    t.equal(first, 'REQUEST_TOO_LARGE', '1001 bytes with maxRequestBytes 1000')
    // the limit is in bytes: 600 two-byte characters are 1200 bytes
    await expectReject(t, c.call('echo', 'é'.repeat(600)), { code: 'REQUEST_TOO_LARGE' }, 1000, 'a 1200-byte string')
    await sleep(50)
    t.equal(handled, before, 'nothing reached the server')
    t.equal(c.inFlight, 0)
    const ok = Buffer.alloc(1000, 2)
    t.equal(Buffer.compare(await within(c.call('echo', ok), 5000, '1000 bytes'), ok), 0, 'exactly maxRequestBytes is sent')
    t.equal(disconnects, 0, 'the connection was never touched')
  })
})

t.test('1,000 concurrent calls on one connection; maxInFlight with whenFull reject and wait', async (t) => {
  const { replica, endpoint } = await startServer(t)
  // 'gather' answers nothing until 1,000 requests are outstanding at once
  const gathered: [Uint8Array, RequestContext][] = []
  replica.handle('gather', (req, ctx) => {
    gathered.push([req, ctx])
    if (gathered.length === 1000) for (const [r, cx] of gathered) cx.reply(r)
  })
  const held: RequestContext[] = []
  replica.handle('hold', (_req, ctx) => {
    held.push(ctx)
  })
  let outstanding = 0
  let maxOutstanding = 0
  replica.handle('slow', (req, ctx) => {
    outstanding++
    maxOutstanding = Math.max(maxOutstanding, outstanding)
    setTimeout(() => {
      outstanding--
      ctx.reply(req)
    }, 2)
  })
  replica.handle('echo', (req) => req)

  t.test('1,000 at once with maxInFlight 1000', async (t) => {
    const c = await connectClient(t, { ...endpoint, maxInFlight: 1000 })
    let disconnects = 0
    c.events.on('disconnect', () => disconnects++)
    const calls = Array.from({ length: 1000 }, (_, i) => c.call('gather', `g${i}`))
    t.equal(c.inFlight, 1000, '1000 in flight on the client')
    const o = await settleWithin(Promise.all(calls), 20_000)
    if (o.state !== 'fulfilled') {
      t.fail(`the 1000 calls did not complete (${o.state}); the server saw ${gathered.length} of them`)
      return
    }
    t.equal(gathered.length, 1000, 'all 1000 were outstanding at the server at the same time')
    t.equal(o.value.filter((r, i) => utf8(r) !== `g${i}`).length, 0, 'each reply matches its request')
    t.equal(disconnects, 0)
  })

  t.test("maxInFlight 10, whenFull 'reject': the 11th rejects with TOO_MANY_REQUESTS", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxInFlight: 10, whenFull: 'reject' })
    const ten = Array.from({ length: 10 }, (_, i) => observed(c.call('hold', `h${i}`)))
    t.equal(c.inFlight, 10)
    await expectReject(t, c.call('hold', 'eleventh'), { code: 'TOO_MANY_REQUESTS' }, 1000, 'the 11th call')
    await expectReject(t, c.call('echo', 'twelfth'), { code: 'TOO_MANY_REQUESTS' }, 1000, 'the 12th call')
    await until(() => held.length === 10, 5000, '10 held requests')
    await sleep(30)
    t.equal(held.length, 10, 'the refused calls never reached the server')
    for (const ctx of held) ctx.reply(`r:${ctx.requestId}`)
    const replies = await within(Promise.all(ten), 5000, 'the 10 held calls')
    t.equal(replies.length, 10)
    t.equal(utf8(await within(c.call('echo', 'room again'), 5000, 'echo')), 'room again', 'room again once replies came')
  })

  t.test("maxInFlight 10, whenFull 'wait' (default): 200 calls all complete, never more than 10 out", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxInFlight: 10 })
    let maxClient = 0
    const calls = Array.from({ length: 200 }, (_, i) => {
      const p = c.call('slow', `s${i}`)
      maxClient = Math.max(maxClient, c.inFlight)
      return p
    })
    const poll = setInterval(() => (maxClient = Math.max(maxClient, c.inFlight)), 1)
    t.teardown(() => clearInterval(poll))
    const replies = await within(Promise.all(calls), 20_000, '200 calls through 10 slots')
    clearInterval(poll)
    t.equal(replies.filter((r, i) => utf8(r) !== `s${i}`).length, 0, 'each reply matches its request')
    t.ok(maxClient <= 10, `client never had more than 10 in flight (${maxClient})`)
    t.ok(maxOutstanding <= 10, `server never saw more than 10 outstanding (${maxOutstanding})`)
    t.ok(maxOutstanding >= 2, `calls did overlap (${maxOutstanding})`)
  })
})
