// Cancellation and deadlines reach the server (issue 12 item 4), through the
// public API over real sockets: a call's timeout is the handler's
// ctx.deadline; ctx.signal fires when the client aborts, times out or
// disconnects (with the reason), and on the replica's own clock at the
// deadline; a reply after that is dropped quietly and never reaches another
// call; cancelled requests free their slots under maxClientInFlight (nothing
// leaks across thousands of aborted calls); with workers, CANCEL and the
// deadline reach a worker's handler too.
import t from 'tap'

import { type ReplicaOptions, type RequestContext, Replica } from 'nexres-rpc'

import { HOST, connectClient, expectReject, observed, sleep, startServer, utf8, within } from './client-support.js'
import { spawnFixture } from './child-helpers.js'
import { type Tap, freePorts, timeBound, until } from './helpers.js'

type Why = { code?: string } | undefined

/** A server whose 'wait' handler records each ctx and the reason its signal fired. */
async function waiting(t: Tap, options: Omit<ReplicaOptions, 'id' | 'cluster'> = {}) {
  const server = await startServer(t, options)
  const ctxs: RequestContext[] = []
  const reasons: (string | undefined)[] = []
  server.replica.handle('wait', (_req, ctx) => {
    ctxs.push(ctx)
    return new Promise<string>((resolve) => {
      ctx.signal.addEventListener('abort', () => {
        reasons.push((ctx.signal.reason as Why)?.code)
        resolve('too late') // dropped
      })
    })
  })
  server.replica.handle('echo', (req) => req)
  return { ...server, ctxs, reasons }
}

t.test("the call's timeout is the handler's ctx.deadline; no timeout, no deadline", async (t) => {
  const server = await startServer(t)
  const seen: (number | undefined)[] = []
  server.replica.handle('deadline', (_req, ctx) => {
    seen.push(ctx.deadline === undefined ? undefined : ctx.deadline - Date.now())
    return 'ok'
  })
  const c = await connectClient(t, { ...server.endpoint, timeoutMs: 60_000 })
  await c.call('deadline', '', { timeoutMs: 1234 })
  await c.call('deadline', '')
  t.ok(seen[0]! > 1234 - timeBound(200) && seen[0]! <= 1234, `timeoutMs 1234: deadline ${seen[0]} ms ahead`)
  t.ok(seen[1]! > 60_000 - timeBound(200) && seen[1]! <= 60_000, `the client's default timeoutMs travels too (${seen[1]} ms ahead)`)
})

t.test('aborting a call fires ctx.signal (ABORTED); the late reply is dropped, other calls unaffected', async (t) => {
  const server = await waiting(t)
  const c = await connectClient(t, server.endpoint)
  const ac = new AbortController()
  const call = observed(c.call('wait', 'x', { signal: ac.signal }))
  await until(() => server.ctxs.length === 1, timeBound(5000), 'the request reached its handler')
  t.equal(server.ctxs[0]!.signal.aborted, false, 'not aborted before the client aborts')
  ac.abort()
  await expectReject(t, call, { code: 'ABORTED' }, timeBound(5000), 'the aborted call')
  await until(() => server.reasons.length === 1, timeBound(5000), 'ctx.signal fired')
  t.equal(server.reasons[0], 'ABORTED', "the signal's reason is ABORTED (the client's CANCEL)")
  t.equal(server.ctxs[0]!.replied, true, 'ctx.replied: no reply is taken after the cancel')
  t.equal(server.ctxs[0]!.cancelled, true, 'ctx.cancelled')
  // Many calls after it: each gets its own reply, never the dropped one.
  const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => c.call('echo', `m${i}`)))
  t.same(replies.map(utf8), Array.from({ length: 200 }, (_, i) => `m${i}`), 'later calls get their own replies')
})

t.test('a timed-out call fires ctx.signal; so does the deadline on the replica', async (t) => {
  const server = await waiting(t)
  const c = await connectClient(t, server.endpoint)
  await expectReject(t, c.call('wait', 'x', { timeoutMs: 150 }), { code: 'TIMEOUT' }, timeBound(5000), 'the call')
  await until(() => server.reasons.length === 1, timeBound(5000), 'ctx.signal fired')
  t.ok(['TIMEOUT', 'ABORTED'].includes(server.reasons[0]!), `fired at the deadline or by the CANCEL (${server.reasons[0]})`)
  // A handler that looks at the signal after the deadline sees it fired at once.
  let late: boolean | undefined
  server.replica.handle('late-look', (_req, ctx) => {
    const spin = Date.now() + 80
    while (Date.now() < spin);
    late = ctx.signal.aborted
    return 'x'
  })
  await expectReject(t, c.call('late-look', '', { timeoutMs: 40 }), { code: 'TIMEOUT' }, timeBound(5000), 'a call slower than its timeout')
  t.equal(late, true, 'ctx.signal read after the deadline is already aborted')
})

