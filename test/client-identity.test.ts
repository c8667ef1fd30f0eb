// Client identities (issue 12 item 1, PROTOCOL.md §6a), through the public
// API over real sockets on 127.0.0.1, and raw keyed clients that misbehave:
// handlers see the key a client proved and nothing else; clientAuth 'key'
// refuses clients without one; allowClient decides before any request is
// read (false, a throw, a non-boolean, a promise, one that never settles);
// a client naming a key it cannot prove, a tampered, replayed or unsealed
// batch, and a client that checks the replica's key; per-key connection
// and in-flight bounds.
import { Socket } from 'node:net'

import t from 'tap'

import { type ClientKeyPair, type KeyedSession, clientKeyPair, finishKeyed, keyedHello } from '../lib/client-auth.js'
import { readWelcome } from '../lib/client-handshake.js'
import { decodeKey } from '../lib/config.js'
import * as wire from '../lib/wire.js'

import { Client, Replica, type RequestContext, type RejectInfo, clientIdOf, generateKeyPair } from 'nexres-rpc'

import { HOST, connectClient, expectReject, sleep, startServer, utf8, within } from './client-support.js'
import { type Tap, freePorts, timeBound, until } from './helpers.js'

const key = (): { publicKey: string; privateKey: string } => generateKeyPair()

/** A raw keyed client: handshake done by hand, its session for sealing batches. */
interface Raw {
  s: Socket
  session: KeyedSession
  /** Everything the replica sent after its CLIENT_WELCOME. */
  received: () => Buffer
  closed: Promise<void>
}

async function rawKeyed(t: Tap, port: number, pair: ClientKeyPair, tamper?: { signWith?: ClientKeyPair }): Promise<Raw> {
  const s = new Socket()
  t.teardown(() => s.destroy())
  const chunks: Buffer[] = []
  const closed = new Promise<void>((r) => s.once('close', () => r()))
  s.on('error', () => {})
  await new Promise<void>((r) => s.connect(port, HOST, () => r()))
  const h = keyedHello('', pair, false)
  s.write(h.hello)
  s.on('data', (d: Buffer) => chunks.push(d))
  let session: KeyedSession | undefined
  await until(() => {
    const b = Buffer.concat(chunks)
    const w = readWelcome(b, { host: HOST, port }, false, '')
    if (w === undefined || w instanceof Error || w.proof === undefined) return false
    const made = finishKeyed(h, tamper?.signWith ?? pair, w.proof, undefined, false)
    if (typeof made === 'string') throw new Error(made)
    session = made
    chunks.splice(0, chunks.length, b.subarray(w.end))
    return true
  }, timeBound(5000), 'the CLIENT_WELCOME')
  s.write(session!.authFrame)
  return { s, session: session!, received: () => Buffer.concat(chunks), closed }
}

function request(route: string, id: number, body: string): Buffer {
  const b = Buffer.from(body)
  const h = Buffer.alloc(wire.HEADER_BYTES)
  h.writeUInt32LE(b.length, wire.OFFSET_LENGTH)
  h.writeUInt32LE(routeIdOf(route), wire.OFFSET_ROUTE)
  h[wire.OFFSET_KIND] = wire.KIND_REQUEST
  h.writeUInt32LE(id, wire.OFFSET_MSG_ID)
  return Buffer.concat([h, b])
}

function routeIdOf(name: string): number {
  let h = 0x811c9dc5
  for (const c of Buffer.from(name)) h = Math.imul(h ^ c, 0x01000193) >>> 0
  return h
}

/** Reject reason codes the replica reports. */
function rejects(r: { events: { on(e: 'reject', f: (i: RejectInfo) => void): unknown } }): RejectInfo[] {
  const out: RejectInfo[] = []
  r.events.on('reject', (i) => out.push(i))
  return out
}

