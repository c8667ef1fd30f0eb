// replica.reconfigure (docs/API.md "Membership", PROTOCOL.md §2 epochs):
// replicas added and removed while every replica streams, a replica left on
// the old epoch, a removed replica that comes back with its old key, a
// replica that moved, and the argument checks. Real sockets on 127.0.0.1.
import t from 'tap'

import { type ClusterConfig, ConfigError, Replica, type ReplicaOptions, generateKeyPair } from 'nexres-rpc'

import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'

import { connectAuthenticated, readReject } from './byzantine-peer.js'
import { type Tap, freePorts, keyedCluster, until } from './helpers.js'
import { dataFrame, hello } from './wire-peer.js'

const HOST = '127.0.0.1'
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** A cluster config of the given ids (ports by id), at `epoch`. */
function config(id: string, ports: Map<number, number>, ids: number[], epoch: number, keys?: Map<number, string>): ClusterConfig {
  return {
    id,
    epoch,
    replicas: ids.map((r) => ({ id: r, host: HOST, port: ports.get(r)!, ...(keys ? { publicKey: keys.get(r)! } : {}) })),
  }
}

async function start(t: Tap, opts: ReplicaOptions): Promise<Replica> {
  const r = await Replica.start({ reconnect: { minMs: 10, maxMs: 200 }, ...opts })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  return r
}

/** Per receiver, per sender: the message ids delivered, in delivery order. */
function record(r: Replica, route: string): Map<number, number[]> {
  const got = new Map<number, number[]>()
  r.on(route, (m) => {
    let a = got.get(m.from)
    if (a === undefined) got.set(m.from, (a = []))
    a.push(m.id)
  })
  return got
}

/** Undelivered ranges a replica reported, per peer. */
function undelivered(r: Replica): Map<number, [number, number][]> {
  const u = new Map<number, [number, number][]>()
  r.events.on('undelivered', (peer, info) => {
    let a = u.get(peer)
    if (a === undefined) u.set(peer, (a = []))
    if (info.messages > 0) a.push([info.firstId, info.lastId])
  })
  return u
}

function increasing(ids: readonly number[]): boolean {
  for (let i = 1; i < ids.length; i++) if (ids[i]! <= ids[i - 1]!) return false
  return true
}

