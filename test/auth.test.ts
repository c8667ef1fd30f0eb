// auth 'mac' (docs/SECURITY.md): replicas prove their ids with Ed25519 in the
// handshake and every batch of frames carries a tag. Real sockets on
// 127.0.0.1; in every test an honest replica sends numbered messages
// throughout and all of them must arrive, in order, exactly once.
import { readdirSync } from 'node:fs'
import { type Socket, connect } from 'node:net'

import t from 'tap'

import { createPrivateKey, sign } from 'node:crypto'

import { type ClusterConfig, ConfigError, Replica, type ReplicaOptions, generateKeyPair, signedBytes, verifySigned } from 'nexres-rpc'

import { connectAuthenticated, readReject, seedOf } from './byzantine-peer.js'

const ed25519 = (privateKey: string): ReturnType<typeof createPrivateKey> =>
  createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seedOf(privateKey)]), format: 'der', type: 'pkcs8' })
import { type Keyed, type Tap, freePorts, honestStream, keyedCluster, until } from './helpers.js'
import { FaultProxy } from './fault-proxy.js'
import { dataFrame, hello } from './wire-peer.js'

const HOST = '127.0.0.1'
const REJECT = { UNKNOWN_PEER: 4, BAD_AUTH: 10, BAD_SENDER: 7, BAD_SIGNATURE: 17, BAD_MAC: 18 } as const

function openFds(): number {
  return readdirSync('/proc/self/fd').length
}

async function startPair(t: Tap, k: Keyed, extra: Partial<ReplicaOptions> = {}): Promise<[Replica, Replica]> {
  const a = await Replica.start({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, ...extra })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const b = await Replica.start({ id: 2, cluster: k.cluster, privateKey: k.keys[1]!.privateKey, ...extra })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  await Promise.all([a.waitForPeers([2]), b.waitForPeers([1])])
  return [a, b]
}

t.test('configuration: keys are required for mac, none must be chosen, bad keys named', async (t) => {
  const k = await keyedCluster(2, 'auth-config')
  const bare: ClusterConfig = { id: 'auth-config', replicas: k.cluster.replicas.map(({ id, host, port }) => ({ id, host, port })) }
  const bad = async (opts: Record<string, unknown>, field: string, what: string): Promise<void> => {
    const err = await Replica.start(opts as unknown as ReplicaOptions).then(
      (r) => r.close().then(() => undefined),
      (e: unknown) => e,
    )
    t.ok(err instanceof ConfigError && err.field === field, `${what}: CONFIG_INVALID on ${field} (${String(err)})`)
  }
  await bad({ id: 1, cluster: bare }, 'auth', 'no keys and no auth')
  await bad({ id: 1, cluster: bare, auth: 'mac' }, 'privateKey', 'mac without a private key')
  await bad({ id: 1, cluster: bare, auth: 'mac', privateKey: k.keys[0]!.privateKey }, 'cluster.replicas[0].publicKey', 'mac without public keys')
  await bad({ id: 1, cluster: k.cluster, privateKey: 'not a key' }, 'privateKey', 'a private key that is not one')
  await bad({ id: 1, cluster: k.cluster, privateKey: k.keys[1]!.privateKey }, 'privateKey', "someone else's private key")
  await bad({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, auth: 'tls' }, 'auth', 'an unknown mode')
  const short = { ...k.cluster, replicas: k.cluster.replicas.map((r, i) => (i === 1 ? { ...r, publicKey: 'abcd' } : r)) }
  await bad({ id: 1, cluster: short, privateKey: k.keys[0]!.privateKey }, 'cluster.replicas[1].publicKey', 'a short public key')
  // Keys as hex and as bytes work too.
  const hex = Buffer.from(k.keys[0]!.privateKey, 'base64url').toString('hex')
  const r = await Replica.start({ id: 1, cluster: k.cluster, privateKey: hex })
  await r.close()
  const r2 = await Replica.start({ id: 1, cluster: k.cluster, privateKey: new Uint8Array(Buffer.from(k.keys[0]!.privateKey, 'base64url')) })
  await r2.close()
  t.pass('hex and Uint8Array keys accepted')
})

