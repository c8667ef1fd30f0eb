// Client calls that end before their reply: timeoutMs (TIMEOUT, a late
// reply dropped) and AbortSignal (ABORTED, before or while in flight).

import t from 'tap'

import { Client } from 'nexres-rpc'

import { type CodedError, sleep, utf8, within, expectReject, connectClient, holdAndEcho, observed } from './client-support.js'
import { until, timeBound } from './helpers.js'

t.test('timeouts: TIMEOUT after timeoutMs, a late reply is dropped', async (t) => {
  const { endpoint, held, c } = await holdAndEcho(t)
  let disconnects = 0
  c.events.on('disconnect', () => disconnects++)

  const t0 = Date.now()
  const e = await expectReject(t, c.call('hold', 'x', { timeoutMs: 100 }), { code: 'TIMEOUT' }, 5000, 'call with timeoutMs 100')
  const elapsed = Date.now() - t0
  t.ok(e instanceof Error)
  t.ok(elapsed >= 95 && elapsed < timeBound(2000), `rejected after about 100 ms (${elapsed} ms)`)
  t.equal(c.inFlight, 0, 'no longer in flight')

  await until(() => held.length === 1, 5000, 'the held request')
  held[0]!.reply('too late')
  await sleep(50)
  t.equal(utf8(await within(c.call('echo', 'next'), 5000, 'echo after a late reply')), 'next', 'the late reply is ignored; the next call gets its own')

  // many at once
  const batch = Array.from({ length: 50 }, (_, i) => c.call('hold', `b${i}`, { timeoutMs: 100 + i }))
  const outs = await within(Promise.allSettled(batch), 5000, '50 timing out calls')
  t.equal(outs.filter((o) => o.status === 'rejected' && (o.reason as CodedError).code === 'TIMEOUT').length, 50, '50 calls time out')
  await until(() => held.length === 51, 5000, '51 held requests')
  for (const ctx of held) ctx.reply('late')
  await sleep(50)

  // the client's default timeoutMs
  const c2 = await connectClient(t, { ...endpoint, timeoutMs: 150 })
  const t1 = Date.now()
  await expectReject(t, c2.call('hold', 'd'), { code: 'TIMEOUT' }, 5000, 'call under the client default timeoutMs 150')
  t.ok(Date.now() - t1 >= 140, `not before the default timeout (${Date.now() - t1} ms)`)

  t.equal(utf8(await within(c.call('echo', 'still'), 5000, 'echo')), 'still')
  t.equal(disconnects, 0, 'timeouts and late replies never cost the connection')

  // replies to a client that has gone are dropped by the server
  const c3 = await within(Client.connect(endpoint), 5000, 'connect')
  t.teardown(() => c3.close())
  const base = held.length
  const gone = Array.from({ length: 20 }, (_, i) => observed(c3.call('hold', `g${i}`)))
  await until(() => held.length === base + 20, 5000, '20 more held requests')
  const goneCtx = held.slice(base)
  t.match(goneCtx[0]!.client.address, /^127\.0\.0\.1:\d+$/, 'address while connected')
  await c3.close()
  const closedOutcomes = await within(Promise.allSettled(gone), 5000, 'calls of the closed client')
  t.ok(
    closedOutcomes.every((o) => o.status === 'rejected' && (o.reason as CodedError).code === 'CLOSED'),
    'calls in flight reject with CLOSED when the client closes',
  )
  await until(() => goneCtx[0]!.client.address === '', 5000, "ctx.client.address to become '' once the connection is gone")
  for (const ctx of goneCtx) ctx.reply('to nobody')
  await sleep(50)
  t.equal(utf8(await within(c.call('echo', 'unharmed'), 5000, 'echo')), 'unharmed', 'the server keeps serving after replying to a gone client')
})

t.test('abort: a pending call rejects with ABORTED; an already-aborted signal rejects at once', async (t) => {
  const { held, c } = await holdAndEcho(t)

  const ac = new AbortController()
  const p = c.call('hold', 'a', { signal: ac.signal })
  await until(() => held.length === 1, 5000, 'the request to reach the server')
  const reason = new Error('user gave up')
  ac.abort(reason)
  const e = await expectReject(t, p, { code: 'ABORTED' }, 2000, 'aborted call')
  t.equal(e?.cause, reason, 'the abort reason is the cause')
  t.equal(c.inFlight, 0, 'no longer in flight')
  held[0]!.reply('after abort') // dropped by the client
  await sleep(30)
  t.equal(utf8(await within(c.call('echo', 'ok'), 5000, 'echo')), 'ok', 'the reply to the aborted call is dropped; the next call gets its own')

  // already aborted: rejects before any I/O, nothing is sent
  const before = held.length
  const pre = c.call('hold', 'never sent', { signal: AbortSignal.abort() })
  const first = await Promise.race([
    pre.then(
      () => 'resolved',
      (err: CodedError) => err.code,
    ),
    new Promise((r) => setImmediate(() => r('still pending after setImmediate'))),
  ])
  t.equal(first, 'ABORTED', 'an already-aborted signal rejects at once')
  await sleep(50)
  t.equal(held.length, before, 'the request was never sent')

  // aborting after the reply changes nothing
  const ac2 = new AbortController()
  t.equal(utf8(await within(c.call('echo', 'done', { signal: ac2.signal }), 5000, 'echo')), 'done')
  ac2.abort()
  t.equal(c.inFlight, 0)
})