t.test('4 -> 5 -> 4 replicas while every replica streams: nothing lost, order kept, the removed replica’s backlog reported', async (t) => {
  const ports = new Map((await freePorts(5)).map((p, i) => [i + 1, p]))
  const four = [1, 2, 3, 4]
  const five = [1, 2, 3, 4, 5]
  const rs: Replica[] = []
  const got: Map<number, number[]>[] = []
  const lost: Map<number, [number, number][]>[] = []
  for (const id of four) {
    const r = await start(t, { id, cluster: config('m', ports, four, 0), auth: 'none' })
    rs.push(r)
    got.push(record(r, 'seq'))
    lost.push(undelivered(r))
  }
  await Promise.all(rs.map((r) => r.waitForPeers()))
  const refused5 = new Promise<string>((resolve) => rs[0]!.events.on('reject', (i) => (i.peer === 5 || i.message.includes('replica id 5') ? resolve(i.code) : undefined)))
  const aheadAt4 = new Promise<{ peer: number; epoch: number }>((resolve) => rs[3]!.events.once('epoch-ahead', resolve))

  // Every replica broadcasts a burst every few ms until told to stop.
  let streaming = true
  t.teardown(() => {
    streaming = false
  })
  const streamers: Promise<void>[] = []
  const stream = (r: Replica): void => {
    streamers.push(
      (async () => {
        const body = Buffer.alloc(32)
        while (streaming) {
          for (let i = 0; i < 40; i++) r.broadcast('seq', body)
          await delay(2)
        }
      })(),
    )
  }
  rs.forEach(stream)

  // Replica 5 starts on epoch 1, where it is a member; its handlers never
  // finish (nothing it gets is acknowledged), so its peers keep a backlog.
  const r5 = await start(t, { id: 5, cluster: config('m', ports, five, 1), auth: 'none' })
  const got5 = new Map<number, number[]>()
  r5.on('seq', (m) => {
    let a = got5.get(m.from)
    if (a === undefined) got5.set(m.from, (a = []))
    a.push(m.id)
    return new Promise<void>(() => undefined)
  })
  // 5 dials the others first: they do not know it yet.
  t.equal(await refused5, 'UNKNOWN_PEER', 'replica 1 refuses 5 until its configuration has it')

  const firstWith5 = new Map<number, number>()
  const lastWith5 = new Map<number, number>()
  for (const r of rs) {
    if (r === rs[3]) {
      // The last one on epoch 0 hears of epoch 1 from those already there.
      const ahead = await aheadAt4
      t.equal(ahead.epoch, 1, "replica 4, still on epoch 0, gets 'epoch-ahead' with epoch 1")
    }
    r.reconfigure(config('m', ports, five, 1))
    firstWith5.set(r.id, r.lastMessageId + 1)
    t.same(r.peers, five.filter((p) => p !== r.id), `replica ${r.id}: peers after the add`)
    await delay(25) // the others are still on epoch 0 meanwhile
  }
  stream(r5)
  // (5 takes no more once its share of pending handlers is reached.)
  await until(() => four.every((s) => (got5.get(s)?.length ?? 0) >= 50) && got.every((g) => (g.get(5)?.length ?? 0) >= 200), 20_000, () => `replica 5 linked both ways (${four.map((s) => got5.get(s)?.length ?? 0).join(',')})`)

  for (const r of rs) {
    lastWith5.set(r.id, r.lastMessageId)
    r.reconfigure(config('m', ports, four, 2))
    t.equal(r.epoch, 2, `replica ${r.id} on epoch 2`)
    await delay(25)
  }
  await delay(100)
  streaming = false
  await Promise.all(streamers)
  const last = new Map(rs.map((r) => [r.id, r.lastMessageId]))
  await until(() => rs.every((r, i) => four.every((s) => s === r.id || got[i]!.get(s)?.at(-1) === last.get(s))), 30_000, 'every message among 1..4')

  for (const [i, r] of rs.entries()) {
    for (const s of four) {
      if (s === r.id) continue
      const ids = got[i]!.get(s)!
      t.equal(ids.length, last.get(s), `${s} -> ${r.id}: all ${last.get(s)} messages, across epochs 0, 1 and 2`)
      t.ok(increasing(ids), `${s} -> ${r.id}: in order, none twice`)
    }
    const from5 = got[i]!.get(5) ?? []
    t.ok(from5.length > 0 && from5.every((id, k) => id === k + 1), `5 -> ${r.id}: a prefix of what 5 sent (${from5.length}), in order`)
  }
  // What went to 5 arrived (in order) or was reported undelivered when 5 left.
  for (const r of rs) {
    const from = firstWith5.get(r.id)!
    const to = lastWith5.get(r.id)!
    const ids = got5.get(r.id) ?? []
    t.ok(increasing(ids) && ids.every((id) => id >= from && id <= to), `${r.id} -> 5: in order, only while 5 was a member`)
    const ranges = lost[rs.indexOf(r)]!.get(5) ?? []
    t.ok(ranges.length > 0, `${r.id}: the backlog for 5 (never acknowledged) reported in 'undelivered'`)
    const seen = new Set(ids)
    let missing = 0
    for (let id = from; id <= to; id++) if (!seen.has(id) && !ranges.some(([a, b]) => id >= a && id <= b)) missing++
    t.equal(missing, 0, `${r.id} -> 5: every message of ids ${from}..${to} delivered or reported`)
    t.notOk(r.stats().peers.some((p) => p.id === 5), `${r.id}: 5 is gone from stats`)
    t.equal(r.stats().epoch, 2, 'stats show the epoch')
  }
})

