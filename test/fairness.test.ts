// A peer that floods does not starve an honest one: while replica 1 sends
// 1 KiB messages as fast as backpressure allows, replica 2's one message
// every 5 ms all arrive at replica 3, in order, with bounded latency —
// each connection holds a bounded share of receive buffers, so the flood
// waits in TCP, not in front of the honest peer's messages.
import t from 'tap'

import { Replica } from 'nexres-rpc'

import { spawnStreamPeer } from './child-helpers.js'
import { countHonest, loopbackCluster, until, timeBound } from './helpers.js'

t.test('a flooding peer does not starve an honest one', async (t) => {
  const cluster = await loopbackCluster(3, 'fairness')
  const receiver = await Replica.start({ auth: 'none', id: 3, cluster })
  t.teardown(() => receiver.close({ timeoutMs: 0 }))
  let flood = 0
  let floodBytes = 0
  receiver.on('flood', (msg) => {
    flood++
    floodBytes += msg.payload.length
  })
  const honestSeen = countHonest(receiver)
  const lat = honestSeen.lat
  const flooder = spawnStreamPeer(t, cluster, 1, 3, 'flood')
  await flooder.waitLine(/^up$/, 20_000, 'flooder up')
  await until(() => flood > 1000, 10_000, 'the flood to start')
  const honest = spawnStreamPeer(t, cluster, 2, 3, 'honest')
  const [, sentText] = await honest.waitLine(/^done (\d+)$/, 40_000, 'honest peer done')
  await flooder.waitLine(/^done \d+$/, 40_000, 'flooder done')
  const sent = Number(sentText)
  await until(() => honestSeen.next >= sent, 10_000, 'every honest message')
  t.equal(honestSeen.next, sent, `all ${sent} honest messages arrived`)
  t.equal(honestSeen.bad, 0, 'in order, none twice')
  t.ok(floodBytes > 20 * 1024 * 1024, `the other peer really flooded (${(floodBytes / 2 ** 20).toFixed(0)} MiB)`)
  lat.sort((a, b) => a - b)
  const p99 = lat[Math.floor(lat.length * 0.99)]!
  const max = lat[lat.length - 1]!
  t.ok(p99 < timeBound(250), `honest p99 latency ${p99.toFixed(1)} ms (max ${max.toFixed(1)} ms) under ${timeBound(250)} ms while flooded`)
})
