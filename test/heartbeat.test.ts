// Heartbeats: answered on io threads (a receiver whose JS thread is blocked
// still looks alive), a frozen peer (SIGSTOP) is reported down within the
// timeout and comes back up after SIGCONT with nothing lost, and the round
// trip shows in stats.
import net from 'node:net'

import t, { type Test } from 'tap'

import { Replica } from 'nexres-rpc'

import { type Child, lastCount, spawnFixture } from './child-helpers.js'
import { loopbackCluster, until } from './helpers.js'

const HB = { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 800 }

async function withReceiver(t: Test, options: Record<string, unknown> = HB) {
  const cluster = await loopbackCluster(2, 'heartbeat')
  const receiver: Child = spawnFixture('receiver.mjs', [], {
    NEXRES_CLUSTER: JSON.stringify(cluster),
    NEXRES_ID: '2',
    NEXRES_OPTIONS: JSON.stringify(options),
  })
  t.teardown(() => receiver.kill())
  await receiver.waitLine(/^ready \d+$/, 15_000, 'receiver ready')
  const a = await Replica.start({ auth: 'none', id: 1, cluster, ...options })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  await a.waitForPeers([2], { timeoutMs: 15_000 })
  return { cluster, receiver, a }
}

function sendCounters(a: Replica, from: number, n: number): number {
  const buf = Buffer.alloc(8)
  for (let i = 0; i < n; i++) {
    buf.writeBigUInt64LE(BigInt(from + i))
    a.send(2, 'seq', buf)
  }
  return from + n
}

t.test('a frozen peer (SIGSTOP) is reported down by heartbeat; after SIGCONT it is back and nothing is lost', async (t) => {
  const { receiver, a } = await withReceiver(t)
  const downs: { peer: number; code: string }[] = []
  let ups = 0
  a.events.on('peer-down', (peer, info) => downs.push({ peer, code: info.code }))
  a.events.on('peer-up', () => ups++)
  let next = sendCounters(a, 0, 100)
  await until(() => lastCount(receiver).count === 100, 10_000, 'first 100 counters')

  receiver.proc.kill('SIGSTOP')
  const stoppedAt = Date.now()
  await until(() => downs.length > 0, 10_000, 'peer-down')
  const detectedMs = Date.now() - stoppedAt
  t.same(downs[0], { peer: 2, code: 'HEARTBEAT_TIMEOUT' }, 'reported down with HEARTBEAT_TIMEOUT')
  t.ok(detectedMs < 5000, `detected in ${detectedMs} ms (timeout 800 ms)`)
  next = sendCounters(a, next, 100) // queued while it is down

  receiver.proc.kill('SIGCONT')
  await until(() => ups > 0, 15_000, 'peer-up again')
  await until(() => lastCount(receiver).count >= next, 15_000, 'every counter')
  const c = lastCount(receiver)
  t.equal(c.count, next, 'every message arrived')
  t.equal(c.bad, 0, 'in order, none twice')
})

t.test('a receiver whose JS thread is blocked still answers heartbeats: no peer-down', async (t) => {
  const { receiver, a } = await withReceiver(t)
  const downs: number[] = []
  a.events.on('peer-down', (peer) => downs.push(peer))
  sendCounters(a, 0, 10)
  await until(() => lastCount(receiver).count === 10, 10_000, 'first counters')
  receiver.proc.stdin!.write('block 2500\n')
  await receiver.waitLine(/^blocking/, 5000, 'receiver blocking')
  await new Promise((r) => setTimeout(r, 2000)) // 2.5x the heartbeat timeout while JS is blocked
  t.same(downs, [], 'the link stayed up')
  await receiver.waitLine(/^unblocked/, 10_000, 'receiver unblocked')
  const rtt = a.stats().peers.find((p) => p.id === 2)!.heartbeatRttUs
  t.ok(rtt > 0 && rtt < 1_000_000, `heartbeat round trip measured: ${rtt} µs`)
})

t.test('a PING from a connected peer is answered with a PONG carrying its id', async (t) => {
  const cluster = await loopbackCluster(3, 'ping')
  const r2 = await Replica.start({ auth: 'none', id: 2, cluster, heartbeatIntervalMs: 0 })
  t.teardown(() => r2.close({ timeoutMs: 0 }))
  const sock = net.connect(cluster.replicas[1]!.port, '127.0.0.1')
  t.teardown(() => sock.destroy())
  await new Promise((r) => sock.once('connect', r))
  let rx = Buffer.alloc(0)
  sock.on('data', (d: Buffer) => (rx = Buffer.concat([rx, d])))
  const cid = Buffer.from(cluster.id)
  const hello = Buffer.alloc(32 + cid.length)
  hello.write('NXRP', 0, 'latin1')
  hello.writeUInt16LE(1, 4)
  hello.writeUInt16LE(1, 6)
  hello[10] = cid.length
  hello.writeUInt32LE(3, 12)
  hello.writeBigUInt64LE(7n, 16)
  hello.writeUInt32LE(cid.length, 24)
  cid.copy(hello, 32)
  sock.write(hello)
  await until(() => rx.length >= 32 + cid.length, 5000, 'WELCOME')
  rx = rx.subarray(32 + cid.length)
  const ping = Buffer.alloc(24)
  ping.writeUInt32LE(3, 8)
  ping[12] = 4
  ping.writeBigUInt64LE(123456789n, 16)
  sock.write(ping)
  await until(() => rx.length >= 24, 5000, 'PONG')
  t.equal(rx[12], 5, 'kind PONG')
  t.equal(rx.readBigUInt64LE(16), 123456789n, 'echoes the PING id')
  t.equal(rx.readUInt32LE(8), 2, 'from replica 2')
})