for (const auth of ['none', 'mac'] as const) {
  t.test(`auth ${auth}: a replica left on the old epoch is refused (STALE_EPOCH) both ways and told it is behind; its queue waits and arrives once it catches up`, async (t) => {
    const k = await keyedCluster(3, `stale-${auth}`)
    const cluster = (epoch: number): ClusterConfig => (auth === 'mac' ? { ...k.cluster, epoch } : { id: k.cluster.id, epoch, replicas: k.cluster.replicas.map(({ id, host, port }) => ({ id, host, port })) })
    const opts = (i: number): ReplicaOptions => (auth === 'mac' ? { id: i, cluster: cluster(0), privateKey: k.keys[i - 1]!.privateKey } : { id: i, cluster: cluster(0), auth: 'none' })
    const [a, b, c] = [await start(t, opts(1)), await start(t, opts(2)), await start(t, opts(3))]
    await Promise.all([a, b, c].map((r) => r.waitForPeers()))
    const rejects: { at: number; peer: number | undefined; code: string }[] = []
    for (const r of [a, b, c]) r.events.on('reject', (i) => rejects.push({ at: r.id, peer: i.peer, code: i.code }))
    const ahead = new Promise<{ epoch: number; peer: number }>((resolve) => c.events.once('epoch-ahead', resolve))
    const got = record(c, 'late')

    a.reconfigure(cluster(1))
    b.reconfigure(cluster(1))
    await a.waitForPeers([2])
    const info = await ahead
    t.equal(info.epoch, 1, "the replica behind gets 'epoch-ahead' with the new epoch")
    t.ok([1, 2].includes(info.peer), 'naming a replica that is ahead')
    await until(() => rejects.some((r) => r.at === 3 && r.code === 'STALE_EPOCH') && rejects.some((r) => r.at !== 3 && r.peer === 3 && r.code === 'STALE_EPOCH'), 10_000, 'STALE_EPOCH reported on both sides')
    t.pass('STALE_EPOCH reported by the replica behind and by one ahead')
    for (let i = 0; i < 100; i++) a.send(3, 'late', Buffer.from([i]))
    await delay(300)
    t.equal(got.get(1)?.length ?? 0, 0, 'nothing crosses epochs')
    t.notOk(a.isConnected(3), 'no link to the replica behind')

    c.reconfigure(cluster(1))
    await until(() => (got.get(1)?.length ?? 0) === 100, 10_000, 'the queued messages after catching up')
    t.ok(increasing(got.get(1)!), 'in order, once each')
    t.equal(c.epoch, 1)
  })
}

t.test('a removed replica is refused, with its old key or a forged handshake; added back with a new key, only the new key works', async (t) => {
  const k = await keyedCluster(4, 'removed')
  const ports = new Map(k.cluster.replicas.map((r) => [r.id, r.port]))
  let keys = new Map(k.cluster.replicas.map((r) => [r.id, r.publicKey as string]))
  const rs = await Promise.all([1, 2, 3, 4].map((i) => start(t, { id: i, cluster: { ...k.cluster, epoch: 0 }, privateKey: k.keys[i - 1]!.privateKey })))
  await Promise.all(rs.map((r) => r.waitForPeers()))
  const got = record(rs[0]!, 'x')
  const rejects: string[] = []
  rs[0]!.events.on('reject', (i) => {
    if (i.peer === 4 || i.peer === undefined) rejects.push(i.code)
  })
  for (const r of rs.slice(0, 3)) r.reconfigure(config('removed', ports, [1, 2, 3], 1, keys))
  // Replica 4 does not know: it keeps its old configuration, and even moves
  // to epoch 1 with itself in it.
  rs[3]!.reconfigure(config('removed', ports, [1, 2, 3, 4], 1, keys))
  for (let i = 0; i < 50; i++) rs[3]!.send(1, 'x', Buffer.from([i]))
  await until(() => rejects.filter((c) => c === 'UNKNOWN_PEER').length >= 2, 10_000, 'replica 4 refused')
  t.equal(got.get(4)?.length ?? 0, 0, 'nothing from the removed replica is delivered')
  t.notOk(rs[0]!.isConnected(4) || rs[0]!.peers.includes(4), 'replica 1 has no link to 4')

  // A handshake by hand as replica 4: refused before any key exchange.
  const sock = connect(ports.get(1)!, HOST)
  await new Promise((r) => sock.once('connect', r))
  sock.on('error', () => undefined)
  sock.write(hello({ sender: 4, clusterId: 'removed', auth: 1, ext: randomBytes(64) }))
  t.equal((await readReject(sock)).code, 4, 'a HELLO as the removed id: refused UNKNOWN_PEER')
  sock.destroy()
  await delay(100)
  t.equal(got.get(4)?.length ?? 0, 0, 'still nothing from 4')

  // Added back with a new key (epoch 2): the old key no longer proves 4.
  const fresh = generateKeyPair()
  keys = new Map(keys).set(4, fresh.publicKey)
  for (const r of rs.slice(0, 3)) r.reconfigure(config('removed', ports, [1, 2, 3, 4], 2, keys))
  // The old replica 4 (epoch 1, old key) still dials; and by hand, on epoch 2:
  const old = await connectAuthenticated({ port: ports.get(1)!, clusterId: 'removed', sender: 4, responder: 1, privateKey: k.keys[3]!.privateKey })
  old.send([dataFrame(4, 'x', 1, Buffer.from('old key'))])
  t.equal((await readReject(old.socket)).code, 10, 'its old key no longer proves replica 4: BAD_AUTH')
  old.close()
  await until(() => rejects.includes('BAD_AUTH'), 10_000, 'the old key refused')
  t.equal(got.get(4)?.length ?? 0, 0, 'nothing delivered under the old key')
  await rs[3]!.close({ timeoutMs: 0 })
  const r4 = await start(t, { id: 4, cluster: config('removed', ports, [1, 2, 3, 4], 2, keys), privateKey: fresh.privateKey })
  await r4.waitForPeers()
  for (let i = 0; i < 20; i++) r4.send(1, 'x', Buffer.from([i]))
  await until(() => (got.get(4)?.length ?? 0) === 20, 10_000, 'the new key')
  t.pass('with the new key replica 4 is a member again')
})

