// A handler that returns a promise holds its message until the promise
// settles: the sender's queue is acknowledged only then, the payload stays
// valid after an await, and a peer flooding an async route is slowed down
// by TCP (maxPendingHandlers) instead of growing the receiver's memory,
// while another peer's messages keep arriving.
import t from 'tap'

import { type ClusterConfig, Replica } from 'nexres-rpc'

import { type Child, spawnFixture } from './child-helpers.js'
import { type Tap, countHonest, loopbackCluster, until, timeBound } from './helpers.js'

const MiB = 1024 * 1024

/** Replicas 1 and 2 of `cluster`, connected, closed at teardown. */
async function pair(t: Tap, cluster: ClusterConfig): Promise<[Replica, Replica]> {
  const [a, b] = await Promise.all([
    Replica.start({ auth: 'none', id: 1, cluster }),
    Replica.start({ auth: 'none', id: 2, cluster }),
  ])
  t.teardown(() => Promise.all([a.close({ timeoutMs: 0 }), b.close({ timeoutMs: 0 })]))
  await Promise.all([a.waitForPeers(), b.waitForPeers()])
  return [a, b]
}

t.test('a message is acknowledged once its handler promise settles', async (t) => {
  const cluster = await loopbackCluster(2, 'async-ack')
  const [a, b] = await pair(t, cluster)
  const resolvers: (() => void)[] = []
  const seen: string[] = []
  b.on('slow', (msg) => {
    return new Promise<void>((resolve) => {
      resolvers.push(() => {
        // Read after other messages arrived: still this message's bytes.
        seen.push(Buffer.from(msg.payload).toString())
        resolve()
      })
    })
  })
  let syncCount = 0
  b.on('fast', () => {
    syncCount++
  })
  a.send(2, 'slow', 'first')
  a.flush()
  await until(() => resolvers.length === 1, 5000, 'the slow handler ran')
  // Messages after it are handled meanwhile (sync handler) ...
  for (let i = 0; i < 100; i++) a.send(2, 'fast', Buffer.alloc(2000, i))
  a.flush()
  await until(() => syncCount === 100, 5000, 'later messages handled')
  // ... yet nothing is acknowledged while the first one's promise is pending.
  await new Promise((r) => setTimeout(r, 200))
  const queued = a.stats().peers.find((p) => p.id === 2)!.queuedBytes
  t.ok(queued > 0, `sender's queue not acknowledged while the handler is pending (${queued} bytes)`)
  resolvers[0]!()
  await until(() => a.stats().peers.find((p) => p.id === 2)!.queuedBytes === 0, 5000, 'acknowledged after settle')
  t.same(seen, ['first'], 'payload read after other messages arrived is intact')
  t.pass('acknowledged once the promise settled')
})

t.test('a rejected handler promise also releases its message', async (t) => {
  const cluster = await loopbackCluster(2, 'async-reject')
  const [a, b] = await pair(t, cluster)
  const errors: unknown[] = []
  b.events.on('error', (err) => errors.push(err))
  b.on('bad', async () => {
    await new Promise((r) => setTimeout(r, 5))
    throw new Error('boom')
  })
  for (let i = 0; i < 10; i++) a.send(2, 'bad', 'x')
  await until(() => errors.length === 10, 5000, 'ten handler errors')
  await until(() => a.stats().peers.find((p) => p.id === 2)!.queuedBytes === 0, 5000, 'acknowledged after rejection')
  t.equal(b.stats().handlerErrors, 10, 'handlerErrors counts the rejections')
})

