// workers: N — handlers in worker threads, all taking from the same native
// input queue: every worker gets work, replies and sends work from each,
// per-peer order holds with ordering 'peer' (and nothing is lost or left
// unacknowledged with 'none'), a worker that dies is restarted and what it
// held is handled by the others, bad configuration is refused by name.
import { fileURLToPath } from 'node:url'

import t from 'tap'

import { Client, type ClusterConfig, ConfigError, RemoteError, Replica, type ReplicaOptions } from 'nexres-rpc'

import { type Tap, loopbackCluster, until } from './helpers.js'

const handlers = new URL('./fixtures/worker-handlers.mjs', import.meta.url)
const broken = new URL('./fixtures/worker-broken.mjs', import.meta.url)

/** Shared counters of worker-handlers.mjs. */
function counters(): { shared: SharedArrayBuffer; view: Int32Array } {
  const shared = new SharedArrayBuffer(64)
  return { shared, view: new Int32Array(shared) }
}

/** Replica 1 with workers, replica 2 plain; both connected. */
async function pair(
  t: Tap,
  name: string,
  extra: Partial<ReplicaOptions>,
): Promise<{ a: Replica; b: Replica; cluster: ClusterConfig }> {
  const cluster = await loopbackCluster(2, name)
  cluster.replicas[0]!.clientPort = 0
  const a = await Replica.start({ auth: 'none', id: 1, cluster, workers: 2, handlers, ...extra })
  t.teardown(() => a.close({ timeoutMs: 200 }))
  const b = await Replica.start({ auth: 'none', id: 2, cluster })
  t.teardown(() => b.close({ timeoutMs: 200 }))
  await Promise.all([a.waitForPeers(), b.waitForPeers()])
  return { a, b, cluster }
}

/** Sends 'seq' messages numbered 1..n from b to a, pacing on backpressure. */
async function sendNumbered(b: Replica, route: string, n: number): Promise<void> {
  const body = new Uint8Array(4)
  const dv = new DataView(body.buffer)
  for (let i = 1; i <= n; i++) {
    dv.setUint32(0, i, true)
    if (!b.send(1, route, body)) await new Promise<void>((r) => b.events.once('drain', () => r()))
    if (i % 2000 === 0) await new Promise((r) => setImmediate(r))
  }
}

t.test('configuration: workers need a handlers module; bad values are refused by name', async (t) => {
  const cluster = await loopbackCluster(2, 'workers-config')
  const bad = async (opts: Partial<ReplicaOptions>, field: string, what: string): Promise<void> => {
    await t.rejects(Replica.start({ auth: 'none', id: 1, cluster, ...opts }), { code: 'CONFIG_INVALID', field }, what)
  }
  await bad({ workers: 2 }, 'handlers', 'workers without handlers')
  await bad({ workers: 2, handlers: 'fixtures/worker-handlers.mjs' }, 'handlers', 'a relative path')
  await bad({ workers: 2, handlers: fileURLToPath(handlers) + '.missing' }, 'handlers', 'a missing file')
  await bad({ workers: -1, handlers }, 'workers', 'negative workers')
  await bad({ workers: 1.5, handlers }, 'workers', 'fractional workers')
  await bad({ handlers }, 'handlers', 'handlers without workers')
  await bad({ workers: 2, handlers, ordering: 'random' as 'none' }, 'ordering', 'an unknown ordering')
  // A module whose setup throws: start() rejects, naming the module, and
  // leaves nothing bound (the same port can be used right after).
  const err = await Replica.start({ auth: 'none', id: 1, cluster, workers: 2, handlers: broken }).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(err instanceof ConfigError, 'setup failure is a ConfigError')
  t.match((err as Error).message, /setup refuses on purpose/, 'with the module’s own message')
  const r = await Replica.start({ auth: 'none', id: 1, cluster, workers: 1, handlers })
  t.throws(() => r.on('x', () => undefined), { code: 'CONFIG_INVALID', field: 'workers' }, 'on() on the main thread is refused with workers')
  t.throws(() => r.handle('x', () => 'y'), { code: 'CONFIG_INVALID', field: 'workers' }, 'handle() too')
  await r.close()
})

t.test("ordering 'peer': one peer's messages are handled in order, one at a time; answers sent from workers all arrive", async (t) => {
  const { shared, view } = counters()
  const { a, b } = await pair(t, 'workers-order', { workerData: { shared } })
  let seen = 0
  b.on('seen', () => seen++)
  const N = 30_000
  await sendNumbered(b, 'seq', N)
  await until(() => seen === N, 30_000, `all ${N} answers (have ${seen})`)
  t.equal(view[0], N, 'the last number handled is the last sent')
  t.equal(view[1], 0, 'no message was handled before the one sent before it')
  t.equal(view[3], 1, 'never two handlers of the same peer at once')
  t.equal(view[4]! + view[5]!, N, 'every message handled exactly once')
  // Everything handled was acknowledged: b's queue empties.
  await until(() => b.stats().peers[0]!.queuedBytes === 0, 5000, "b's queue to empty")
  await until(() => a.stats().peers[0]!.queuedBytes === 0, 5000, "a's queue (the workers' answers) to empty")
  t.pass('both queues empty: every frame acknowledged')
})

