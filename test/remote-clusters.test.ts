// Links to other clusters (remoteClusters, sendTo, broadcastTo, msg.cluster;
// docs/API.md "Other clusters"): two clusters of three exchanging broadcasts
// while one remote replica is killed with -9, a remote member that claims a
// local id, and remote clusters changed by reconfigure. auth 'mac'
// throughout: every replica proves its (cluster, id) with its own key.
import t from 'tap'

import { type ClusterConfig, Replica, type ReplicaOptions, UnknownPeerError } from 'nexres-rpc'

import { type Child, spawnFixture } from './child-helpers.js'
import { connectAuthenticated, readReject } from './byzantine-peer.js'
import { type Keyed, type Tap, keyedCluster, until } from './helpers.js'
import { dataFrame } from './wire-peer.js'

async function start(t: Tap, opts: ReplicaOptions): Promise<Replica> {
  const r = await Replica.start({ reconnect: { minMs: 20, maxMs: 200 }, ...opts })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  return r
}

interface Counts {
  n: number
  last: number
}

t.test('two clusters of three exchange broadcasts; one remote replica killed with -9; the survivors lose nothing', async (t) => {
  const A = await keyedCluster(3, 'A')
  const B = await keyedCluster(3, 'B')
  const children: Child[] = B.cluster.replicas.map((r, i) =>
    spawnFixture('cluster-member.mjs', [], {
      NEXRES_ID: String(r.id),
      NEXRES_CLUSTER: JSON.stringify(B.cluster),
      NEXRES_REMOTE: JSON.stringify(A.cluster),
      NEXRES_KEY: B.keys[i]!.privateKey,
      NEXRES_MS: '2500',
    }),
  )
  t.teardown(() => Promise.all(children.map((c) => c.kill())))
  const as: Replica[] = []
  const got: Map<string, Counts>[] = []
  const bad: string[] = []
  const lost: { at: number; peer: number; cluster: string; messages: number }[] = []
  for (const [i, r] of A.cluster.replicas.entries()) {
    const a = await start(t, { id: r.id, cluster: A.cluster, privateKey: A.keys[i]!.privateKey, remoteClusters: [B.cluster], peerDownDeadlineMs: 500 })
    const g = new Map<string, Counts>()
    const track = (route: string, want: string) => (m: { from: number; cluster: string; id: number }) => {
      const k = `${route}:${m.cluster}/${m.from}`
      const c = g.get(k) ?? { n: 0, last: 0 }
      if (m.id <= c.last) bad.push(`A${r.id} ${k}: ${m.id} after ${c.last}`)
      if (m.cluster !== want) bad.push(`A${r.id} ${k} from cluster ${m.cluster}`)
      c.n++
      c.last = m.id
      g.set(k, c)
    }
    a.on('own', track('own', 'A'))
    a.on('cross', track('cross', 'B'))
    a.events.on('undelivered', (peer, info) => lost.push({ at: r.id, peer, cluster: info.cluster, messages: info.messages }))
    as.push(a)
    got.push(g)
  }
  await Promise.all(children.map((c) => c.waitLine(/^up$/, 30_000, 'B linked to both clusters')))
  await until(() => as.every((a) => a.stats().peers.filter((p) => p.connected).length === 5), 20_000, 'A linked to both clusters')
  t.same(
    as[0]!.stats().peers.map((p) => `${p.cluster ?? 'A'}/${p.id}`).sort(),
    ['A/2', 'A/3', 'B/1', 'B/2', 'B/3'],
    'stats list the remote replicas with their cluster (ids 1..3 exist in both)',
  )

  let streaming = true
  let crossSent = 0
  const streams = as.map(async (a) => {
    const body = new Uint8Array(48)
    while (streaming) {
      for (let i = 0; i < 20; i++) {
        a.broadcast('own', body)
        a.broadcastTo('B', 'cross', body)
        if (a === as[0]) crossSent++
      }
      await new Promise((r) => setTimeout(r, 4))
    }
  })
  // B3 dies once it has delivered some of its broadcasts to A.
  await until(() => (got[0]!.get('cross:B/3')?.n ?? 0) > 100, 20_000, 'traffic from B3')
  await children[2]!.kill()
  const survivors = children.slice(0, 2)
  const done = await Promise.all(survivors.map((c) => c.waitLine(/^done (.*)$/, 60_000, 'B done')))
  streaming = false
  await Promise.all(streams)
  const lastA = as.map((a) => a.lastMessageId)
  // Queues to the live peers drain; B3's is given up (peerDownDeadlineMs) and reported.
  await until(() => as.every((a) => a.stats().peers.every((p) => !p.connected || p.queuedBytes === 0)), 20_000, 'A queues drained')
  await until(() => as.every((a) => lost.some((l) => l.at === a.id && l.peer === 3 && l.cluster === 'B' && l.messages > 0)), 20_000, 'B3’s backlog reported')
  t.pass("every A replica reported what it had queued for the killed B3 ('undelivered', cluster 'B')")
  for (const c of survivors) c.proc.stdin!.write('report\n')
  const finals = await Promise.all(survivors.map((c) => c.waitLine(/^final (.*)$/, 20_000, 'B final')))

  t.same(bad, [], 'A: every sender’s messages in order, none twice, each from the cluster its route says')
  const bLast = done.map((d) => (JSON.parse(d[1]!) as { last: number }).last)
  for (const [i, a] of as.entries()) {
    for (const [j, last] of bLast.entries()) {
      const c = got[i]!.get(`cross:B/${j + 1}`)
      t.same(c, { n: last / 2, last }, `B${j + 1} -> A${a.id}: all ${last / 2} broadcasts`)
    }
    for (const [j, b] of as.entries()) {
      if (b === a) continue
      // 'own' and 'cross' alternate: own ids are the odd ones.
      t.same(got[i]!.get(`own:A/${b.id}`), { n: lastA[j]! / 2, last: lastA[j]! - 1 }, `A${b.id} -> A${a.id} (own cluster): all`)
    }
    t.ok((got[i]!.get('cross:B/3')?.n ?? 0) > 0, `A${a.id} got B3’s broadcasts before it died (in order: checked above)`)
  }
  for (const [j, f] of finals.entries()) {
    const r = JSON.parse(f[1]!) as { got: Record<string, Counts>; bad: string[] }
    t.same(r.bad, [], `B${j + 1}: in order, none twice, right clusters`)
    for (const [i, a] of as.entries()) t.same(r.got[`cross:A/${a.id}`], { n: lastA[i]! / 2, last: lastA[i]! }, `A${a.id} -> B${j + 1}: all ${lastA[i]! / 2}`)
    const other = bLast[1 - j]!
    t.same(r.got[`own:B/${2 - j}`], { n: other / 2, last: other - 1 }, `B${2 - j} -> B${j + 1} (their own cluster): all`)
  }
  t.ok(crossSent > 0)
})