t.test('a thenable that is not a Promise settles its message once', async (t) => {
  const cluster = await loopbackCluster(2, 'async-thenable')
  const [a, b] = await pair(t, cluster)
  const queued = (): number => a.stats().peers.find((p) => p.id === 2)!.queuedBytes
  const errors: unknown[] = []
  b.events.on('error', (err) => errors.push(err))
  const ran = { now: 0, throws: 0, twice: 0 }
  // Already resolved: calls back inside then(), before onBatch has returned.
  b.on('now', () => {
    ran.now++
    return { then: (ok: () => void) => ok() }
  })
  // then() itself throws: a rejection, reported once.
  b.on('throws', () => {
    ran.throws++
    return {
      then: () => {
        throw new Error('then() throws')
      },
    }
  })
  let release: (() => void) | undefined
  b.on('slow', () => new Promise<void>((resolve) => (release = resolve)))
  // Calls back twice: must not count for the slow handler of its run.
  b.on('twice', () => {
    ran.twice++
    return {
      then: (ok: () => void) => {
        setTimeout(() => {
          ok()
          ok()
        }, 1)
      },
    }
  })
  for (let i = 0; i < 20; i++) a.send(2, 'now', 'x')
  for (let i = 0; i < 20; i++) a.send(2, 'throws', 'y')
  await until(() => ran.now === 20 && ran.throws === 20, 5000, 'handlers ran')
  await until(() => queued() === 0, 5000, 'acknowledged once the thenables settled')
  t.equal(errors.length, 20, 'each throwing then() reported once')

  a.send(2, 'slow', 'z')
  for (let i = 0; i < 5; i++) a.send(2, 'twice', 'w')
  a.flush()
  await until(() => ran.twice === 5 && release !== undefined, 5000, 'slow and twice ran')
  await new Promise((r) => setTimeout(r, 100))
  t.ok(queued() > 0, `not acknowledged while the slow handler is pending (${queued()} bytes queued)`)
  release!()
  await until(() => queued() === 0, 5000, 'acknowledged after the slow handler settled')
  t.pass('acknowledged once every handler settled')
})

t.test('flooding an async route keeps memory bounded and other peers served', async (t) => {
  const FLOOD_MS = 10_000
  const cluster = await loopbackCluster(3, 'async-flood')
  const receiver = await Replica.start({ auth: 'none', id: 3, cluster })
  t.teardown(() => receiver.close({ timeoutMs: 0 }))
  let handled = 0
  let corrupt = 0
  let maxPending = 0
  let pending = 0
  receiver.on('flood', async (msg) => {
    pending++
    if (pending > maxPending) maxPending = pending
    await new Promise((r) => setTimeout(r, 1))
    // stream-peer floods 1 KiB of 7s: still there after the await.
    const p = msg.payload
    if (p.length !== 1024 || p[0] !== 7 || p[1023] !== 7) corrupt++
    pending--
    handled++
  })
  const honestSeen = countHonest(receiver)
  const lat = honestSeen.lat
  const spawn = (id: number, mode: string): Child => {
    const c = spawnFixture('stream-peer.mjs', [], {
      NEXRES_CLUSTER: JSON.stringify(cluster),
      NEXRES_ID: String(id),
      NEXRES_TO: '3',
      NEXRES_MODE: mode,
      NEXRES_MS: String(FLOOD_MS),
    })
    t.teardown(() => c.kill())
    return c
  }
  const rss0 = process.memoryUsage.rss()
  let rssMax = rss0
  const sampler = setInterval(() => {
    rssMax = Math.max(rssMax, process.memoryUsage.rss())
  }, 50)
  t.teardown(() => clearInterval(sampler))
  const flooder = spawn(1, 'flood')
  const honest = spawn(2, 'honest')
  await Promise.all([flooder.waitLine(/^up$/, 30_000, 'flooder up'), honest.waitLine(/^up$/, 30_000, 'honest up')])
  const [, honestDone] = await Promise.all([
    flooder.waitLine(/^done (\d+)$/, FLOOD_MS + 40_000, 'flooder done'),
    honest.waitLine(/^done (\d+)$/, FLOOD_MS + 40_000, 'honest done'),
  ])
  const honestSent = Number(honestDone[1])
  await until(() => honestSeen.next >= honestSent, 10_000, 'every honest message')
  clearInterval(sampler)
  lat.sort((x, y) => x - y)
  const p99 = lat[Math.floor(lat.length * 0.99)] ?? 0
  const grew = (rssMax - rss0) / MiB
  t.comment(`flood handled ${handled}, max pending handlers ${maxPending}, honest ${honestSeen.next} p99 ${p99.toFixed(1)} ms max ${lat[lat.length - 1]?.toFixed(1)} ms, RSS +${grew.toFixed(0)} MiB`)
  t.ok(handled > 1000, `the flood was handled (${handled} messages)`)
  t.equal(corrupt, 0, 'every flood payload intact after its await')
  t.equal(honestSeen.bad, 0, 'honest messages in order')
  t.ok(grew < 256, `receiver RSS grew ${grew.toFixed(0)} MiB (< 256 MiB) during a ${FLOOD_MS / 1000} s flood`)
  t.ok(maxPending <= 1024 + 256, `pending handlers bounded by maxPendingHandlers plus one run of 256 (${maxPending})`)
  t.ok(p99 < timeBound(150), `honest p99 latency ${p99.toFixed(1)} ms (< ${timeBound(150)} ms) during the flood`)
})