t.test("ordering 'none': messages spread over every worker; nothing lost, everything acknowledged", async (t) => {
  const { shared, view } = counters()
  const { a, b } = await pair(t, 'workers-none', { workerData: { shared }, ordering: 'none' })
  let seen = 0
  b.on('seen', () => seen++)
  const N = 30_000
  await sendNumbered(b, 'spread', N)
  await until(() => seen === N, 30_000, `all ${N} answers (have ${seen})`)
  t.equal(view[4]! + view[5]!, N, 'every message handled exactly once')
  t.ok(view[4]! > 0 && view[5]! > 0, `both workers handled messages (${view[4]}, ${view[5]})`)
  await until(() => b.stats().peers[0]!.queuedBytes === 0, 5000, "b's queue to empty")
  t.equal(a.stats().unrouted, 0, 'nothing unrouted')
})

t.test('requests from many client connections reach every worker; replies, errors and broadcasts from workers', async (t) => {
  const { shared, view } = counters()
  const { a, b } = await pair(t, 'workers-rpc', { workerData: { shared } })
  const clients = await Promise.all(Array.from({ length: 8 }, () => Client.connect({ host: '127.0.0.1', port: a.clientPort! })))
  t.teardown(() => Promise.all(clients.map((c) => c.close())))
  const answers = await Promise.all(
    clients.flatMap((c) => Array.from({ length: 40 }, () => c.call('who', new Uint8Array(0)).then((r) => Buffer.from(r).toString()))),
  )
  t.equal(answers.length, 320, 'every call answered')
  t.same([...new Set(answers)].sort(), ['0', '1'], 'both workers answered calls')
  t.equal(view[4]! + view[5]!, 320, 'each call handled once')

  // SHA-256 ×50 computed in a worker.
  const sha = await clients[0]!.call('sha', new Uint8Array([1, 2, 3]))
  t.equal(sha.length, 32, 'a CPU-heavy handler replied')

  // A handler error: the client gets the code, the main thread the event.
  const errors: { err: unknown; route: string }[] = []
  a.events.on('error', (err, info) => errors.push({ err, route: info.route }))
  const e = await clients[1]!.call('throws', new Uint8Array(0)).then(
    () => undefined,
    (x: unknown) => x,
  )
  t.ok(e instanceof RemoteError && e.remoteCode === 'NOPE', 'the client got the handler’s code')

  // A broadcast from a worker reaches the peer.
  const got: string[] = []
  b.on('from-worker', (m) => got.push(Buffer.from(m.payload).toString()))
  t.equal(Buffer.from(await clients[2]!.call('bcast', 'hello from a worker')).toString(), 'ok')
  await until(() => got.length === 1, 5000, 'the broadcast')
  t.same(got, ['hello from a worker'], 'broadcast from a worker delivered')
  t.ok(a.lastMessageId >= 1, `lastMessageId counts what workers sent (${a.lastMessageId})`)
})

t.test('a worker that dies is restarted; calls go on being served', async (t) => {
  const { shared, view } = counters()
  const { a } = await pair(t, 'workers-crash', { workerData: { shared } })
  const errors: Error[] = []
  a.events.on('error', (err) => errors.push(err as Error))
  const c = await Client.connect({ host: '127.0.0.1', port: a.clientPort! })
  t.teardown(() => c.close())
  t.equal(Buffer.from(await c.call('crash', new Uint8Array(0))).toString(), 'bye', 'the crashing call itself was answered')
  await until(() => errors.some((e) => /worker crash on purpose/.test(e.message)), 5000, 'the crash reported')
  // Calls keep being answered while the worker restarts and after.
  const before = view[4]! + view[5]!
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.connect({ host: '127.0.0.1', port: a.clientPort! })))
  t.teardown(() => Promise.all(clients.map((x) => x.close())))
  const answers = new Set<string>()
  const deadline = Date.now() + 10_000
  while (answers.size < 2 && Date.now() < deadline) {
    const batch = await Promise.all(clients.flatMap((x) => [1, 2, 3].map(() => x.call('who', new Uint8Array(0)))))
    for (const r of batch) answers.add(Buffer.from(r).toString())
  }
  t.same([...answers].sort(), ['0', '1'], 'both workers answer again (the dead one was restarted)')
  t.ok(view[4]! + view[5]! > before, 'handled after the crash')
})