t.test('a client that disconnects fires ctx.signal (CONNECTION_LOST) for every call it had open', async (t) => {
  const server = await waiting(t)
  const c = await connectClient(t, server.endpoint)
  const calls = Array.from({ length: 20 }, () => observed(c.call('wait', 'x')))
  await until(() => server.ctxs.length === 20, timeBound(5000), 'all 20 requests in handlers')
  await c.close()
  for (const p of calls) await expectReject(t, p, { code: 'CLOSED' }, timeBound(5000), 'a call of the closed client')
  await until(() => server.reasons.length === 20, timeBound(5000), () => `20 signals fired (${server.reasons.length})`)
  t.same([...new Set(server.reasons)], ['CONNECTION_LOST'], 'every reason is CONNECTION_LOST')
})

for (const mode of ['plain', 'seal'] as const) {
  t.test(`a client process killed with -9 (${mode}) fires ctx.signal (CONNECTION_LOST) for every call it had open`, async (t) => {
    const server = await waiting(t)
    const child = spawnFixture('hanging-client.mjs', [server.endpoint.host, String(server.endpoint.port), '25', mode], {})
    t.teardown(() => child.kill())
    await child.waitLine(/^open 25$/, timeBound(20_000), 'the client process opened its calls')
    await until(() => server.ctxs.length === 25, timeBound(10_000), () => `all 25 requests in handlers (${server.ctxs.length})`)
    t.equal(server.reasons.length, 0, 'no signal before the kill')
    child.proc.kill('SIGKILL')
    await until(() => server.reasons.length === 25, timeBound(10_000), () => `25 signals fired (${server.reasons.length})`)
    t.same([...new Set(server.reasons)], ['CONNECTION_LOST'], 'every reason is CONNECTION_LOST')
    // The replica goes on serving other clients.
    const c = await connectClient(t, server.endpoint)
    t.equal(utf8(await c.call('echo', 'after')), 'after', 'another client is served after the kill')
  })
}

t.test('thousands of cancelled calls free their slots: the connection keeps being served', async (t) => {
  const server = await waiting(t, { maxClientInFlight: 8 })
  const c = await connectClient(t, { ...server.endpoint, maxInFlight: 8 })
  for (let round = 0; round < 250; round++) {
    const ac = new AbortController()
    const calls = Array.from({ length: 8 }, () => observed(c.call('wait', 'x', { signal: ac.signal })))
    await until(() => server.ctxs.length === 8 * (round + 1), timeBound(5000), () => `round ${round}: 8 requests in handlers (${server.ctxs.length - 8 * round})`)
    ac.abort()
    await Promise.allSettled(calls)
  }
  t.equal(server.ctxs.length, 2000, '2000 calls reached handlers 8 at a time: each cancel freed its slot')
  await until(() => server.replica.stats().clients.every((s) => s.inFlight === 0), timeBound(5000), 'nothing left in flight on the replica')
  t.equal(utf8(await within(c.call('echo', 'after'), timeBound(5000), 'echo')), 'after', 'still served')
})

t.test('with workers, CANCEL and the deadline reach a worker handler', async (t) => {
  const [port] = await freePorts(1)
  const shared = new SharedArrayBuffer(64)
  const view = new Int32Array(shared)
  const replica = await Replica.start({
    auth: 'none',
    id: 1,
    cluster: { id: 'w-cancel', replicas: [{ id: 1, host: HOST, port: port!, clientPort: 0 }] },
    workers: 2,
    handlers: new URL('./fixtures/worker-handlers.mjs', import.meta.url),
    workerData: { shared },
  })
  t.teardown(() => replica.close({ timeoutMs: 0 }))
  const c = await connectClient(t, { host: HOST, port: replica.clientPort! })
  const ac = new AbortController()
  const aborted = Array.from({ length: 10 }, () => observed(c.call('until-cancelled', '', { signal: ac.signal })))
  await sleep(100)
  ac.abort()
  await Promise.allSettled(aborted)
  await until(() => Atomics.load(view, 12) === 10, timeBound(5000), () => `10 aborts seen by workers (${Atomics.load(view, 12)})`)
  const timedOut = Array.from({ length: 10 }, () => observed(c.call('until-cancelled', '', { timeoutMs: 100 })))
  await Promise.allSettled(timedOut)
  await until(() => Atomics.load(view, 12) + Atomics.load(view, 13) === 20, timeBound(5000), 'the timed-out ones fired too')
  t.pass(`workers saw ${Atomics.load(view, 12)} cancels and ${Atomics.load(view, 13)} deadlines`)
})