t.test('a handler sees the key its client proved; clients without one have none', async (t) => {
  const server = await startServer(t)
  server.replica.handle('who', (_req, ctx) => `${ctx.client.id ?? '-'} ${ctx.client.publicKey === undefined ? '-' : clientIdOf(ctx.client.publicKey)}`)
  const keys = Array.from({ length: 12 }, key)
  const clients = await Promise.all(keys.map((k) => connectClient(t, { ...server.endpoint, privateKey: k.privateKey })))
  const plain = await connectClient(t, server.endpoint)
  // Many calls from every client at once: each sees only its own key.
  const answers = await Promise.all(clients.flatMap((c, i) => Array.from({ length: 50 }, () => c.call('who', '').then((r) => [i, utf8(r)] as const))))
  let wrong = 0
  for (const [i, a] of answers) if (a !== `${keys[i]!.publicKey} ${keys[i]!.publicKey}`) wrong++
  t.equal(wrong, 0, `600 calls from 12 keyed clients: each handler saw its caller's id and key`)
  t.equal(utf8(await plain.call('who', '')), '- -', 'a client without a key: ctx.client.id and publicKey undefined')
  t.equal(clientIdOf(decodeKey('k', keys[0]!.publicKey)), keys[0]!.publicKey, "clientIdOf(publicKey) is generateKeyPair()'s publicKey string")
})

t.test("clientAuth 'key' refuses clients without a key, with the reason", async (t) => {
  const server = await startServer(t, { clientAuth: 'key' })
  server.replica.handle('echo', (req) => req)
  await expectReject(t, Client.connect({ ...server.endpoint, connectTimeoutMs: timeBound(5000) }), { code: 'CONNECTION_LOST', message: /BAD_AUTH.*clientAuth 'key'/ }, timeBound(10_000), 'a client without a key')
  const k = key()
  const c = await connectClient(t, { ...server.endpoint, privateKey: k.privateKey })
  t.equal(utf8(await c.call('echo', 'hi')), 'hi', 'a keyed client is served')
})

t.test('allowClient decides before any request is read', async (t) => {
  const allowed = key()
  const slowKey = key()
  const neverKey = key()
  const throwsKey = key()
  const oddKey = key()
  let handled = 0
  const asked: string[] = []
  const server = await startServer(t, {
    handshakeTimeoutMs: timeBound(1500),
    allowClient: (publicKey, info) => {
      asked.push(info.id)
      t.equal(clientIdOf(publicKey), info.id, 'allowClient gets the key and its id')
      t.match(info.address, /^127\.0\.0\.1:\d+$/, 'and the address')
      if (info.id === allowed.publicKey) return true
      if (info.id === slowKey.publicKey) return sleep(50).then(() => true)
      if (info.id === neverKey.publicKey) return new Promise<boolean>(() => {})
      if (info.id === throwsKey.publicKey) throw new Error('policy store down')
      if (info.id === oddKey.publicKey) return 'yes' as unknown as boolean
      return false
    },
  })
  const errors: unknown[] = []
  server.replica.events.on('error', (e) => errors.push(e))
  server.replica.handle('count', () => {
    handled++
    return 'ok'
  })
  const c = await connectClient(t, { ...server.endpoint, privateKey: allowed.privateKey })
  t.equal(utf8(await c.call('count', '')), 'ok', 'allowed: served')
  const slow = await connectClient(t, { ...server.endpoint, privateKey: slowKey.privateKey })
  t.equal(utf8(await slow.call('count', '')), 'ok', 'allowed by a promise: served')
  handled = 0
  for (const [what, k, re] of [
    ['refused (false)', key(), /BAD_AUTH: allowClient refused client/],
    ['allowClient throws', throwsKey, /BAD_AUTH: allowClient failed/],
    ["allowClient returns 'yes'", oddKey, /BAD_AUTH: allowClient returned string "yes"/],
    ['allowClient never settles', neverKey, /HANDSHAKE_TIMEOUT/],
  ] as const) {
    await expectReject(t, Client.connect({ ...server.endpoint, privateKey: k.privateKey, connectTimeoutMs: timeBound(5000) }), { code: 'CONNECTION_LOST', message: re }, timeBound(10_000), what)
  }
  t.ok(errors.some((e) => (e as Error).message === 'policy store down'), "allowClient's throw is the replica's 'error' event")
  // A raw client pipelines requests right after its AUTH frame: refused, none ran.
  const refusedPair = clientKeyPair(decodeKey('k', key().privateKey))
  const raw = await rawKeyed(t, server.endpoint.port, refusedPair)
  const batch = Buffer.concat(Array.from({ length: 20 }, (_, i) => request('count', i + 1, 'x')))
  raw.s.write(Buffer.concat([batch, raw.session.sealer.seal([batch])]))
  await within(raw.closed, timeBound(5000), 'the refused raw client is closed')
  await sleep(50)
  t.equal(handled, 0, 'no request of a refused client reached a handler')
})

