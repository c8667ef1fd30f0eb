// With `workers: N` a flooding peer is fair-shared too: the dispatcher takes
// runs from the input queue by round robin over peers (as the main thread's
// consumer does), so an honest peer's messages are not queued behind the
// flood's backlog. Replicas 1 and 2 flood 1 KiB messages whose handlers each
// cost ~200 µs, replica 3 sends one message every 5 ms; the receiver runs
// both routes on 2 workers. Every honest message arrives in order, and while
// it waits only a few fair rounds of flood messages are handled (the flood's
// backlog, handled in arrival order, is thousands). Fairness is counted in
// messages handled meanwhile, not in milliseconds, so a busy machine does
// not change the verdict.
import t from 'tap'

import { Replica } from 'nexres-rpc'

import { spawnFixture, spawnStreamPeer } from './child-helpers.js'
import { loopbackCluster, until } from './helpers.js'
// @ts-expect-error: a plain .mjs fixture (worker handlers), without types
import { BYTES, STEP, views } from './fixtures/worker-fairness.mjs'

const handlers = new URL('./fixtures/worker-fairness.mjs', import.meta.url)

interface Views {
  i32: Int32Array
  sent: Float64Array
  handled: Float64Array
  timeline: Float64Array
}

t.test('with workers, a flooding peer does not starve an honest one', async (t) => {
  // Receiver 4; raw flooders 1 and 2 (as many as workers, so both are
  // busy); honest 3.
  const cluster = await loopbackCluster(4, 'workers-fairness')
  const shared = new SharedArrayBuffer(BYTES as number)
  const { i32, sent: sentAt, handled, timeline } = (views as (s: SharedArrayBuffer) => Views)(shared)
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
  // How many flood messages had been handled by wall time `at`.
  const floodAt = (at: number): number => {
    let n = 0
    for (let k = 1; k < timeline.length; k++) if (timeline[k]! > 0 && timeline[k]! <= at) n++
    return n * (STEP as number)
  }
  const waited: number[] = []
  const latency: number[] = []
  for (let n = 0; n < Math.min(sent, sentAt.length); n++) {
    waited.push(floodAt(handled[n]!) - floodAt(sentAt[n]!))
    latency.push(handled[n]! - sentAt[n]!)
  }
  waited.sort((a, b) => a - b)
  latency.sort((a, b) => a - b)
  const pick = (l: number[], q: number): number => l[Math.min(l.length - 1, Math.floor(l.length * q))]!
  // The flood is sent far faster than 2 workers handle it (10,000/s), so its
  // backlog fills the receive memory each connection may hold (8 MiB: ~8,000
  // messages each). Taken in arrival order, an honest message would wait
  // while that whole backlog is handled; by round robin, only while the
  // workers finish the runs they are on and take one run of each source
  // (at most 256 messages a run). Eight such runs: 2,048, for nearly every
  // honest message (the dispatcher once handed a flood's backlog to its
  // owner first come first served: the first honest messages waited while
  // over 6,000 were handled).
  t.ok(
    pick(waited, 0.99) <= 2048,
    `while an honest message waited, ${pick(waited, 0.99)} flood messages were handled at p99 ` +
      `(p50 ${pick(waited, 0.5)}; latency p50 ${pick(latency, 0.5).toFixed(1)} ms, p99 ${pick(latency, 0.99).toFixed(1)} ms)`,
  )
})
