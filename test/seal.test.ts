// auth 'seal' (docs/SECURITY.md): the 'mac' handshake, then every batch on a
// replica link encrypted (AES-256-GCM) and decrypted in place by the
// receiver. Real sockets on 127.0.0.1; a proxy in the middle records or
// changes what is on the wire. In every test a replica streams numbered
// messages throughout and all of them must arrive, in order, exactly once.
import { type Socket } from 'node:net'

import t from 'tap'

import { type ClusterConfig, ConfigError, Replica, type ReplicaOptions, verifySigned } from 'nexres-rpc'

import { FaultProxy } from './fault-proxy.js'
import { type Keyed, type Tap, honestStream, keyedCluster, until } from './helpers.js'

const MARKER = 'SECRET-MARKER'

interface Through {
  a: Replica
  b: Replica
  proxy: FaultProxy
  /** Every byte replica 2 sent towards replica 1, as the proxy saw it. */
  wire: () => Buffer
}

// Replica 2 reaches replica 1 only through a proxy that records (and may
// change) what 2 sends.
async function through(
  t: Tap,
  name: string,
  auth: 'seal' | 'mac',
  tamper?: (chunk: Buffer, sent: number, up: Socket) => Buffer | null,
  extra: Partial<ReplicaOptions> = {},
): Promise<Through> {
  const k: Keyed = await keyedCluster(2, `seal-${name}`)
  const seen: Buffer[] = []
  const proxy = await FaultProxy.open(t, k.cluster.replicas[0]!.port, (chunk, sent, n, up) => {
    seen.push(Buffer.from(chunk))
    return n === 1 && tamper ? tamper(chunk, sent, up) : chunk
  })
  const viewOf2: ClusterConfig = { ...k.cluster, replicas: [{ ...k.cluster.replicas[0]!, port: proxy.port }, k.cluster.replicas[1]!] }
  const a = await Replica.start({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, auth, ...extra })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const b = await Replica.start({ id: 2, cluster: viewOf2, privateKey: k.keys[1]!.privateKey, auth, reconnect: { minMs: 10, maxMs: 50 }, ...extra })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  return { a, b, proxy, wire: () => Buffer.concat(seen) }
}

// Replica 2 sends `n` messages carrying MARKER (small ones, large ones sent
// by reference, signed ones) and replica 1 checks every one arrives.
async function markedTraffic(t: Tap, x: Through, n: number): Promise<void> {
  const got: string[] = []
  x.a.on('secret', (m) => got.push(Buffer.from(m.payload).toString('latin1', 0, 40)))
  let signedOk = 0
  x.a.on('signed', (m) => {
    if (m.signature && Buffer.from(m.payload).includes(MARKER)) signedOk++
  })
  await x.b.waitForPeers([1])
  for (let i = 0; i < n; i++) {
    const head = `${MARKER} ${String(i).padStart(8, '0')}`
    // Every 50th is 200 KiB (sent by reference, split over batches).
    const body = i % 50 === 0 ? Buffer.concat([Buffer.from(head), Buffer.alloc(200_000, MARKER)]) : Buffer.from(head.padEnd(100, '.'))
    while (!x.b.send(1, 'secret', body)) await new Promise((r) => x.b.events.once('drain', r))
  }
  x.b.send(1, 'signed', `${MARKER} signed`, { sign: true })
  await until(() => got.length === n && signedOk === 1, 20_000, `all ${n} messages`)
  const inOrder = got.every((g, i) => g.startsWith(`${MARKER} ${String(i).padStart(8, '0')}`))
  t.ok(inOrder, `all ${n} messages and the signed one arrived, in order, intact`)
}

t.test("configuration: 'seal' needs keys like 'mac'; unknown modes named", async (t) => {
  const k = await keyedCluster(2, 'seal-config')
  const bare: ClusterConfig = { id: 'seal-config', replicas: k.cluster.replicas.map(({ id, host, port }) => ({ id, host, port })) }
  const bad = async (opts: Record<string, unknown>, field: string, what: string): Promise<void> => {
    const err = await Replica.start(opts as unknown as ReplicaOptions).then(
      (r) => r.close().then(() => undefined),
      (e: unknown) => e,
    )
    t.ok(err instanceof ConfigError && err.field === field && err.code === 'CONFIG_INVALID', `${what}: CONFIG_INVALID on ${field} (${String(err)})`)
  }
  await bad({ id: 1, cluster: bare, auth: 'seal' }, 'privateKey', 'seal without a private key')
  await bad({ id: 1, cluster: bare, auth: 'seal', privateKey: k.keys[0]!.privateKey }, 'cluster.replicas[0].publicKey', 'seal without public keys')
  await bad({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, auth: 'encrypt' }, 'auth', "'encrypt' is not a mode")
  await bad({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, auth: 2 }, 'auth', 'a number')
})

