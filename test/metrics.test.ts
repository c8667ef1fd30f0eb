// The prom-client collector: the user's registry exposes per-peer and
// per-replica metrics with the values stats() reports.
import t from 'tap'
import { Registry } from 'prom-client'

import { Replica } from 'nexres-rpc'
import { collectReplicaMetrics } from 'nexres-rpc/metrics'

import { loopbackCluster, until } from './helpers.js'

t.test('collectReplicaMetrics exposes peer and replica metrics in the user registry', async (t) => {
  const cluster = await loopbackCluster(2, 'metrics')
  const [a, b] = await Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster, heartbeatIntervalMs: 50, heartbeatTimeoutMs: 1000 })))
  t.teardown(() => Promise.all([a!.close({ timeoutMs: 0 }), b!.close({ timeoutMs: 0 })]))
  await a!.waitForPeers()
  let got = 0
  b!.on('m', () => {
    got++
  })
  for (let i = 0; i < 500; i++) a!.send(2, 'm', 'x'.repeat(10))
  a!.send(2, 'nobody-listens', 'y')
  await until(() => got === 500 && b!.stats().unrouted === 1, 5000, 'messages')
  await until(() => a!.stats().peers[0]!.heartbeatRttUs > 0 && a!.stats().peers[0]!.queuedBytes === 0, 5000, 'a heartbeat and the acks')

  const registry = new Registry()
  collectReplicaMetrics([a!, b!], { registry })
  const text = await registry.metrics()
  t.match(text, /# TYPE nexres_peer_messages_out_total counter/)
  t.match(text, /nexres_peer_messages_out_total\{replica="1",cluster="metrics",peer="2"\} 501/)
  t.match(text, /nexres_peer_messages_in_total\{replica="2",cluster="metrics",peer="1"\} 501/)
  t.match(text, /nexres_peer_connected\{replica="1",cluster="metrics",peer="2"\} 1/)
  t.match(text, /nexres_peer_queued_bytes\{replica="1",cluster="metrics",peer="2"\} 0/)
  t.match(text, /nexres_unrouted_messages_total\{replica="2"\} 1/)
  t.match(text, /nexres_client_connections\{replica="1"\} 0/)
  t.match(text, /nexres_receive_buffer_bytes\{replica="2"\} [1-9]\d*/)
  t.match(text, /# TYPE nexres_worker_restarts_total counter/)
  t.match(text, /nexres_peer_heartbeat_rtt_seconds\{replica="1",cluster="metrics",peer="2"\} (0\.\d+|\d(\.\d+)?e-\d+)/)
  // A second scrape after more traffic: counters grow by the difference.
  for (let i = 0; i < 10; i++) a!.send(2, 'm', 'z')
  await until(() => got === 510, 5000, 'ten more')
  await new Promise((r) => setTimeout(r, 60))
  const again = await registry.metrics()
  t.match(again, /nexres_peer_messages_in_total\{replica="2",cluster="metrics",peer="1"\} 511/)
})

t.test('metrics follow reconfigure: the epoch, remote peers labelled with their cluster, removed peers gone', async (t) => {
  const A = await loopbackCluster(2, 'mA')
  const B = await loopbackCluster(1, 'mB')
  const a1 = await Replica.start({ auth: 'none', id: 1, cluster: A, remoteClusters: [B] })
  const a2 = await Replica.start({ auth: 'none', id: 2, cluster: A })
  const b1 = await Replica.start({ auth: 'none', id: 1, cluster: B, remoteClusters: [A] })
  t.teardown(() => Promise.all([a1.close({ timeoutMs: 0 }), a2.close({ timeoutMs: 0 }), b1.close({ timeoutMs: 0 })]))
  await until(() => a1.stats().peers.every((p) => p.connected), 10_000, 'links')
  const registry = new Registry()
  collectReplicaMetrics([a1], { registry })
  let text = await registry.metrics()
  t.match(text, /nexres_configuration_epoch\{replica="1"\} 0/)
  t.match(text, /nexres_peer_connected\{replica="1",cluster="mA",peer="2"\} 1/)
  t.match(text, /nexres_peer_connected\{replica="1",cluster="mB",peer="1"\} 1/, 'the remote replica 1 is its own series')
  a1.reconfigure({ ...A, epoch: 3, replicas: A.replicas.filter((r) => r.id === 1) })
  await new Promise((r) => setTimeout(r, 60))
  text = await registry.metrics()
  t.match(text, /nexres_configuration_epoch\{replica="1"\} 3/)
  t.notMatch(text, /nexres_peer_connected\{replica="1",cluster="mA",peer="2"\}/, 'the removed peer left the gauges')
})
