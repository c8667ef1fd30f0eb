// Replica links through a fault proxy (test/fault-proxy.ts): connections
// cut again and again mid-stream, a link that goes silent (packets
// dropped), a slow link. Whatever the fault, every message sent arrives
// exactly once and in order once the link is back, and the sender learns
// of a silent link from heartbeats, not from TCP.
import t from 'tap'

import { type ClusterConfig, Replica, type ReplicaOptions } from 'nexres-rpc'

import { FaultProxy } from './fault-proxy.js'
import { type Tap, honestStream, keyedCluster, loopbackCluster, until } from './helpers.js'

const FAST_RECONNECT = { reconnect: { minMs: 10, maxMs: 50 } }

/** Replica 2 reaches replica 1 through a fault proxy; returns both and the proxy. */
async function throughProxy(t: Tap, name: string, auth: 'none' | 'mac', options: Partial<ReplicaOptions> = {}) {
  const keyed = auth === 'mac' ? await keyedCluster(2, name) : { cluster: await loopbackCluster(2, name), keys: [] }
  const cluster = keyed.cluster
  const proxy = await FaultProxy.open(t, cluster.replicas[0]!.port)
  const viewOf2: ClusterConfig = { ...cluster, replicas: [{ ...cluster.replicas[0]!, port: proxy.port }, cluster.replicas[1]!] }
  const key = (i: number) => (auth === 'mac' ? { privateKey: keyed.keys[i]!.privateKey } : {})
  const a = await Replica.start({ auth, id: 1, cluster, ...key(0), ...FAST_RECONNECT, ...options })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const b = await Replica.start({ auth, id: 2, cluster: viewOf2, ...key(1), ...FAST_RECONNECT, ...options })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  await b.waitForPeers([1], { timeoutMs: 10_000 })
  return { a, b, proxy }
}

for (const auth of ['none', 'mac'] as const) {
  t.test(`auth ${auth}: the link cut 20 times mid-stream; every message arrives once, in order`, async (t) => {
    const { a, b, proxy } = await throughProxy(t, `cut-${auth}`, auth)
    const stream = honestStream(t, b, a)
    let downs = 0
    // Up since waitForPeers; a link is reported up (and later down) once
    // the peer accepted it: with auth mac, at its first ACK.
    let ups = 1
    b.events.on('peer-down', () => downs++)
    b.events.on('peer-up', () => ups++)
    for (let cut = 0; cut < 20; cut++) {
      // Cut while messages are flowing over the connection made since the
      // last cut (more have arrived through it), once the sender has
      // reported that connection up.
      const mark = stream.got
      await until(
        () => proxy.connections > cut && stream.got > mark + 100 && ups > cut,
        10_000,
        () => `messages and peer-up after cut ${cut} (${stream.got}, ${ups} up)`,
      )
      proxy.cut()
    }
    await stream.finish()
    await until(() => downs >= 20, 5000, () => `peer-down for every cut (${downs})`)
    t.equal(downs, 20, 'the sender saw its link go down at every cut')
    // Each cut came after a new connection carried messages (see the loop).
    t.ok(proxy.connections >= 20, `it reconnected after every cut (${proxy.connections} connections)`)
  })
}

t.test('a silent link (blackholed): peer-down from heartbeats; after it heals the backlog arrives, in order', async (t) => {
  const { a, b, proxy } = await throughProxy(t, 'blackhole', 'mac', { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 600 })
  const stream = honestStream(t, b, a)
  await until(() => stream.got > 500, 10_000, 'the stream under way')
  const down = new Promise<unknown>((resolve) => b.events.once('peer-down', (_peer, reason) => resolve(reason)))
  proxy.blackhole()
  const reason = (await down) as { code?: string }
  t.ok(reason !== undefined, `the sender reported the silent link down (${reason.code})`)
  const during = stream.got
  // Messages sent meanwhile stay queued for the peer.
  await until(() => b.stats().peers.some((p) => p.id === 1 && p.queuedBytes > 0), 5000, 'messages queued while the link is silent')
  t.equal(stream.got, during, 'nothing arrives while the link is silent')
  const up = new Promise<void>((resolve) => b.events.once('peer-up', () => resolve()))
  proxy.heal()
  await up
  t.pass('the link came back up once the proxy forwarded again')
  await stream.finish()
})

t.test('a slow link (every chunk delayed 30 ms): order kept, everything acknowledged', async (t) => {
  const { a, b, proxy } = await throughProxy(t, 'delay', 'none')
  proxy.delayMs = 30
  const stream = honestStream(t, b, a)
  await until(() => stream.got > 2000, 15_000, 'messages over the slow link')
  await stream.finish()
  await until(() => b.stats().peers.every((p) => p.queuedBytes === 0), 10_000, 'every message acknowledged')
  t.pass('the sender holds nothing unacknowledged')
})
