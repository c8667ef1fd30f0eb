// Encrypted client connections (issue 13 item 1, PROTOCOL.md §6b), through
// the public API over real sockets on 127.0.0.1: a client with `seal: true`
// (with or without a key) gets ephemeral session keys and every batch both
// ways is encrypted; a proxy in the middle records the bytes both ways and
// finds no payload in them (without seal it does: the check can fail);
// altered ciphertext in either direction closes that connection only;
// clientSeal 'required' refuses clients that do not seal.
import t from 'tap'

import { Client, ConfigError, Replica, type RequestContext, clientIdOf, generateKeyPair } from 'nexres-rpc'

import { FaultProxy } from './fault-proxy.js'
import { HOST, connectClient, expectReject, startServer, utf8, within } from './client-support.js'
import { type Tap, freePorts, timeBound, until } from './helpers.js'

const MARKER = 'SECRET-MARKER'

interface Recorded {
  proxy: FaultProxy
  up: () => Buffer
  down: () => Buffer
}

async function recorder(t: Tap, port: number): Promise<Recorded> {
  const up: Buffer[] = []
  const down: Buffer[] = []
  const proxy = await FaultProxy.open(t, port, (chunk) => {
    up.push(Buffer.from(chunk))
    return chunk
  })
  proxy.tamperBack = (chunk) => {
    down.push(Buffer.from(chunk))
    return chunk
  }
  return { proxy, up: () => Buffer.concat(up), down: () => Buffer.concat(down) }
}

// Calls carrying MARKER (small ones, 200 KiB ones sent by reference), each
// answered with its request and MARKER again; a push carrying it too.
async function markedCalls(t: Tap, c: Client, n: number): Promise<void> {
  const calls: Promise<Uint8Array>[] = []
  for (let i = 0; i < n; i++) {
    const body = i % 25 === 0 ? Buffer.concat([Buffer.from(`${MARKER} ${i} `), Buffer.alloc(200_000, MARKER)]) : Buffer.from(`${MARKER} ${i}`)
    calls.push(c.call('echo', body))
  }
  const out = await within(Promise.all(calls), timeBound(20_000), `${n} calls`)
  t.ok(
    out.every((r, i) => utf8(r.subarray(0, 40)).startsWith(`${MARKER} ${i}`) && r.length === (i % 25 === 0 ? 200_000 + `${MARKER} ${i} `.length : `${MARKER} ${i}`.length)),
    `all ${n} calls answered with their own bytes`,
  )
}

t.test("seal: nothing of requests or replies is on the wire, with or without a key; without seal it is", async (t) => {
  const server = await startServer(t, { clientSeal: 'required' })
  server.replica.handle('echo', (req) => req)
  const who: (string | undefined)[] = []
  server.replica.handle('who', (_req, ctx: RequestContext) => {
    who.push(ctx.client.id)
    return `${MARKER} for ${ctx.client.id ?? 'anonymous'}`
  })
  for (const withKey of [false, true]) {
    const rec = await recorder(t, server.endpoint.port)
    const k = generateKeyPair()
    const c = await connectClient(t, { host: HOST, port: rec.proxy.port, seal: true, ...(withKey ? { privateKey: k.privateKey } : {}) })
    await markedCalls(t, c, 300)
    t.match(utf8(await c.call('who', '')), new RegExp(`^${MARKER} for `), 'a reply names the caller')
    t.equal(who.at(-1), withKey ? clientIdOf(Buffer.from(k.publicKey, 'base64url')) : undefined, withKey ? 'ctx.client.id is the key it proved' : 'no key: no ctx.client.id')
    const up = rec.up()
    const down = rec.down()
    t.ok(up.length > 1_000_000 && down.length > 1_000_000, `the proxy saw the traffic (${up.length} bytes up, ${down.length} down)`)
    t.equal(up.indexOf(MARKER), -1, `${withKey ? 'with' : 'without'} a key: no request byte in clear`)
    t.equal(down.indexOf(MARKER), -1, `${withKey ? 'with' : 'without'} a key: no reply byte in clear`)
    await c.close()
  }
  // The same calls unsealed, to a replica that does not require seal.
  const open = await startServer(t)
  open.replica.handle('echo', (req) => req)
  const rec = await recorder(t, open.endpoint.port)
  const c = await connectClient(t, { host: HOST, port: rec.proxy.port })
  await markedCalls(t, c, 50)
  t.ok(rec.up().indexOf(MARKER) >= 0 && rec.down().indexOf(MARKER) >= 0, 'without seal the same requests and replies are readable on the wire')
})