t.test('a replica that moved: the link follows its new address; what was queued for it arrives', async (t) => {
  const ports = new Map((await freePorts(4)).map((p, i) => [i + 1, p]))
  const a = await start(t, { id: 1, cluster: config('moved', ports, [1, 2, 3], 0), auth: 'none' })
  const b = await start(t, { id: 2, cluster: config('moved', ports, [1, 2, 3], 0), auth: 'none' })
  let c = await start(t, { id: 3, cluster: config('moved', ports, [1, 2, 3], 0), auth: 'none' })
  await Promise.all([a, b, c].map((r) => r.waitForPeers()))
  await c.close({ timeoutMs: 0 })
  for (let i = 0; i < 100; i++) a.send(3, 'q', Buffer.from([i]))
  const moved = new Map(ports).set(3, ports.get(4)!)
  a.reconfigure(config('moved', moved, [1, 2, 3], 0))
  b.reconfigure(config('moved', moved, [1, 2, 3], 0))
  c = await start(t, { id: 3, cluster: config('moved', moved, [1, 2, 3], 0), auth: 'none' })
  const got = record(c, 'q')
  await until(() => (got.get(1)?.length ?? 0) === 100, 10_000, 'the queued messages at the new address')
  t.ok(increasing(got.get(1)!), 'in order')
  await c.waitForPeers()
  t.pass('both peers reach replica 3 at its new port')
})