t.test('seal: nothing of the payloads is on the wire; with mac it is (the check can fail)', async (t) => {
  const sealed = await through(t, 'wire', 'seal')
  await markedTraffic(t, sealed, 2000)
  const wire = sealed.wire()
  t.ok(wire.length > 2_000_000, `the proxy saw the traffic (${wire.length} bytes)`)
  t.equal(wire.indexOf(MARKER), -1, 'no payload bytes in clear on the sealed link')
  const signed = Buffer.from(`${MARKER} signed`)
  t.equal(wire.indexOf(signed), -1, 'nor the signed message')
  const plain = await through(t, 'wire-mac', 'mac')
  await markedTraffic(t, plain, 200)
  t.ok(plain.wire().indexOf(MARKER) >= 0, "with auth 'mac' the same payloads are readable on the wire")
})

t.test("seal and mac do not mix: the handshake refuses (BAD_AUTH), nothing is delivered", async (t) => {
  const k = await keyedCluster(2, 'seal-mix')
  const a = await Replica.start({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, auth: 'seal' })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  let delivered = 0
  a.on('x', () => delivered++)
  const b = await Replica.start({ id: 2, cluster: k.cluster, privateKey: k.keys[1]!.privateKey, auth: 'mac', reconnect: { minMs: 10, maxMs: 50 } })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  b.send(1, 'x', 'hello')
  await until(() => (a.stats().rejectsByReason.BAD_AUTH ?? 0) > 0, 10_000, 'the refusal')
  t.equal(delivered, 0, 'nothing from the mac replica was delivered')
  t.notOk(b.stats().peers.find((p) => p.id === 1)?.connected, 'the link never came up')
})

// Tampering shows as BAD_MAC: a failed tag, or a frame header that did not
// decrypt to one naming the sender. Only that connection closes, before
// anything unauthenticated is delivered; the
// sender reconnects (new keys, its unacknowledged frames sealed again) and
// the stream goes on with nothing lost or doubled.
async function attack(t: Tap, name: string, tamper: (chunk: Buffer, sent: number, up: Socket) => Buffer | null): Promise<void> {
  const x = await through(t, `mitm-${name}`, 'seal', tamper)
  const honest = honestStream(t, x.b, x.a)
  const refused = (): [string, number][] => Object.entries(x.a.stats().rejectsByReason).filter(([, n]) => n > 0)
  await until(() => refused().length > 0, 10_000, 'the tampering detected')
  t.same(refused().map(([c]) => c), ['BAD_MAC'], `${name}: refused with BAD_MAC only (${JSON.stringify(refused())})`)
  await until(() => x.proxy.connections >= 2, 10_000, 'the sender to reconnect')
  await honest.finish()
}

t.test('seal: an altered ciphertext byte is detected; nothing is lost', async (t) => {
  let done = false
  await attack(t, 'alter', (chunk, sent) => {
    if (done || sent + chunk.length < 20_000) return chunk
    done = true
    const c = Buffer.from(chunk)
    c[c.length - 30]! ^= 0x01
    return c
  })
})

t.test('seal: a replayed ciphertext is detected; nothing is delivered twice', async (t) => {
  let captured: Buffer | undefined
  let done = false
  await attack(t, 'replay', (chunk, sent, up) => {
    if (done) return chunk
    if (captured === undefined && sent > 10_000) captured = Buffer.from(chunk)
    else if (captured !== undefined && sent > 40_000) {
      done = true
      up.write(chunk)
      return captured
    }
    return chunk
  })
})

t.test('seal: reordered and truncated ciphertext is detected', async (t) => {
  let done = false
  await attack(t, 'reorder', (chunk, sent) => {
    if (done || sent < 30_000 || chunk.length < 400) return chunk
    done = true
    return Buffer.concat([chunk.subarray(100), chunk.subarray(0, 100)])
  })
  let cut = false
  await attack(t, 'truncate', (chunk, sent) => {
    if (cut || sent < 30_000 || chunk.length < 400) return chunk
    cut = true
    return chunk.subarray(0, chunk.length - 17)
  })
})

t.test('seal: signed broadcasts to two peers are decrypted, then verified; verifySigned checks them anywhere', async (t) => {
  const k = await keyedCluster(3, 'seal-signed')
  const rs = await Promise.all(
    [0, 1, 2].map((i) => Replica.start({ id: i + 1, cluster: k.cluster, privateKey: k.keys[i]!.privateKey, auth: 'seal' })),
  )
  for (const r of rs) t.teardown(() => r.close({ timeoutMs: 0 }))
  await Promise.all(rs.map((r, i) => r.waitForPeers([1, 2, 3].filter((id) => id !== i + 1))))
  const got: { from: number; ok: boolean }[] = []
  for (const r of rs.slice(1)) {
    r.on('vote', (m) => {
      const ok = m.signature !== undefined && verifySigned(k.cluster, { from: m.from, route: 'vote', id: m.id, incarnation: m.incarnation ?? 0n, payload: m.copy(), signature: m.signature })
      got.push({ from: m.from, ok })
    })
  }
  for (let i = 0; i < 500; i++) rs[0]!.broadcast('vote', `vote ${i}`, { sign: true })
  await until(() => got.length === 1000, 10_000, '1,000 signed deliveries')
  t.ok(got.every((g) => g.from === 1 && g.ok), 'every signed broadcast checks with verifySigned after decryption')
})