t.test("clientSeal 'required' refuses clients that do not seal; options are checked", async (t) => {
  const server = await startServer(t, { clientSeal: 'required' })
  server.replica.handle('echo', (req) => req)
  await expectReject(t, Client.connect({ ...server.endpoint, connectTimeoutMs: timeBound(5000) }), { code: 'CONNECTION_LOST', message: /BAD_AUTH.*clientSeal 'required'/ }, timeBound(10_000), 'a client without seal')
  const k = generateKeyPair()
  await expectReject(t, Client.connect({ ...server.endpoint, privateKey: k.privateKey, connectTimeoutMs: timeBound(5000) }), { code: 'CONNECTION_LOST', message: /BAD_AUTH.*clientSeal 'required'/ }, timeBound(10_000), 'a keyed client without seal')
  const keyOnly = await startServer(t, { clientAuth: 'key' })
  await expectReject(t, Client.connect({ ...keyOnly.endpoint, seal: true, connectTimeoutMs: timeBound(5000) }), { code: 'CONNECTION_LOST', message: /BAD_AUTH.*clientAuth 'key'/ }, timeBound(10_000), "a sealed client without a key at clientAuth 'key'")
  // Wrong types, named.
  await t.rejects(Client.connect({ ...server.endpoint, seal: 'yes' as unknown as boolean }), { code: 'CONFIG_INVALID', field: 'seal' }, "seal: 'yes' is CONFIG_INVALID on seal")
  const err = await startServer(t, { clientSeal: 'always' as unknown as 'required' }).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(err instanceof ConfigError && err.field === 'clientSeal', `clientSeal 'always': CONFIG_INVALID on clientSeal (${String(err)})`)
})

t.test('seal with the replica key: the client checks the replica; a wrong key is refused', async (t) => {
  const rk = generateKeyPair()
  const [port] = await freePorts(1)
  const other = generateKeyPair()
  const cluster = { id: 'seal-key', replicas: [{ id: 1, host: HOST, port: port!, clientPort: 0, publicKey: rk.publicKey }, { id: 2, host: HOST, port: port! + 1, publicKey: other.publicKey }] }
  const r = await Replica.start({ id: 1, cluster, privateKey: rk.privateKey, auth: 'seal' })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  r.handle('echo', (req) => req)
  const c = await connectClient(t, { host: HOST, port: r.clientPort!, seal: true, publicKey: rk.publicKey })
  t.equal(utf8(await c.call('echo', 'checked')), 'checked', 'served once the replica proved its key')
  await expectReject(t, Client.connect({ host: HOST, port: r.clientPort!, seal: true, publicKey: other.publicKey }), { code: 'CONNECTION_LOST', message: /did not prove the key/ }, timeBound(10_000), 'a replica that cannot prove the key the client holds')
})

t.test('altered ciphertext either way closes that connection only; other clients go on', async (t) => {
  const server = await startServer(t, { clientSeal: 'required' })
  server.replica.handle('echo', (req) => req)
  const bystander = await connectClient(t, { ...server.endpoint, seal: true })
  for (const direction of ['up', 'down'] as const) {
    let armed = false
    let done = false
    const proxy = await FaultProxy.open(t, server.endpoint.port)
    const flip = (chunk: Buffer): Buffer => {
      if (!armed || done || chunk.length < 64) return chunk
      done = true
      const c = Buffer.from(chunk)
      c[c.length - 20]! ^= 0x04
      return c
    }
    if (direction === 'up') proxy.tamper = flip
    else proxy.tamperBack = flip
    const c = await connectClient(t, { host: HOST, port: proxy.port, seal: true })
    t.equal(utf8(await c.call('echo', 'before')), 'before', `${direction}: served before the tampering`)
    const lost = new Promise<string>((r) => c.events.once('disconnect', (_ep: unknown, why: string) => r(why)))
    armed = true
    const calls = Array.from({ length: 20 }, (_, i) => c.call('echo', Buffer.alloc(1000, i)).then(() => 'ok', (e: { code?: string }) => e.code ?? 'error'))
    const why = await within(lost, timeBound(10_000), `${direction}: the connection to close`)
    t.pass(`${direction}: the connection closed (${why})`)
    const outcomes = await Promise.all(calls)
    t.ok(outcomes.every((o) => o === 'ok' || o === 'CONNECTION_LOST'), `${direction}: calls answered or failed CONNECTION_LOST, none answered wrong (${[...new Set(outcomes)].join(', ')})`)
    if (direction === 'up') await until(() => (server.replica.stats().rejectsByReason.BAD_MAC ?? 0) > 0, timeBound(5000), 'the replica to refuse with BAD_MAC')
  }
  t.equal(utf8(await bystander.call('echo', 'still here')), 'still here', 'another sealed client is still served')
})

t.test('seal: pushes and replyTo reach a sealed client, encrypted', async (t) => {
  const server = await startServer(t, { clientSeal: 'required' })
  const k = generateKeyPair()
  let id = ''
  server.replica.handle('hello', (_req, ctx) => {
    id = ctx.client.id!
    return 'hi'
  })
  const rec = await recorder(t, server.endpoint.port)
  const c = await connectClient(t, { host: HOST, port: rec.proxy.port, seal: true, privateKey: k.privateKey })
  const got: string[] = []
  c.on('news', (payload) => got.push(utf8(payload)))
  t.equal(utf8(await c.call('hello', '')), 'hi', 'served')
  let pushed = 0
  for (let i = 0; i < 100; i++) if (server.replica.push(id, 'news', `${MARKER} ${i}`)) pushed++
  t.equal(pushed, 100, 'every push accepted')
  await until(() => got.length === 100, timeBound(10_000), '100 pushes')
  t.ok(got.every((g, i) => g === `${MARKER} ${i}`), 'pushes in order, intact')
  t.equal(rec.down().indexOf(MARKER), -1, 'no push byte in clear')
})
