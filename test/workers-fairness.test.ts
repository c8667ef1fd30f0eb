// With `workers: N` a flooding peer is fair-shared too: the dispatcher takes
// runs from the input queue by round robin over peers (as the main thread's
// consumer does), so an honest peer's messages are not queued behind the
// flood's backlog. Replica 1 floods 1 KiB messages whose handlers each cost
// ~200 µs, replica 3 sends one message every 5 ms; the receiver runs both
// routes on 2 workers. Every honest message arrives in order, and its
// latency stays within a few fair rounds (the flood's backlog, handled in
// arrival order, takes over a second).
import t from 'tap'

import { Replica } from 'nexres-rpc'

import { spawnFixture, spawnStreamPeer } from './child-helpers.js'
import { loopbackCluster, until, timeBound } from './helpers.js'

const handlers = new URL('./fixtures/worker-fairness.mjs', import.meta.url)

t.test('with workers, a flooding peer does not starve an honest one', async (t) => {
  // Receiver 4; raw flooders 1 and 2 (as many as workers, so both are
  // busy); honest 3.
  const cluster = await loopbackCluster(4, 'workers-fairness')
  const shared = new SharedArrayBuffer(64 + 8 * 4096)
  const i32 = new Int32Array(shared, 0, 16)
  const lat = new Float64Array(shared, 64)
  const receiver = await Replica.start({ auth: 'none', id: 4, cluster, workers: 2, handlers, workerData: { shared } })
  t.teardown(() => receiver.close({ timeoutMs: 0 }))
  // Raw peers flood 1 KiB messages back to back, never waiting for ACKs:
  // only the receiver's bounds hold them back.
  for (const sender of ['1', '2']) {
    const flooder = spawnFixture('tiny-writes-peer.mjs', [], {
      NEXRES_PORT: String(cluster.replicas[3]!.port),
      NEXRES_CLUSTER_ID: cluster.id,
      NEXRES_SENDER: sender,
      NEXRES_ROUTE: 'flood',
      NEXRES_COUNT: '200000',
      NEXRES_SIZE: '1024',
      NEXRES_GAP_US: '0',
    })
    t.teardown(() => flooder.kill())
    await flooder.waitLine(/^up$/, 20_000, 'flooder up')
  }
  // A backlog builds up: the flood is sent far faster than it is handled.
  await until(() => Atomics.load(i32, 2) > 2000, 20_000, 'the flood to be handled')
  const honest = spawnStreamPeer(t, cluster, 3, 4, 'honest')
  const [, sentText] = await honest.waitLine(/^done (\d+)$/, 60_000, 'honest peer done')
  const sent = Number(sentText)
  await until(() => Atomics.load(i32, 0) >= sent, 30_000, 'every honest message')
  t.equal(Atomics.load(i32, 0), sent, `all ${sent} honest messages arrived`)
  t.equal(Atomics.load(i32, 1), 0, 'in order, none twice')
  const flood = Atomics.load(i32, 2)
  t.ok(flood > 5_000, `the other peer really flooded (${flood} handled)`)
  const l = Array.from(lat.subarray(0, sent)).sort((a, b) => a - b)
  const p50 = l[Math.floor(l.length / 2)]!
  const p99 = l[Math.floor(l.length * 0.99)]!
  // The flood is sent faster than 2 workers handle it (10,000/s), so its
  // backlog fills the receive buffers each connection may hold (8 MiB, ~8,000
  // messages: ~0.8 s of work each). Taken in arrival order, an honest message
  // waits behind all of it (over a second); by round robin, behind the
  // batches the workers are on (one run of each source per take, at most
  // 256 messages: ~50 ms each).
  t.ok(p50 < timeBound(300), `honest p50 latency ${p50.toFixed(1)} ms (p99 ${p99.toFixed(1)} ms) within a fair round while flooded`)
})