t.test('three authenticated replicas exchange messages; a none/mac mismatch is refused by reason', async (t) => {
  const k = await keyedCluster(3, 'auth-three')
  const rs = await Promise.all(k.cluster.replicas.map((r, i) => Replica.start({ id: r.id, cluster: k.cluster, privateKey: k.keys[i]!.privateKey })))
  t.teardown(() => Promise.all(rs.map((r) => r.close({ timeoutMs: 0 }))))
  await Promise.all(rs.map((r) => r.waitForPeers()))
  const got = new Map<number, number>()
  for (const r of rs) r.on('b', () => got.set(r.id, (got.get(r.id) ?? 0) + 1))
  for (let i = 0; i < 1000; i++) for (const r of rs) r.broadcast('b', Buffer.alloc(100 + (i % 300), i))
  // big ones too (sent by reference, sealed across several batches)
  for (const r of rs) r.broadcast('b', Buffer.alloc(3 * 1024 * 1024, 7))
  await until(() => rs.every((r) => got.get(r.id) === 2002), 15_000, 'every broadcast')
  t.pass('every broadcast arrived at every replica')

  // A replica started with auth 'none' cannot join a mac cluster.
  const ports = k.cluster.replicas.map((r) => r.port)
  const plain = await Replica.start({
    id: 3,
    auth: 'none',
    cluster: { id: 'auth-three', replicas: [{ id: 1, host: HOST, port: ports[0]! }, { id: 3, host: HOST, port: (await freePorts(1))[0]! }] },
  })
  t.teardown(() => plain.close({ timeoutMs: 0 }))
  const refused = new Promise<{ code: string; message: string }>((res) => plain.events.once('reject', res))
  const r = await refused
  t.equal(r.code, 'BAD_AUTH', `the plain replica is refused: ${r.message}`)
})

t.test('unknown id, right id without the key, and traffic after the auth failure: refused, nothing delivered, honest stream intact', async (t) => {
  const k = await keyedCluster(2, 'auth-impostor')
  const [a, b] = await startPair(t, k)
  const fdsBefore = openFds()
  const honest = honestStream(t, b, a)
  let forgedSeen = 0
  a.on('forged', () => forgedSeen++)
  const bDown: string[] = []
  b.events.on('peer-down', (_p, info) => bDown.push(info.code))

  // Unknown id.
  {
    const s = connect(a.port, HOST)
    s.on('error', () => undefined)
    await new Promise((r) => s.once('connect', r))
    s.write(hello({ sender: 9, clusterId: 'auth-impostor', auth: 1, ext: Buffer.alloc(64, 1) }))
    const rej = await readReject(s)
    t.equal(rej.code, REJECT.UNKNOWN_PEER, `unknown id refused: ${rej.text}`)
    s.destroy()
  }
  // Right id (2), wrong key: refused at AUTH; frames written after it never arrive.
  for (let i = 0; i < 3; i++) {
    const wrong = generateKeyPair().privateKey
    const p = await connectAuthenticated({ port: a.port, clusterId: 'auth-impostor', sender: 2, responder: 1, privateKey: wrong })
    p.send([dataFrame(2, 'forged', 1_000_000 + i, Buffer.from('forged'))])
    p.socket.write(dataFrame(2, 'forged', 2_000_000 + i, Buffer.from('unsealed')))
    const rej = await readReject(p.socket)
    t.equal(rej.code, REJECT.BAD_AUTH, `impostor ${i + 1} refused: ${rej.text}`)
    p.close()
  }
  // An impostor answering at replica 1's address: replica 2's link refuses it.
  const fake = await Replica.start({
    id: 1,
    cluster: {
      id: 'auth-impostor',
      replicas: [
        { id: 1, host: HOST, port: (await freePorts(1))[0]!, publicKey: generateKeyPair().publicKey },
        { id: 2, host: HOST, port: (await freePorts(1))[0]!, publicKey: k.keys[1]!.publicKey },
      ],
    },
    privateKey: generateKeyPair().privateKey,
  }).catch((e: unknown) => e)
  t.ok(fake instanceof ConfigError, 'an impostor cannot even start with a key that is not its own (config check)')
  await honest.finish()
  t.equal(forgedSeen, 0, 'nothing from the impostors was delivered')
  t.same(bDown, [], "the real replica 2's connection was never disturbed")
  const rejects = a.stats().rejectsByReason
  t.ok((rejects.BAD_AUTH ?? 0) >= 3 && (rejects.UNKNOWN_PEER ?? 0) >= 1, `refusals counted by reason ${JSON.stringify(rejects)}`)
  await until(() => openFds() <= fdsBefore, 5000, `open descriptors back to ${fdsBefore} (now ${openFds()})`)
  t.pass('open descriptors back to baseline')
})