t.test('reconfigure checks its arguments before touching anything', async (t) => {
  const ports = new Map((await freePorts(3)).map((p, i) => [i + 1, p]))
  const a = await start(t, { id: 1, cluster: config('args', ports, [1, 2], 3), auth: 'none', maxPeers: 1 })
  const bad = (f: () => unknown, field: string, what: string): void => {
    try {
      f()
      t.fail(`${what}: no error`)
    } catch (e) {
      t.ok(e instanceof ConfigError && e.code === 'CONFIG_INVALID' && e.message.includes(field), `${what}: CONFIG_INVALID naming ${field} (${(e as Error).message})`)
    }
  }
  const r = a as unknown as { reconfigure(c: unknown, o?: unknown): void }
  bad(() => r.reconfigure(undefined), 'cluster', 'no cluster')
  bad(() => r.reconfigure({ id: 'args', replicas: 'x' }), 'cluster.replicas', 'replicas not an array')
  bad(() => r.reconfigure({ ...config('args', ports, [1, 2], 3), epoch: -1 }), 'cluster.epoch', 'negative epoch')
  bad(() => r.reconfigure({ ...config('args', ports, [1, 2], 3), epoch: 1.5 }), 'cluster.epoch', 'fractional epoch')
  bad(() => r.reconfigure(config('args', ports, [1, 2], 2)), 'cluster.epoch', 'an older epoch')
  bad(() => r.reconfigure(config('other', ports, [1, 2], 3)), 'cluster.id', 'another cluster id')
  bad(() => r.reconfigure(config('args', ports, [2, 3], 3)), 'cluster.replicas', 'without this replica')
  bad(() => r.reconfigure(config('args', new Map(ports).set(1, ports.get(3)!), [1, 2], 3)), 'cluster.replicas', 'this replica moved')
  bad(() => r.reconfigure({ ...config('args', ports, [1, 2], 3), bogus: 1 }), 'cluster.bogus', 'an unknown key')
  bad(() => r.reconfigure(config('args', ports, [1, 2], 3), { remoteClusters: 'x' }), 'options.remoteClusters', 'remoteClusters not an array')
  bad(() => r.reconfigure(config('args', ports, [1, 2], 3), { remoteClusters: [config('args', ports, [2], 0)] }), 'options.remoteClusters[0].id', 'a remote cluster with our id')
  bad(() => r.reconfigure(config('args', ports, [1, 2], 3), { nope: true }), 'options.nope', 'an unknown option')
  bad(() => r.reconfigure(config('args', ports, [1, 2, 3], 4)), 'maxPeers', 'more peers than maxPeers allows… ')
  t.equal(a.epoch, 3, 'the epoch did not move')
  t.same(a.peers, [2], 'the peers did not change')
  // Within maxPeers: a second one fits.
  a.reconfigure(config('args', new Map(ports).set(2, ports.get(3)!), [1, 2], 4))
  t.equal(a.epoch, 4)
  await a.close({ timeoutMs: 0 })
  t.throws(() => a.reconfigure(config('args', ports, [1, 2], 5)), { code: 'CLOSED' }, 'CLOSED once closed')
})

t.test("a replica replaces its own key while running: sessions start again under it, signed messages queued under the old key are reported, the old key is refused", async (t) => {
  const k = await keyedCluster(3, 'rotate')
  const rs = await Promise.all([1, 2, 3].map((i) => start(t, { id: i, cluster: { ...k.cluster }, privateKey: k.keys[i - 1]!.privateKey })))
  await Promise.all(rs.map((r) => r.waitForPeers()))
  const [a, b] = [rs[0]!, rs[1]!]
  const plain = record(b, 'plain')
  const signed: { id: number; ok: boolean }[] = []
  // Replica 3 goes down; what 1 sends it meanwhile waits in 1's queue.
  await rs[2]!.close({ timeoutMs: 0 })
  const lost = undelivered(a)
  const reasons: string[] = []
  a.events.on('undelivered', (peer, info) => reasons.push(`${peer}: ${info.reason}`))
  for (let i = 0; i < 40; i++) {
    a.send(3, 'signed', Buffer.from([i]), { sign: true })
    a.send(3, 'plain', Buffer.from([i]))
  }
  a.flush()
  const queuedSigned = a.lastMessageId

  // New key for 1; epoch 1 everywhere; 1 keeps streaming to 2 throughout.
  const fresh = generateKeyPair()
  const next: ClusterConfig = { ...k.cluster, epoch: 1, replicas: k.cluster.replicas.map((r) => (r.id === 1 ? { ...r, publicKey: fresh.publicKey } : r)) }
  let n = 0
  const pump = setInterval(() => {
    for (let i = 0; i < 20; i++) a.send(2, 'plain', Buffer.from([n++ & 0xff]))
  }, 2)
  t.teardown(() => clearInterval(pump))
  await delay(50)
  b.reconfigure(next)
  a.reconfigure(next, { privateKey: fresh.privateKey })
  await delay(50)
  clearInterval(pump)
  await until(() => (plain.get(1)?.length ?? 0) === n, 10_000, 'every plain message to 2')
  t.ok(increasing(plain.get(1)!), '1 -> 2: all plain messages, in order, none twice, across the key change')

  await until(() => (lost.get(3) ?? []).length > 0, 10_000, 'the stale signed messages reported')
  t.ok(reasons.some((r) => r.startsWith('3: ') && /key that reconfigure replaced/.test(r)), `reported with the reason (${reasons.join('; ')})`)
  const c = await start(t, { id: 3, cluster: next, privateKey: k.keys[2]!.privateKey })
  c.on('signed', (m) => signed.push({ id: m.id, ok: m.signature !== undefined }))
  const plain3 = record(c, 'plain')
  await until(() => (plain3.get(1)?.length ?? 0) === 40, 10_000, 'the plain messages queued for 3')
  await delay(100)
  t.equal(signed.length, 0, 'none of the 40 signed under the old key reached 3 (they were given up)')
  const ranges = lost.get(3)!
  const covered = (id: number): boolean => ranges.some(([x, y]) => id >= x && id <= y)
  t.ok(ranges.reduce((s, [x, y]) => s + (y - x + 1), 0) >= 40 && covered(queuedSigned - 1), 'the given-up ids are reported')

  // Signed under the new key: delivered, and they verify with the new public key.
  a.send(3, 'signed', 'new key', { sign: true })
  await until(() => signed.length === 1, 10_000, 'a signed message under the new key')
  t.ok(signed[0]!.ok, 'delivered with its signature (checked on receipt against the new key)')

  // The old key no longer proves replica 1.
  const rejects: string[] = []
  b.events.on('reject', (i) => rejects.push(i.code))
  const old = await connectAuthenticated({ port: k.cluster.replicas[1]!.port, clusterId: 'rotate', sender: 1, responder: 2, privateKey: k.keys[0]!.privateKey })
  old.send([dataFrame(1, 'plain', 1e9, Buffer.from('old'))])
  t.equal((await readReject(old.socket)).code, 10, 'a handshake with the old key: BAD_AUTH')
  old.close()
  t.throws(() => b.reconfigure(next, { privateKey: fresh.privateKey }), { code: 'CONFIG_INVALID', field: 'privateKey' }, "another replica's key for this one: refused")
})