async function twoClusters(t: Tap): Promise<{ A: Keyed; B: Keyed; a2: Replica; b1: Replica }> {
  const A = await keyedCluster(2, 'A')
  const B = await keyedCluster(1, 'B')
  const a1 = await start(t, { id: 1, cluster: A.cluster, privateKey: A.keys[0]!.privateKey, remoteClusters: [B.cluster] })
  const a2 = await start(t, { id: 2, cluster: A.cluster, privateKey: A.keys[1]!.privateKey, remoteClusters: [B.cluster] })
  const b1 = await start(t, { id: 1, cluster: B.cluster, privateKey: B.keys[0]!.privateKey, remoteClusters: [A.cluster] })
  await until(() => [a1, a2, b1].every((r) => r.stats().peers.every((p) => p.connected)), 20_000, 'links up')
  return { A, B, a2, b1 }
}

t.test('a remote member cannot pose as a local one: B’s replica 1 is { cluster: B, id: 1 }, never A’s replica 1', async (t) => {
  const { A, B, a2, b1 } = await twoClusters(t)
  const seen: string[] = []
  a2.on('hi', (m) => seen.push(`${m.cluster}/${m.from}:${m.text()}`))
  const back: string[] = []
  b1.on('back', (m) => back.push(`${m.cluster}/${m.from}:${m.text()}`))
  b1.sendTo({ cluster: 'A', id: 2 }, 'hi', 'from B1')
  await until(() => seen.length === 1, 10_000, 'the remote message')
  t.same(seen, ['B/1:from B1'], 'msg.cluster names the remote cluster; msg.from is its own id')
  a2.sendTo({ cluster: 'B', id: 1 }, 'back', 'to B1')
  await until(() => back.length === 1, 10_000, 'the answer')
  t.same(back, ['A/2:to B1'], 'sendTo reaches B’s replica 1, not A’s')

  // B1's key, claiming to be A's replica 1 (same id, this cluster): refused.
  const rejects: string[] = []
  a2.events.on('reject', (i) => rejects.push(`${i.code}:${i.cluster ?? ''}/${i.peer ?? ''}`))
  const posing = await connectAuthenticated({ port: a2.port, clusterId: 'A', sender: 1, responder: 2, privateKey: B.keys[0]!.privateKey })
  posing.send([dataFrame(1, 'hi', 1, Buffer.from('I am A1'))])
  const why = await readReject(posing.socket).catch(() => ({ code: -1 }))
  t.equal(why.code, 10, 'refused BAD_AUTH: B1’s key does not prove A1')
  posing.close()
  // The same key as what it is, B's replica 1: accepted as { B, 1 }.
  const honest = await connectAuthenticated({ port: a2.port, clusterId: 'B', responderClusterId: 'A', sender: 1, responder: 2, privateKey: B.keys[0]!.privateKey })
  honest.send([dataFrame(1, 'hi', 1_000_000, Buffer.from('by hand'))])
  await until(() => seen.length === 2, 10_000, 'the hand-made frame')
  t.same(seen[1], 'B/1:by hand', 'delivered as B’s replica 1')
  honest.close()
  t.ok(rejects.some((r) => r.startsWith('BAD_AUTH')), `the impostor reported (${rejects.join(', ')})`)
  t.notOk(seen.some((s) => s.startsWith('A/1')), 'nothing was ever delivered as A’s replica 1')
  t.ok(A.cluster.id !== B.cluster.id)
})