t.test('a Byzantine member (real key): forged sender id, unsealed frames, a bad tag — each closes only its connection', async (t) => {
  const k = await keyedCluster(3, 'auth-member')
  const [a, b] = await startPair(t, k)
  const honest = honestStream(t, b, a)
  const seen: string[] = []
  a.on('m3', (m) => seen.push(Buffer.from(m.payload).toString()))
  const member = (): Promise<Awaited<ReturnType<typeof connectAuthenticated>>> =>
    connectAuthenticated({ port: a.port, clusterId: 'auth-member', sender: 3, responder: 1, privateKey: k.keys[2]!.privateKey })

  // Honest use of the key works: a sealed frame from 3 is delivered.
  const ok = await member()
  ok.send([dataFrame(3, 'm3', 1, Buffer.from('hello from 3'))])
  await until(() => seen.length === 1, 5000, 'the sealed frame')
  t.same(seen, ['hello from 3'], 'a correctly sealed frame is delivered')
  ok.close()

  // Forged sender id inside a sealed batch.
  const f = await member()
  f.send([dataFrame(2, 'm3', 10, Buffer.from('I am 2'))])
  t.equal((await readReject(f.socket)).code, REJECT.BAD_SENDER, 'a frame naming another sender is refused (BAD_SENDER)')
  f.close()
  // Frames never sealed: held, never delivered; the connection dies with them.
  const u = await member()
  u.send([dataFrame(3, 'm3', 20, Buffer.from('never sealed'))], { seal: false })
  await new Promise((r) => setTimeout(r, 200))
  u.close()
  // A batch with a wrong tag (sealed with the next sequence number).
  const w = await member()
  w.seq = 5n
  w.send([dataFrame(3, 'm3', 30, Buffer.from('bad seq'))])
  t.equal((await readReject(w.socket)).code, REJECT.BAD_MAC, 'a tag for the wrong sequence number is refused (BAD_MAC)')
  w.close()
  await honest.finish()
  t.same(seen, ['hello from 3'], 'nothing else from the Byzantine member was delivered')
})