t.test('reconfigure from inside a handler, and 100 removals and additions in a row while streaming: nothing lost in silence, order kept', async (t) => {
  const ports = new Map((await freePorts(3)).map((p, i) => [i + 1, p]))
  const all = config('churn', ports, [1, 2, 3], 0)
  const a = await start(t, { id: 1, cluster: all, auth: 'none' })
  const b = await start(t, { id: 2, cluster: all, auth: 'none' })
  const c = await start(t, { id: 3, cluster: all, auth: 'none' })
  await Promise.all([a, b, c].map((r) => r.waitForPeers()))
  const gotB = record(b, 's')
  const gotC = record(c, 's')
  let reported = 0
  a.events.on('undelivered', (peer, info) => {
    if (peer === 3) reported += info.messages
  })
  // A handler of replica 1 changes its configuration (re-entrant: it runs inside a delivery).
  let toggles = 0
  a.on('toggle', (m) => {
    toggles++
    a.reconfigure(m.text() === 'drop' ? config('churn', ports, [1, 2], 0) : all)
  })
  let sentB = 0
  let sentC = 0
  let refused = 0
  for (let k = 0; k < 100; k++) {
    for (let i = 0; i < 30; i++) {
      a.send(2, 's', 'x')
      sentB++
      try {
        a.send(3, 's', 'y')
        sentC++
      } catch (e) {
        if ((e as { code?: string }).code === 'UNKNOWN_PEER') refused++
        else throw e
      }
    }
    if (k % 10 === 5) {
      b.send(1, 'toggle', k % 20 === 5 ? 'drop' : 'add')
      await until(() => toggles === Math.floor(k / 10) + 1, 5000, 'the handler’s reconfigure')
    } else {
      a.reconfigure(k % 2 === 0 ? config('churn', ports, [1, 2], 0) : all)
    }
    await delay(1)
  }
  a.reconfigure(all)
  await until(() => (gotB.get(1)?.length ?? 0) === sentB, 20_000, 'everything to 2')
  t.ok(increasing(gotB.get(1)!), `1 -> 2: all ${sentB}, in order, through 100 reconfigurations (10 from a handler)`)
  await until(() => a.stats().peers.every((p) => p.queuedBytes === 0), 20_000, 'queues drained')
  const toC = gotC.get(1) ?? []
  t.ok(increasing(toC), '1 -> 3: in order, none twice')
  t.ok(toC.length + reported >= sentC, `1 -> 3: ${toC.length} delivered + ${reported} reported undelivered >= ${sentC} accepted (${refused} sends refused UNKNOWN_PEER while 3 was out)`)
  t.ok(refused > 0, 'sends to 3 while it was out were refused at once')
})