t.test('a client that names a key it cannot prove is refused BAD_AUTH; others go on', async (t) => {
  const server = await startServer(t)
  const seen = rejects(server.replica)
  server.replica.handle('echo', (req) => req)
  const honest = await connectClient(t, { ...server.endpoint, privateKey: key().privateKey })
  const victim = clientKeyPair(decodeKey('k', key().privateKey))
  const attacker = clientKeyPair(decodeKey('k', key().privateKey))
  const raws = await Promise.all(Array.from({ length: 20 }, () => rawKeyed(t, server.endpoint.port, victim, { signWith: attacker })))
  await Promise.all(raws.map((r, i) => within(r.closed, timeBound(5000), `impostor ${i} closed`)))
  await until(() => seen.filter((r) => r.code === 'BAD_AUTH').length >= 20, timeBound(5000), 'BAD_AUTH reported for each impostor')
  t.match(seen.find((r) => r.code === 'BAD_AUTH')?.message, /does not hold the private key/, 'the reason says why')
  t.equal(utf8(await honest.call('echo', 'still here')), 'still here', 'the honest keyed client is served throughout')
})

t.test('tampered, replayed and unsealed batches close only that connection (BAD_MAC)', async (t) => {
  const server = await startServer(t)
  const seen = rejects(server.replica)
  let handled = 0
  server.replica.handle('echo', (req) => {
    handled++
    return req
  })
  const honest = await connectClient(t, { ...server.endpoint, privateKey: key().privateKey })
  const pair = clientKeyPair(decodeKey('k', key().privateKey))

  // A flipped byte in a request's body.
  const a = await rawKeyed(t, server.endpoint.port, pair)
  const batch = request('echo', 1, 'hello')
  const seal = a.session.sealer.seal([batch])
  const bad = Buffer.from(batch)
  bad[bad.length - 1]! ^= 1
  a.s.write(Buffer.concat([bad, seal]))
  await within(a.closed, timeBound(5000), 'tampered: closed')

  // A good batch, then the same bytes again (a replay).
  const b = await rawKeyed(t, server.endpoint.port, pair)
  const one = request('echo', 7, 'once')
  const sealed = Buffer.concat([one, b.session.sealer.seal([one])])
  b.s.write(sealed)
  await until(() => b.received().length > 0, timeBound(5000), 'the first batch answered')
  b.s.write(sealed)
  await within(b.closed, timeBound(5000), 'replayed: closed')

  // Requests that never get a SEAL: held, never handled, then refused past the bound.
  const c = await rawKeyed(t, server.endpoint.port, pair)
  const before = handled
  c.s.write(request('echo', 9, 'x'.repeat(1000)))
  await sleep(100)
  t.equal(handled, before, 'an unsealed request is not handled')
  for (let i = 0; i < 100 && !c.s.destroyed; i++) c.s.write(request('echo', 100 + i, 'y'.repeat(1000)))
  await within(c.closed, timeBound(10_000), 'unsealed past the bound: closed').catch((e: unknown) => {
    t.comment(`DIAG destroyed=${c.s.destroyed} written=${c.s.bytesWritten} clients=${JSON.stringify(server.replica.stats().clients)} rejects=${JSON.stringify(seen)}`)
    throw e
  })
  await until(() => seen.filter((r) => r.code === 'BAD_MAC').length >= 3, timeBound(5000), 'three BAD_MAC reports')
  t.ok(seen.some((r) => /without a SEAL/.test(r.message)), 'the unsealed one: "too much data without a SEAL"')
  t.equal(handled, 1, 'of all these, only the one good batch was handled (once)')
  t.equal(utf8(await honest.call('echo', 'ok')), 'ok', 'the honest keyed client is unaffected')
})