t.test('remote clusters change with reconfigure; sendTo/broadcastTo check their arguments', async (t) => {
  const { A, B, a2, b1 } = await twoClusters(t)
  const bad = (f: () => unknown, code: string, what: string): void => {
    try {
      f()
      t.fail(`${what}: no error`)
    } catch (e) {
      t.equal((e as { code?: string }).code, code, `${what}: ${code} (${(e as Error).message})`)
    }
  }
  const r = a2 as unknown as { sendTo(to: unknown, route: unknown, p: unknown): boolean; broadcastTo(c: unknown, route: unknown, p: unknown): boolean }
  bad(() => r.sendTo(undefined, 'x', 'p'), 'INVALID_ARGUMENT', 'sendTo without a target')
  bad(() => r.sendTo({ cluster: 'B' }, 'x', 'p'), 'INVALID_ARGUMENT', 'sendTo without an id')
  bad(() => r.sendTo({ cluster: 7, id: 1 }, 'x', 'p'), 'INVALID_ARGUMENT', 'sendTo with a numeric cluster')
  bad(() => r.sendTo({ cluster: 'B', id: 1 }, 'x', 42), 'INVALID_ARGUMENT', 'sendTo with a number payload')
  bad(() => r.sendTo({ cluster: 'B', id: 9 }, 'x', 'p'), 'UNKNOWN_PEER', 'sendTo an id B does not have')
  bad(() => r.sendTo({ cluster: 'C', id: 1 }, 'x', 'p'), 'UNKNOWN_PEER', 'sendTo a cluster not configured')
  bad(() => r.broadcastTo(undefined, 'x', 'p'), 'INVALID_ARGUMENT', 'broadcastTo without a cluster')
  bad(() => r.broadcastTo('C', 'x', 'p'), 'UNKNOWN_PEER', 'broadcastTo a cluster not configured')
  t.ok(a2.sendTo({ cluster: 'A', id: 1 }, 'x', 'p'), 'sendTo its own cluster works like send')

  const got: string[] = []
  b1.on('late', (m) => got.push(m.text()))
  a2.reconfigure({ ...A.cluster }, { remoteClusters: [] })
  t.same(a2.remoteClusters, [], 'no remote clusters now')
  t.throws(() => a2.sendTo({ cluster: 'B', id: 1 }, 'late', 'x'), UnknownPeerError, 'B is gone: UNKNOWN_PEER')
  const refused = new Promise<string>((resolve) => b1.events.on('reject', (i) => (i.peer === 2 || i.code === 'WRONG_CLUSTER' ? resolve(i.code) : undefined)))
  t.ok(['WRONG_CLUSTER', 'UNKNOWN_PEER'].includes(await refused), 'B1’s link to A2 is refused now')
  const back: ClusterConfig = B.cluster
  a2.reconfigure({ ...A.cluster }, { remoteClusters: [back] })
  await until(() => a2.stats().peers.some((p) => p.cluster === 'B' && p.connected), 20_000, 'B linked again')
  a2.sendTo({ cluster: 'B', id: 1 }, 'late', 'again')
  await until(() => got.length === 1, 10_000, 'the message after re-adding B')
  t.same(got, ['again'])

  // What is still queued for a remote replica at close is reported per cluster.
  await b1.close({ timeoutMs: 0 })
  a2.sendTo({ cluster: 'B', id: 1 }, 'late', 'never')
  const res = await a2.close({ timeoutMs: 100 })
  t.equal(res.remoteUndeliveredBytes.B?.[1], 24 + 5, 'close() reports the bytes queued for B’s replica 1')
  t.same(res.undeliveredBytes, {}, 'and none for this cluster')
})

