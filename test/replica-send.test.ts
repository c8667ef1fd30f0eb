import t from 'tap'

import { Replica } from 'nexres-rpc'

import { loopbackCluster, until } from './helpers.js'

for (const ioThreads of [1, 2, 4]) {
  t.test(`4 replicas, ioThreads ${ioThreads}: send and broadcast arrive with the right from and route`, async (t) => {
    const cluster = await loopbackCluster(4)
    const replicas = await Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster, ioThreads })))
    t.teardown(() => Promise.all(replicas.map((r) => r.close({ timeoutMs: 0 }))))
    await Promise.all(replicas.map((r) => r.waitForPeers()))

    const seen: string[] = []
    for (const r of replicas) {
      r.on('prepare', (msg) => seen.push(`${r.id}<-${msg.from}:${msg.route}:${msg.text()}`))
      r.on('commit', (msg) => seen.push(`${r.id}<-${msg.from}:${msg.route}:${msg.text()}`))
    }
    t.equal(replicas[0]!.send(2, 'prepare', 'p1'), true)
    replicas[2]!.send(4, 'commit', 'c3')
    replicas[3]!.broadcast('commit', 'b4')
    await until(() => seen.length === 5, 5000, 'messages')
    t.same(seen.sort(), ['1<-4:commit:b4', '2<-1:prepare:p1', '2<-4:commit:b4', '3<-4:commit:b4', '4<-3:commit:c3'].sort())
  })
}

t.test('100,000 messages from one peer arrive in order, none lost', async (t) => {
  const cluster = await loopbackCluster(2)
  const [a, b] = await Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster })))
  t.teardown(() => Promise.all([a!.close({ timeoutMs: 0 }), b!.close({ timeoutMs: 0 })]))
  await a!.waitForPeers()
  const N = 100_000
  let next = 0
  let bad = 0
  b!.on('seq', (msg) => {
    const v = new DataView(msg.payload.buffer, msg.payload.byteOffset, 8).getFloat64(0, true)
    if (v !== next) bad++
    next++
    if (msg.from !== 1) bad++
  })
  const buf = new Uint8Array(32)
  const dv = new DataView(buf.buffer)
  for (let i = 0; i < N; i++) {
    dv.setFloat64(0, i, true)
    a!.send(2, 'seq', buf)
  }
  await until(() => next === N, 20_000, 'all messages')
  t.equal(bad, 0, 'every message in order, from replica 1')
  const st = b!.stats().peers.find((p) => p.id === 1)!
  t.equal(st.msgsIn, N)
  await until(() => a!.stats().peers[0]!.queuedBytes === 0, 5000, 'acks')
  t.equal(a!.stats().peers[0]!.msgsOut, N)
})

t.test('8 MiB messages arrive intact (sent by reference, received in one buffer)', async (t) => {
  const cluster = await loopbackCluster(2)
  const [a, b] = await Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster })))
  t.teardown(() => Promise.all([a!.close({ timeoutMs: 0 }), b!.close({ timeoutMs: 0 })]))
  await a!.waitForPeers()
  const big = new Uint8Array(8 * 1024 * 1024)
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff
  const got: Uint8Array[] = []
  b!.on('blob', (msg) => got.push(msg.copy()))
  a!.send(2, 'blob', big)
  a!.send(2, 'blob', big.subarray(1, 5 * 1024 * 1024 + 3))
  a!.send(2, 'blob', 'small after big')
  await until(() => got.length === 3, 20_000, 'big messages')
  t.equal(Buffer.compare(got[0]!, big), 0, 'first 8 MiB message intact')
  t.equal(Buffer.compare(got[1]!, big.subarray(1, 5 * 1024 * 1024 + 3)), 0, 'sub-view intact')
  t.equal(Buffer.from(got[2]!).toString(), 'small after big')
})

t.test('a handler that throws is reported and delivery goes on', async (t) => {
  const cluster = await loopbackCluster(2)
  const [a, b] = await Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster })))
  t.teardown(() => Promise.all([a!.close({ timeoutMs: 0 }), b!.close({ timeoutMs: 0 })]))
  await a!.waitForPeers()
  const errors: unknown[] = []
  b!.events.on('error', (err) => errors.push(err))
  let ok = 0
  b!.on('x', (msg) => {
    if (msg.text() === 'boom') throw new Error('boom')
    ok++
  })
  b!.on('y', async () => {
    throw new Error('async boom')
  })
  a!.send(2, 'x', 'fine')
  a!.send(2, 'x', 'boom')
  a!.send(2, 'y', 'z')
  a!.send(2, 'x', 'fine')
  await until(() => ok === 2 && errors.length === 2, 5000, 'deliveries')
  t.equal(b!.stats().handlerErrors, 2)
})

t.test('receive-side depth: bytes being handled count in receivePendingBytes until the batch is done', async (t) => {
  const cluster = await loopbackCluster(2)
  const [a, b] = await Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster })))
  t.teardown(() => Promise.all([a!.close({ timeoutMs: 0 }), b!.close({ timeoutMs: 0 })]))
  await a!.waitForPeers()
  let during = -1
  let seen = 0
  b!.on('depth', (msg) => {
    if (seen++ === 0) during = b!.stats().peers[0]!.receivePendingBytes
    t.ok(msg.size === 1000)
  })
  for (let i = 0; i < 50; i++) a!.send(2, 'depth', new Uint8Array(1000))
  await until(() => seen === 50, 5000, 'messages')
  t.ok(during >= 1024, `pending while the handler runs (${during} bytes)`)
  await until(() => b!.stats().peers[0]!.receivePendingBytes === 0, 5000, 'released after the batch')
  t.pass('back to 0 once handled')
})