async function mitmCase(t: Tap, name: string, tamper: (chunk: Buffer, sent: number, up: Socket) => Buffer | null): Promise<void> {
  const k = await keyedCluster(2, `auth-mitm-${name}`)
  const [p1, p2] = [k.cluster.replicas[0]!.port, k.cluster.replicas[1]!.port]
  // A man in the middle between replica 2 (which dials the proxy) and
  // replica 1: `tamper` changes the first connection's stream from 2 to 1.
  const mitm = await FaultProxy.open(t, p1, (chunk, sent, n, up) => (n === 1 ? tamper(chunk, sent, up) : chunk))
  // Replica 2 sees replica 1 at the proxy's address.
  const viewOf2: ClusterConfig = { ...k.cluster, replicas: [{ ...k.cluster.replicas[0]!, port: mitm.port }, k.cluster.replicas[1]!] }
  const a = await Replica.start({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const b = await Replica.start({ id: 2, cluster: viewOf2, privateKey: k.keys[1]!.privateKey, reconnect: { minMs: 10, maxMs: 50 } })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  void p2
  const honest = honestStream(t, b, a)
  // Tampering shows as a failed tag, or, when a changed length makes the
  // parser reach garbage before the tag, as a bad frame: either way the
  // connection closes before anything unauthenticated is delivered.
  const caught = (): string[] =>
    ['BAD_MAC', 'BAD_FRAME', 'FRAME_TOO_LARGE', 'BAD_SENDER'].filter((c) => (a.stats().rejectsByReason[c] ?? 0) > 0)
  await until(() => caught().length > 0, 10_000, 'the tampering detected')
  t.pass(`${name}: detected (${caught().join(', ')}), the connection closed`)
  await honest.finish()
}

t.test('man in the middle: an altered byte is detected; the sender reconnects and nothing is lost', async (t) => {
  let done = false
  await mitmCase(t, 'alter', (chunk, sent) => {
    // Past the handshake and the first batches: flip one bit of a payload byte.
    if (done || sent + chunk.length < 20_000) return chunk
    done = true
    const c = Buffer.from(chunk)
    c[c.length - 30]! ^= 0x01
    return c
  })
})

t.test('man in the middle: a replayed batch is detected; nothing is delivered twice', async (t) => {
  let captured: Buffer | undefined
  let done = false
  await mitmCase(t, 'replay', (chunk, sent, up) => {
    if (done) return chunk
    if (captured === undefined && sent > 10_000) captured = Buffer.from(chunk)
    else if (captured !== undefined && sent > 40_000) {
      done = true
      up.write(chunk)
      return captured // the earlier bytes again
    }
    return chunk
  })
})

t.test('man in the middle: dropping bytes (reordering the stream) is detected', async (t) => {
  let done = false
  await mitmCase(t, 'drop', (chunk, sent) => {
    if (done || sent < 30_000 || chunk.length < 400) return chunk
    done = true
    return Buffer.concat([chunk.subarray(100), chunk.subarray(0, 100)])
  })
})


t.test('signed broadcasts: verified on io threads, msg.signature forwardable, a bad signature closes the connection', async (t) => {
  const k = await keyedCluster(3, 'auth-signed')
  const [a, b] = await startPair(t, k)
  const honest = honestStream(t, b, a)
  const got: { payload: Buffer; signature: Buffer | undefined; from: number; routeId: number; id: number; incarnation: bigint }[] = []
  a.on('proof', (m) => got.push({ payload: Buffer.from(m.copy()), signature: m.signature ? Buffer.from(m.signature) : undefined, from: m.from, routeId: m.routeId, id: m.id, incarnation: m.incarnation ?? 0n }))
  b.broadcast('proof', 'commit 42', { sign: true })
  b.broadcast('proof', Buffer.alloc(200_000, 3), { sign: true })
  b.broadcast('proof', 'not signed')
  await until(() => got.length === 3, 5000, 'three broadcasts')
  t.equal(got[0]!.payload.toString(), 'commit 42', 'payload without the signature')
  t.equal(got[0]!.signature?.length, 64, 'msg.signature is there')
  t.equal(got[1]!.payload.length, 200_000, 'a large signed payload')
  t.equal(got[2]!.signature, undefined, 'an unsigned message has no signature')
  // Forwarded proofs check anywhere with the cluster config alone.
  const p0 = { from: 2, route: 'proof', id: got[0]!.id, incarnation: got[0]!.incarnation, payload: got[0]!.payload, signature: got[0]!.signature! }
  t.ok(verifySigned(k.cluster, p0), 'verifySigned: valid')
  t.ok(verifySigned(k.cluster, { ...p0, route: got[1]!.routeId, id: got[1]!.id, payload: got[1]!.payload, signature: got[1]!.signature! }), 'by route id too')
  t.notOk(verifySigned(k.cluster, { ...p0, payload: Buffer.from('commit 43') }), 'another payload fails')
  t.notOk(verifySigned(k.cluster, { ...p0, from: 3 }), 'another signer fails')
  t.notOk(verifySigned(k.cluster, { ...p0, route: 'other' }), 'another route fails')
  t.notOk(verifySigned(k.cluster, { ...p0, id: p0.id + 1 }), 'another message id fails (a replay under a fresh id)')
  t.notOk(verifySigned(k.cluster, { ...p0, incarnation: p0.incarnation + 1n }), 'another incarnation fails')

  // A Byzantine member (3) sends a frame flagged signed with a bad signature.
  const m = await connectAuthenticated({ port: a.port, clusterId: 'auth-signed', sender: 3, responder: 1, privateKey: k.keys[2]!.privateKey })
  const body = Buffer.concat([Buffer.from('forged proof'), Buffer.alloc(64, 9)])
  const f = dataFrame(3, 'proof', 1, body)
  f[13] = 0x01 // signed
  m.send([f])
  t.equal((await readReject(m.socket)).code, REJECT.BAD_SIGNATURE, 'a bad signature is refused (BAD_SIGNATURE)')
  m.close()

  // The member signs one message properly, then sends the same bytes again
  // under a fresh message id: the copy fails its signature (it covers the
  // id) before anything is delivered twice.
  const m2 = await connectAuthenticated({ port: a.port, clusterId: 'auth-signed', sender: 3, responder: 1, privateKey: k.keys[2]!.privateKey })
  const signedFrame = (id: number, sig: Buffer | undefined): Buffer => {
    const payload = Buffer.from('vote once')
    const trailer = Buffer.alloc(72)
    trailer.writeBigUInt64LE(m2.incarnation, 0)
    const signature = sig ?? sign(null, signedBytes('auth-signed', { from: 3, route: 'proof', id, incarnation: m2.incarnation, payload }), ed25519(k.keys[2]!.privateKey))
    signature.copy(trailer, 8)
    const fr = dataFrame(3, 'proof', id, Buffer.concat([payload, trailer]))
    fr[13] = 0x01
    return fr
  }
  const first = signedFrame(10, undefined)
  m2.send([first])
  await until(() => got.length === 4, 5000, 'the properly signed message')
  t.equal(got[3]!.payload.toString(), 'vote once', 'delivered once')
  t.ok(verifySigned(k.cluster, { from: 3, route: 'proof', id: got[3]!.id, incarnation: got[3]!.incarnation, payload: got[3]!.payload, signature: got[3]!.signature! }), 'and it verifies anywhere')
  m2.send([signedFrame(11, first.subarray(first.length - 64))])
  t.equal((await readReject(m2.socket)).code, REJECT.BAD_SIGNATURE, 'the same signature under a fresh id: BAD_SIGNATURE')
  m2.close()
  await honest.finish()
  t.equal(got.length, 4, 'the forged proof and the replay were not delivered')
  // Without keys there is nothing to sign with.
  const plain = await Replica.start({ id: 1, auth: 'none', cluster: { id: 'x', replicas: [{ id: 1, host: HOST, port: (await freePorts(1))[0]! }] } })
  t.throws(() => plain.broadcast('p', 'x', { sign: true }), { code: 'CONFIG_INVALID', field: 'auth' }, "sign: true needs auth 'mac'")
  t.throws(() => plain.send(1, 'p', 'x', { sign: true }), { code: 'CONFIG_INVALID', field: 'auth' }, "send's sign: true needs auth 'mac' too")
  await plain.close()
})

t.test('signed send and sendAsync (issue 13 item 4): one peer gets a signature it can forward', async (t) => {
  const k = await keyedCluster(3, 'auth-signed-send')
  const [a, b] = await startPair(t, k)
  const got: { payload: Buffer; signature: Buffer | undefined; id: number; incarnation: bigint }[] = []
  a.on('vote', (m) => got.push({ payload: Buffer.from(m.copy()), signature: m.signature ? Buffer.from(m.signature) : undefined, id: m.id, incarnation: m.incarnation ?? 0n }))
  t.equal(b.send(1, 'vote', 'yes on 7', { sign: true }), true, 'queued')
  await b.sendAsync(1, 'vote', Buffer.alloc(100_000, 5), { sign: true })
  b.send(1, 'vote', 'plain', { sign: false })
  await until(() => got.length === 3, 5000, 'three votes')
  t.equal(got[0]!.payload.toString(), 'yes on 7', 'payload without the signature')
  t.ok(verifySigned(k.cluster, { from: 2, route: 'vote', id: got[0]!.id, incarnation: got[0]!.incarnation, payload: got[0]!.payload, signature: got[0]!.signature! }), 'verifySigned: the signature of a send')
  t.ok(verifySigned(k.cluster, { from: 2, route: 'vote', id: got[1]!.id, incarnation: got[1]!.incarnation, payload: got[1]!.payload, signature: got[1]!.signature! }), 'and of a sendAsync')
  t.equal(got[2]!.signature, undefined, 'sign: false sends unsigned')
  t.throws(() => b.send(1, 'vote', 'x', { sign: 'yes' as unknown as boolean }), { code: 'INVALID_ARGUMENT', parameter: 'options.sign' }, 'sign must be a boolean')
  t.throws(() => b.send(1, 'vote', 'x', { signed: true } as unknown as { sign: boolean }), { code: 'CONFIG_INVALID' }, 'an unknown option key (with a suggestion)')
  t.throws(() => b.send(1, 'vote', Buffer.alloc(1024 * 1024), { sign: true }), { code: 'PAYLOAD_TOO_LARGE' }, 'a signed payload over the signing bound')
})

t.test('small receive buffers: batches are cut to fit (no stall), big frames still pass, and too few buffers are refused by name', async (t) => {
  const k = await keyedCluster(2, 'auth-small')
  const small = { receiveChunkBytes: 64 * 1024, maxChunksPerConnection: 6 }
  const [a, b] = await startPair(t, k, small)
  let got = 0
  let bytes = 0
  a.on('s', (m) => {
    got++
    bytes += m.size
  })
  // A staged burst of many small messages (one 1 MiB staging run) and big ones.
  for (let i = 0; i < 20_000; i++) b.send(1, 's', Buffer.alloc(40, i))
  for (let i = 0; i < 3; i++) b.send(1, 's', Buffer.alloc(2 * 1024 * 1024, i))
  await until(() => got === 20_003, 15_000, `every message (have ${got})`)
  t.equal(bytes, 20_000 * 40 + 3 * 2 * 1024 * 1024, 'every byte')
  const err = await Replica.start({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, receiveChunkBytes: 64 * 1024, maxChunksPerConnection: 4 }).then(
    (r) => r.close().then(() => undefined),
    (e: unknown) => e,
  )
  t.ok(err instanceof ConfigError && err.field === 'maxChunksPerConnection', `too few receive buffers for a sealed batch: ${String(err)}`)
})

t.test('signed floods from two peers: verified off the io threads, in order per peer, nothing lost', async (t) => {
  // Each peer sends signed and unsigned messages back to back, far faster
  // than the receiver verifies: its connection fills its verification
  // window (128 frames) again and again, is paused, and resumes.
  const k = await keyedCluster(3, 'auth-signed-flood')
  const rs = await Promise.all([0, 1, 2].map((i) => Replica.start({ id: i + 1, cluster: k.cluster, privateKey: k.keys[i]!.privateKey })))
  for (const r of rs) t.teardown(() => r.close({ timeoutMs: 0 }))
  await Promise.all(rs.map((r, i) => r.waitForPeers([1, 2, 3].filter((id) => id !== i + 1))))
  const next = new Map<number, number>([[2, 0], [3, 0]])
  let bad = 0
  let signed = 0
  rs[0]!.on('f', (m) => {
    const n = new DataView(m.payload.buffer, m.payload.byteOffset, 4).getUint32(0, true)
    if (n !== next.get(m.from)) bad++
    next.set(m.from, n + 1)
    const wantSigned = n % 3 !== 2
    if (wantSigned !== (m.signature !== undefined)) bad++
    if (m.signature) signed++
  })
  const per = 3000
  await Promise.all(
    rs.slice(1).map(async (r) => {
      for (let n = 0; n < per; n++) {
        const body = Buffer.alloc(40)
        body.writeUInt32LE(n, 0)
        while (!r.send(1, 'f', body, n % 3 !== 2 ? { sign: true } : {})) await new Promise((res) => r.events.once('drain', res))
      }
    }),
  )
  await until(() => next.get(2) === per && next.get(3) === per, 30_000, `${per} messages from each peer`)
  t.equal(bad, 0, 'in order per peer, each signed exactly when sent signed')
  t.equal(signed, 2 * (per - per / 3), `${signed} signatures verified`)
  t.equal(rs[0]!.stats().rejects, 0, 'nothing refused')
})