t.test('with workers: remote senders reach worker handlers with msg.cluster; peers added by reconfigure are known to the workers', async (t) => {
  const A = await keyedCluster(3, 'wA')
  const B = await keyedCluster(1, 'wB')
  const two: ClusterConfig = { ...A.cluster, replicas: A.cluster.replicas.slice(0, 2) }
  const a1 = await start(t, {
    id: 1,
    cluster: two,
    privateKey: A.keys[0]!.privateKey,
    remoteClusters: [B.cluster],
    workers: 2,
    handlers: new URL('./fixtures/worker-membership.mjs', import.meta.url),
  })
  const a2 = await start(t, { id: 2, cluster: two, privateKey: A.keys[1]!.privateKey })
  const b1 = await start(t, { id: 1, cluster: B.cluster, privateKey: B.keys[0]!.privateKey, remoteClusters: [two] })
  const pongs: string[] = []
  for (const r of [a2, b1]) r.on('pong', (m) => pongs.push(`${m.cluster}/${m.from} -> ${r.cluster}/${r.id}: ${m.text()}`))
  await until(() => a1.stats().peers.every((p) => p.connected), 20_000, 'links up')
  b1.sendTo({ cluster: 'wA', id: 1 }, 'ping', '')
  a2.send(1, 'ping', '')
  await until(() => pongs.length === 2, 10_000, 'two pongs')
  t.match(pongs.sort(), [/^wA\/1 -> wA\/2: worker \d of wA\/1: ping from wA\/2$/, /^wA\/1 -> wB\/1: worker \d of wA\/1: ping from wB\/1$/], 'a worker answered each sender at its (cluster, id)')

  // Replica 3 joins (epoch 1); a worker answers it at once.
  const three: ClusterConfig = { ...A.cluster, epoch: 1 }
  a1.reconfigure(three, { remoteClusters: [B.cluster] })
  a2.reconfigure(three)
  const a3 = await start(t, { id: 3, cluster: three, privateKey: A.keys[2]!.privateKey })
  a3.on('pong', (m) => pongs.push(`${m.cluster}/${m.from} -> wA/3: ${m.text()}`))
  await a3.waitForPeers([1])
  a3.send(1, 'ping', '')
  await until(() => pongs.length === 3, 10_000, 'the new replica’s pong')
  t.match(pongs[2], /^wA\/1 -> wA\/3: worker \d of wA\/1: ping from wA\/3$/, 'the workers know replica 3')
  t.equal(a1.stats().epoch, 1)
})

t.test("backpressure to a remote replica: sendTo returns false past highWaterMark, 'drain' names it with its cluster, and QUEUE_FULL past maxQueueBytes", async (t) => {
  const A = await keyedCluster(1, 'bpA')
  const B = await keyedCluster(1, 'bpB')
  const a = await start(t, { id: 1, cluster: A.cluster, privateKey: A.keys[0]!.privateKey, remoteClusters: [B.cluster], highWaterMark: 64 * 1024, maxQueueBytes: 256 * 1024 })
  const body = new Uint8Array(8 * 1024)
  let sent = 0
  while (a.sendTo({ cluster: 'bpB', id: 1 }, 'bulk', body)) sent++
  sent++
  t.ok(sent >= 7 && sent <= 9, `false once ~64 KiB is queued for the remote replica (after ${sent})`)
  t.throws(
    () => {
      for (let i = 0; i < 40; i++) a.sendTo({ cluster: 'bpB', id: 1 }, 'bulk', body)
    },
    { code: 'QUEUE_FULL' },
    'QUEUE_FULL past maxQueueBytes',
  )
  const queued = a.stats().peers.find((p) => p.cluster === 'bpB')!.queuedBytes
  const drained = new Promise<[number, string]>((resolve) => a.events.once('drain', (peer, cluster) => resolve([peer, cluster])))
  const b = await start(t, { id: 1, cluster: B.cluster, privateKey: B.keys[0]!.privateKey, remoteClusters: [A.cluster] })
  let got = 0
  b.on('bulk', () => {
    got++
  })
  t.same(await drained, [1, 'bpB'], "'drain' for replica 1 of bpB once it takes the backlog")
  await until(() => got * (24 + body.length) === queued, 10_000, 'the whole backlog')
  t.pass(`all ${got} queued messages arrived`)
})