t.test('with workers, a message is acknowledged once its handler promise settles', async (t) => {
  const cluster = await loopbackCluster(2, 'async-workers')
  const handlers = new URL('./fixtures/worker-handlers.mjs', import.meta.url)
  const [a, b] = await Promise.all([
    Replica.start({ auth: 'none', id: 1, cluster }),
    Replica.start({ auth: 'none', id: 2, cluster, workers: 2, handlers }),
  ])
  t.teardown(() => Promise.all([a.close({ timeoutMs: 0 }), b.close({ timeoutMs: 0 })]))
  await Promise.all([a.waitForPeers(), b.waitForPeers()])
  const order: string[] = []
  let queuedAtBegin = -1
  a.on('began', () => {
    order.push('began')
    queuedAtBegin = a.stats().peers.find((p) => p.id === 2)!.queuedBytes
  })
  a.on('ended', () => order.push('ended'))
  a.send(2, 'slow-ack', 'x')
  await until(() => order.length === 2, 10_000, 'began and ended')
  t.same(order, ['began', 'ended'])
  t.ok(queuedAtBegin > 0, `not acknowledged while the worker's handler is pending (${queuedAtBegin} bytes queued)`)
  await until(() => a.stats().peers.find((p) => p.id === 2)!.queuedBytes === 0, 5000, 'acknowledged after settle')
  t.pass('acknowledged once the promise settled')
})

t.test('a peer held back by pending handlers cannot fill the shared input queue', async (t) => {
  // Replica 2 is a raw peer writing one frame per write (one delivery per
  // frame) to a route whose handler never settles during the test; replica 3
  // sends honest messages meanwhile: every one arrives, and the receiver does
  // not spin.
  const cluster = await loopbackCluster(3, 'held-runs')
  const receiver = await Replica.start({ auth: 'none', id: 1, cluster })
  t.teardown(() => receiver.close({ timeoutMs: 0 }))
  const never: (() => void)[] = []
  let slow = 0
  receiver.on('slow', () => {
    slow++
    return new Promise<void>((resolve) => never.push(resolve))
  })
  t.teardown(() => {
    for (const r of never) r()
  })
  const honestSeen = countHonest(receiver)
  const raw = spawnFixture('tiny-writes-peer.mjs', [], {
    NEXRES_PORT: String(cluster.replicas[0]!.port),
    NEXRES_CLUSTER_ID: cluster.id,
    NEXRES_SENDER: '2',
    NEXRES_ROUTE: 'slow',
    NEXRES_COUNT: '150000',
  })
  t.teardown(() => raw.kill())
  await raw.waitLine(/^up$/, 20_000, 'raw peer up')
  await until(() => slow >= 256, 20_000, 'the raw peer held back')
  const cpu0 = process.cpuUsage()
  const w0 = Date.now()
  const honest = spawnFixture('stream-peer.mjs', [], {
    NEXRES_CLUSTER: JSON.stringify(cluster),
    NEXRES_ID: '3',
    NEXRES_TO: '1',
    NEXRES_MODE: 'honest',
    NEXRES_MS: '3000',
  })
  t.teardown(() => honest.kill())
  const [, sent] = await honest.waitLine(/^done (\d+)$/, 40_000, 'honest peer done')
  await until(() => honestSeen.next >= Number(sent), 10_000, 'every honest message')
  const cpu = process.cpuUsage(cpu0)
  const cpuShare = (cpu.user + cpu.system) / 1000 / (Date.now() - w0)
  t.equal(honestSeen.next, Number(sent), `all ${sent} honest messages arrived while ${slow} handlers of the raw peer are pending`)
  t.equal(honestSeen.bad, 0, 'in order')
  t.ok(slow <= 1024 + 256, `the held-back peer's pending handlers stay bounded (${slow})`)
  t.ok(cpuShare < 0.8, `the receiver does not spin while the peer is held back (JS+io CPU ${(cpuShare * 100).toFixed(0)} % of wall time)`)
})
