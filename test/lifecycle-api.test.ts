// Lifecycle loose ends of the TypeScript API (issue 10 item 7): waits end
// with CLOSED when the replica closes, registering after close is refused,
// unknown option keys and a stray privateKey are CONFIG_INVALID naming the
// key, and a restarted worker whose handlers module fails to load is
// retried with a growing delay (not every 100 ms forever).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import t from 'tap'

import { Client, ClosedError, ConfigError, Replica, type ReplicaOptions, codecs, defineService, generateKeyPair } from 'nexres-rpc'

import { loopbackCluster, until } from './helpers.js'

/** How `p` settled: its value or error, or 'pending' if it had not by the time a setImmediate ran. */
async function settledNow(p: Promise<unknown>): Promise<{ state: 'fulfilled' | 'rejected' | 'pending'; value?: unknown }> {
  const marker = Symbol('pending')
  const out = await Promise.race([
    p.then(
      (value) => ({ state: 'fulfilled' as const, value }),
      (value: unknown) => ({ state: 'rejected' as const, value }),
    ),
    new Promise<typeof marker>((r) => setImmediate(() => r(marker))),
  ])
  return out === marker ? { state: 'pending' } : out
}

t.test('waitForPeers: a pending wait rejects CLOSED when close() starts; a wait after close() rejects CLOSED at once', async (t) => {
  const cluster = await loopbackCluster(2, 'wait-close')
  // Replica 2 never starts: the wait can only end by close() (or its timeout).
  const a = await Replica.start({ auth: 'none', id: 1, cluster })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const order: string[] = []
  const waiting = a.waitForPeers([2], { timeoutMs: 5000 }).then(
    () => order.push('wait resolved'),
    (err: unknown) => {
      order.push(`wait rejected ${(err as { code?: string }).code}`)
      return err
    },
  )
  const closing = a.close({ timeoutMs: 0 }).then(() => order.push('close resolved'))
  const err = await waiting
  await closing
  t.ok(err instanceof ClosedError, `the pending wait rejected with ClosedError (got ${String(err)})`)
  t.same(order, ['wait rejected CLOSED', 'close resolved'], 'it rejected as close() started, before close() finished')

  const after = await settledNow(a.waitForPeers([2], { timeoutMs: 5000 }))
  t.equal(after.state, 'rejected', 'a wait after close() settles at once')
  t.ok(after.value instanceof ClosedError && (after.value as ClosedError).code === 'CLOSED', `with CLOSED (got ${String(after.value)})`)
  const defaults = await settledNow(a.waitForPeers())
  t.ok(defaults.state === 'rejected' && defaults.value instanceof ClosedError, 'the same with the default peers and timeout')
})

t.test('on, handle and serve after close() (or while it runs) throw CLOSED', async (t) => {
  const cluster = await loopbackCluster(2, 'register-close')
  cluster.replicas[0]!.clientPort = 0
  const a = await Replica.start({ auth: 'none', id: 1, cluster })
  const Svc = defineService('late', { m: { request: codecs.text, response: codecs.text } })
  const closing = a.close({ timeoutMs: 0 })
  t.throws(() => a.on('late', () => undefined), { name: 'ClosedError', code: 'CLOSED' }, 'on() while closing')
  t.throws(() => a.handle('late', () => 'x'), { name: 'ClosedError', code: 'CLOSED' }, 'handle() while closing')
  await closing
  t.throws(() => a.on('late', () => undefined), { name: 'ClosedError', code: 'CLOSED' }, 'on() after close')
  t.throws(() => a.handle('late', () => 'x'), { name: 'ClosedError', code: 'CLOSED' }, 'handle() after close')
  t.throws(() => a.serve(Svc, { m: (s) => s }), { name: 'ClosedError', code: 'CLOSED' }, 'serve() after close')
  t.doesNotThrow(() => a.off('late'), 'off() after close is harmless')
})