t.test("a client given the replica's key checks that the replica proves it", async (t) => {
  const rk = key()
  const other = key()
  const [port] = await freePorts(1)
  const replica = await Replica.start({ id: 1, cluster: { id: 'keyed', replicas: [{ id: 1, host: HOST, port: port!, clientPort: 0, publicKey: rk.publicKey }] }, privateKey: rk.privateKey })
  t.teardown(() => replica.close({ timeoutMs: 0 }))
  const server = { endpoint: { host: HOST, port: replica.clientPort! } }
  replica.handle('echo', (req) => req)
  const me = key()
  const c = await connectClient(t, { ...server.endpoint, privateKey: me.privateKey, publicKey: rk.publicKey })
  t.equal(utf8(await c.call('echo', 'x')), 'x', 'the right replica key: served')
  await expectReject(t, Client.connect({ ...server.endpoint, privateKey: me.privateKey, publicKey: other.publicKey }), { code: 'CONNECTION_LOST', message: /did not prove the key/ }, timeBound(10_000), 'a wrong replica key')
  const plainServer = await startServer(t)
  await expectReject(t, Client.connect({ ...plainServer.endpoint, privateKey: me.privateKey, publicKey: rk.publicKey }), { code: 'CONNECTION_LOST', message: /no key to prove itself/ }, timeBound(10_000), "a replica with auth 'none' cannot prove a key")
})

t.test('per-key bounds: connections, and requests in flight over all connections', async (t) => {
  const server = await startServer(t, { maxClientKeyConnections: 3, maxClientKeyInFlight: 16 })
  const held: RequestContext[] = []
  let peak = 0
  server.replica.handle('hold', (_req, ctx) => {
    held.push(ctx)
    peak = Math.max(peak, held.length)
  })
  const k = key()
  const cs = await Promise.all([0, 1, 2].map(() => connectClient(t, { ...server.endpoint, privateKey: k.privateKey })))
  await expectReject(t, Client.connect({ ...server.endpoint, privateKey: k.privateKey }), { code: 'CONNECTION_LOST', message: /TOO_MANY_CONNECTIONS.*maxClientKeyConnections/ }, timeBound(10_000), 'a fourth connection of one key')
  const otherKey = await connectClient(t, { ...server.endpoint, privateKey: key().privateKey })
  server.replica.handle('echo', (req) => req)
  t.equal(utf8(await otherKey.call('echo', 'x')), 'x', 'another key still connects and is served')
  // Calls one per turn of the event loop (a batch each), 3 connections x 60.
  const calls: Promise<Uint8Array>[] = []
  for (let i = 0; i < 60; i++) {
    for (const c of cs) calls.push(c.call('hold', String(i)))
    await new Promise((r) => setImmediate(r))
  }
  await sleep(200)
  t.ok(held.length >= 16, `the key got its share (${held.length} requests in handlers)`)
  t.ok(peak <= 16 + 3, `at most maxClientKeyInFlight plus a batch per connection in handlers (peak ${peak})`)
  t.equal(utf8(await otherKey.call('echo', 'y')), 'y', 'another key is served while this one is at its bound')
  // Answering brings the rest in: nothing is lost or stuck.
  let answered = 0
  while (answered < 180) {
    await until(() => held.length > 0, timeBound(5000), () => `more held requests (${answered} answered)`)
    for (const ctx of held.splice(0)) {
      ctx.reply('done')
      answered++
    }
  }
  const out = await within(Promise.all(calls), timeBound(10_000), 'all 180 calls')
  t.equal(out.length, 180, 'all 180 calls answered')
})