t.test('unknown option keys and a privateKey with auth none are CONFIG_INVALID naming the key', async (t) => {
  const cluster = await loopbackCluster(2, 'unknown-keys')
  const refused = async (opts: Record<string, unknown>, field: string, hint: RegExp, what: string): Promise<void> => {
    const err = await Replica.start(opts as unknown as ReplicaOptions).then(
      (r) => r.close({ timeoutMs: 0 }).then(() => undefined),
      (e: unknown) => e,
    )
    const e = err as ConfigError
    t.ok(e instanceof ConfigError && e.code === 'CONFIG_INVALID' && e.field === field && hint.test(e.message), `${what}: CONFIG_INVALID on ${field} (${String(err)})`)
  }
  await refused({ auth: 'none', id: 1, cluster, highWatermark: 1024 }, 'highWatermark', /did you mean highWaterMark\?/, 'highWatermark (a typo)')
  await refused({ auth: 'none', id: 1, cluster, maxqueuebytes: 1024 }, 'maxqueuebytes', /did you mean maxQueueBytes\?/, 'maxqueuebytes (case)')
  await refused({ auth: 'none', id: 1, cluster, colour: 'blue' }, 'colour', /known options: id, cluster/, 'a key like no other: the known keys are listed')
  await refused({ auth: 'none', id: 1, cluster, reconnect: { maxMS: 100 } }, 'reconnect.maxMS', /did you mean maxMs\?/, 'reconnect.maxMS')
  await refused({ auth: 'none', id: 1, cluster, privateKey: generateKeyPair().privateKey }, 'privateKey', /auth is 'none'/, "a privateKey with auth: 'none'")
  await refused({ id: 1, cluster, privateKey: generateKeyPair().privateKey }, 'privateKey', /no cluster\.replicas\[\]\.publicKey/, 'a privateKey with auth omitted and no public keys')
  // Known options are still accepted (undefined values included); the
  // cluster's entries may carry keys of their own (they are not checked).
  const annotated = { ...cluster, replicas: cluster.replicas.map((r) => ({ ...r, name: `replica ${r.id}` })) }
  const r = await Replica.start({ auth: 'none', id: 1, cluster: annotated, highWaterMark: 1024 * 1024, maxQueueBytes: 8 * 1024 * 1024, reconnect: { minMs: 10, maxMs: 100 }, privateKey: undefined })
  await r.close({ timeoutMs: 0 })
  t.pass('known keys accepted')
})

t.test('a restarted worker whose handlers module fails to load is retried with a doubling delay, then recovers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nexres-flaky-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const failFlag = join(dir, 'fail')
  const cluster = await loopbackCluster(1, 'worker-backoff')
  cluster.replicas[0]!.clientPort = 0
  const handlers = new URL('./fixtures/worker-flaky.mjs', import.meta.url)
  const r = await Replica.start({ auth: 'none', id: 1, cluster, workers: 1, handlers, workerData: { failFlag } })
  t.teardown(() => r.close({ timeoutMs: 200 }))
  const failures: { at: number; message: string }[] = []
  r.events.on('error', (err) => {
    const message = err instanceof Error ? err.message : String(err)
    if (message.includes('fails on purpose')) failures.push({ at: performance.now(), message })
  })
  const c = await Client.connect({ host: '127.0.0.1', port: r.clientPort!, timeoutMs: 20_000 })
  t.teardown(() => c.close())
  t.equal(Buffer.from(await c.call('ping', '')).toString(), 'pong', 'the worker serves')

  // Each attempt to start the worker shows as stats().workerRestarts going
  // up: note when (polled every ms; a late poll only makes a delay look longer).
  const spawns: number[] = []
  let counted = r.stats().workerRestarts
  const poll = setInterval(() => {
    const n = r.stats().workerRestarts
    for (; counted < n; counted++) spawns.push(performance.now())
  }, 1)
  t.teardown(() => clearInterval(poll))

  // From now on the module fails to load; the worker crashes and is restarted.
  writeFileSync(failFlag, '')
  await c.call('crash', '')
  await until(() => failures.length >= 4, 30_000, 'four failed restarts')
  await until(() => spawns.length >= 4, 1000, 'the polls to see every attempt')
  t.equal(r.stats().workerRestarts, failures.length, `every attempt counted in stats().workerRestarts (${failures.length})`)
  // The next attempt after failed startup k waits 100 * 2^k ms (200, 400,
  // 800): measured from the failure's 'error' event to the attempt. Lower
  // bounds only. Before the fix every restart came 100 ms after the failure.
  for (let k = 1; k < 4; k++) {
    const delay = spawns[k]! - failures[k - 1]!.at
    const least = 100 * 2 ** k
    t.ok(delay >= least * 0.9, `attempt ${k + 1} started ${delay.toFixed(0)} ms after failure ${k} (at least ${least} ms)`)
  }
  t.match(failures[0]!.message, /\(1 in a row\).*next attempt in 200 ms/, 'the first failure is reported with its retry delay')
  t.match(failures[3]!.message, /\(4 in a row\).*next attempt in 1600 ms/, 'the fourth with a doubled delay')

  // The module loads again: the next attempt succeeds; calls are served.
  rmSync(failFlag)
  t.equal(Buffer.from(await c.call('ping', '', { timeoutMs: 20_000 })).toString(), 'pong', 'the worker came back and serves the call that waited')
  const seen = failures.length
  t.equal(seen, 4, 'no further failure once the module loads')

  // A successful setup resets the delay: the next failure is "1 in a row" again.
  writeFileSync(failFlag, '')
  await c.call('crash', '')
  await until(() => failures.length > seen, 20_000, 'the next failed restart')
  t.match(failures[seen]!.message, /\(1 in a row\).*next attempt in 200 ms/, 'the delay started over after a successful setup')
  rmSync(failFlag)
})
