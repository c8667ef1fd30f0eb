// Quorum calls to a cluster in which up to f replicas may lie (issue 12):
// Client.connect({ replicas, f }) keeps a connection to every replica;
// call(..., { quorum }) resolves with the reply that `quorum` distinct
// replicas returned equal and rejects with NO_QUORUM (QuorumError, what
// each replica answered) once that cannot happen. Four real replicas on
// 127.0.0.1, f = 1; liars, dead and silent replicas, 'leader' mode,
// derived keys, typed services and wrong arguments.
import t from 'tap'

import { Client, ConfigError, InvalidArgumentError, QuorumError, Replica, type RequestContext, codecs, defineService } from 'nexres-rpc'

import { type Tap, freePorts, until } from './helpers.js'

const HOST = '127.0.0.1'

interface Node {
  replica: Replica
  /** Requests its 'get' handler saw. */
  seen: number
}

/** Four replicas (one cluster), each answering 'get' with `answer(id)`; 'hold' never answers. */
async function cluster(t: Tap, name: string, answer: (id: number, req: Uint8Array) => string): Promise<{ nodes: Node[]; endpoints: { host: string; port: number }[] }> {
  const ports = await freePorts(4)
  const config = { id: name, replicas: ports.map((port, i) => ({ id: i + 1, host: HOST, port, clientPort: 0 })) }
  const nodes: Node[] = []
  for (let id = 1; id <= 4; id++) {
    const replica = await Replica.start({ auth: 'none', id, cluster: config })
    t.teardown(() => replica.close({ timeoutMs: 0 }))
    const node: Node = { replica, seen: 0 }
    replica.handle('get', (req) => {
      node.seen++
      return answer(id, req)
    })
    const held: RequestContext[] = []
    replica.handle('hold', (_req, ctx) => {
      held.push(ctx)
    })
    nodes.push(node)
  }
  return { nodes, endpoints: nodes.map((n) => ({ host: HOST, port: n.replica.clientPort! })) }
}

async function connect(t: Tap, endpoints: { host: string; port: number }[], extra: Record<string, unknown> = {}): Promise<Client> {
  const c = await Client.connect({ replicas: endpoints, f: 1, connectTimeoutMs: 5000, ...extra })
  t.teardown(() => c.close())
  return c
}

const text = (b: Uint8Array): string => Buffer.from(b).toString()

t.test('one liar of four: the f + 1 equal replies win, every time', async (t) => {
  const { endpoints } = await cluster(t, 'q-liar', (id, req) => (id === 2 ? 'lie' : `v:${text(req)}`))
  const c = await connect(t, endpoints)
  for (let i = 0; i < 50; i++) t.equal(text(await c.call('get', `k${i}`, { quorum: 2 })), `v:k${i}`)
  t.equal(text(await c.call('get', 'x')), 'v:x', 'without quorum: one replica (the leader, honest here)')
  t.equal(text(await c.call('get', 'y', { quorum: 3 })), 'v:y', 'quorum 3 of the three honest ones')
})

t.test('conflicting replies: NO_QUORUM with what each replica answered', async (t) => {
  // Every replica answers differently: no two agree.
  const { endpoints } = await cluster(t, 'q-conflict', (id) => `r${id}`)
  const c = await connect(t, endpoints)
  const err = await c.call('get', 'k', { quorum: 2 }).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(err instanceof QuorumError, 'a QuorumError')
  const q = err as QuorumError
  t.equal(q.code, 'NO_QUORUM')
  t.equal(q.quorum, 2)
  t.same(q.replies.map((r) => (r.reply === undefined ? undefined : text(r.reply))), ['r1', 'r2', 'r3', 'r4'], 'every reply, in the order of replicas')
  t.same(q.replies.map((r) => r.replica.port), endpoints.map((e) => e.port), 'each names its replica')
  t.match(q.stack, /client-quorum\.test/, 'the stack shows the call site')
})

t.test('a dead replica and a liar: f + 1 honest replies still make the quorum; two dead make it impossible', async (t) => {
  const { nodes, endpoints } = await cluster(t, 'q-dead', (id) => (id === 3 ? 'lie' : 'ok'))
  const c = await connect(t, endpoints, { reconnect: { minMs: 10, maxMs: 50 } })
  await nodes[0]!.replica.close({ timeoutMs: 0 })
  t.equal(text(await c.call('get', 'k', { quorum: 2 })), 'ok', 'replicas 2 and 4 agree')
  await nodes[3]!.replica.close({ timeoutMs: 0 })
  const err = (await c.call('get', 'k', { quorum: 2 }).catch((e: unknown) => e)) as QuorumError
  t.equal(err.code, 'NO_QUORUM', 'one honest reply left: no quorum')
  const errors = err.replies.filter((r) => r.error !== undefined).map((r) => (r.error as { code?: string }).code)
  t.same(errors, ['CONNECTION_LOST', 'CONNECTION_LOST'], 'the two dead replicas failed with CONNECTION_LOST')
  t.same(err.replies.filter((r) => r.reply !== undefined).map((r) => text(r.reply!)).sort(), ['lie', 'ok'], 'the two live ones answered')
})

t.test('silent replicas: NO_QUORUM once timeoutMs has passed, each named with TIMEOUT', async (t) => {
  const { endpoints } = await cluster(t, 'q-silent', () => 'ok')
  const c = await connect(t, endpoints)
  const err = (await c.call('hold', 'k', { quorum: 2, timeoutMs: 200 }).catch((e: unknown) => e)) as QuorumError
  t.equal(err.code, 'NO_QUORUM')
  // Decided as soon as 3 of 4 timed out (the 4th cannot make 2): it may still be pending then.
  const codes = err.replies.map((r) => (r.error as { code?: string } | undefined)?.code)
  t.ok(codes.filter((x) => x === 'TIMEOUT').length >= 3 && codes.every((x) => x === 'TIMEOUT' || x === undefined), `TIMEOUT for each replica that ran out (${codes.join(', ')})`)
  t.ok(err.replies.every((r) => r.reply === undefined), 'no reply from any')
  await until(() => c.inFlight === 0, 5000, 'nothing left in flight')
  t.pass('nothing left in flight')
})

t.test("to 'leader': replicas are asked one at a time, only as many as the quorum needs; a liar makes it ask one more", async (t) => {
  const { nodes, endpoints } = await cluster(t, 'q-leader', (id) => (id === 1 ? 'lie' : 'ok'))
  const c = await connect(t, endpoints)
  t.equal(text(await c.call('get', 'k', { quorum: 2, to: 'leader' })), 'ok')
  t.same(nodes.map((n) => n.seen), [1, 1, 1, 0], 'replica 1 (leader) lied, 2 and 3 agreed, 4 was never asked')
  for (const n of nodes) n.seen = 0
  await c.call('get', 'k', { quorum: 2, to: 'all' })
  await until(() => nodes.every((n) => n.seen === 1), 5000, () => `every replica asked (${nodes.map((n) => n.seen).join(', ')})`)
  t.pass("to 'all' asks every replica")
})

t.test('key(reply): replies compared by a derived key; the first reply of the winning group is returned', async (t) => {
  // Replicas add their id after the value: equal by key, not by bytes.
  const { endpoints } = await cluster(t, 'q-key', (id) => (id === 4 ? 'other#4' : `same#${id}`))
  const c = await connect(t, endpoints)
  const err = (await c.call('get', 'k', { quorum: 2 }).catch((e: unknown) => e)) as QuorumError
  t.equal(err.code, 'NO_QUORUM', 'byte-equal: no two agree')
  const reply = text(await c.call('get', 'k', { quorum: 3, key: (r) => text(r).split('#')[0]! }))
  t.match(reply, /^same#[123]$/, `three agree by key (${reply})`)
  const thrown = (await c.call('get', 'k', { quorum: 2, key: () => { throw new Error('bad key') } }).catch((e: unknown) => e)) as QuorumError
  t.equal(thrown.code, 'NO_QUORUM', 'a key function that throws counts as that replica failing')
  t.ok(thrown.replies.some((r) => /bad key/.test(r.error?.message ?? '')), 'its error is the key function\'s')
})

t.test('typed services with a quorum', async (t) => {
  const KV = defineService('kv', { get: { request: codecs.text, response: codecs.text } })
  const ports = await freePorts(4)
  const config = { id: 'q-typed', replicas: ports.map((port, i) => ({ id: i + 1, host: HOST, port, clientPort: 0 })) }
  const endpoints: { host: string; port: number }[] = []
  for (let id = 1; id <= 4; id++) {
    const r = await Replica.start({ auth: 'none', id, cluster: config })
    t.teardown(() => r.close({ timeoutMs: 0 }))
    r.serve(KV, { get: (k) => (id === 4 ? 'lie' : `value of ${k}`) })
    endpoints.push({ host: HOST, port: r.clientPort! })
  }
  const c = await connect(t, endpoints)
  const kv = c.service(KV, { quorum: 3 })
  t.equal(await kv.get('a'), 'value of a')
  t.equal(await kv.get('b', { quorum: 2 }), 'value of b', 'a call may set its own quorum')
})

t.test('abort and close', async (t) => {
  const { endpoints } = await cluster(t, 'q-abort', () => 'ok')
  const c = await connect(t, endpoints)
  const ac = new AbortController()
  const p = c.call('hold', 'k', { quorum: 2, signal: ac.signal })
  ac.abort()
  t.equal(((await p.catch((e: unknown) => e)) as { code?: string }).code, 'ABORTED')
  t.equal(((await c.call('get', 'k', { quorum: 2, signal: AbortSignal.abort() }).catch((e: unknown) => e)) as { code?: string }).code, 'ABORTED', 'an aborted signal: at once')
  const pending = c.call('hold', 'k', { quorum: 2 }).catch((e: unknown) => e)
  await c.close()
  const closed = (await pending) as QuorumError
  t.equal(closed.code, 'NO_QUORUM', 'close() fails a quorum call in flight')
  t.ok(closed.replies.every((r) => r.error === undefined || (r.error as { code?: string }).code === 'CLOSED'), 'each replica that answered: CLOSED')
  t.equal(((await c.call('get', 'k', { quorum: 2 }).catch((e: unknown) => e)) as { code?: string }).code, 'CLOSED')
})

t.test('connect: resolves with f + 1 replicas up; fails naming each when fewer can be reached', async (t) => {
  const { nodes, endpoints } = await cluster(t, 'q-connect', () => 'ok')
  await nodes[0]!.replica.close({ timeoutMs: 0 })
  await nodes[1]!.replica.close({ timeoutMs: 0 })
  const c = await connect(t, endpoints)
  t.pass('two of four up: f + 1 = 2, connected')
  t.equal(text(await c.call('get', 'k', { quorum: 2 })), 'ok')
  await nodes[2]!.replica.close({ timeoutMs: 0 })
  const err = (await Client.connect({ replicas: endpoints, f: 1, connectTimeoutMs: 2000 }).catch((e: unknown) => e)) as Error & { code?: string; errors?: Error[] }
  t.equal(err.code, 'CONNECTION_LOST')
  t.match(err.message, /fewer than f \+ 1 = 2 of 4 replicas/)
  t.equal(err.errors?.length, 4, 'one cause per replica')
})

t.test('wrong arguments are refused before anything is sent', async (t) => {
  const { nodes, endpoints } = await cluster(t, 'q-args', () => 'ok')
  const c = await connect(t, endpoints)
  const code = async (p: Promise<unknown>): Promise<[string | undefined, string | undefined]> => {
    const e = (await p.catch((x: unknown) => x)) as { code?: string; parameter?: string }
    return [e.code, e.parameter]
  }
  t.same(await code(c.call('get', 'k', { quorum: 0 })), ['INVALID_ARGUMENT', 'options.quorum'])
  t.same(await code(c.call('get', 'k', { quorum: 5 })), ['INVALID_ARGUMENT', 'options.quorum'], 'more than the replicas')
  t.same(await code(c.call('get', 'k', { quorum: 1.5 })), ['INVALID_ARGUMENT', 'options.quorum'])
  // @ts-expect-error not one of 'all' | 'leader'
  t.same(await code(c.call('get', 'k', { quorum: 2, to: 'some' })), ['INVALID_ARGUMENT', 'options.to'])
  // @ts-expect-error not a function
  t.same(await code(c.call('get', 'k', { quorum: 2, key: 'bytes' })), ['INVALID_ARGUMENT', 'options.key'])
  t.same(nodes.map((n) => n.seen), [0, 0, 0, 0], 'nothing reached a replica')
  t.throws(() => c.service(defineService('s', { m: { request: codecs.raw, response: codecs.raw } }), { quorum: 9 }), InvalidArgumentError)

  const single = await Client.connect({ host: HOST, port: endpoints[0]!.port })
  t.teardown(() => single.close())
  t.same(await code(single.call('get', 'k', { quorum: 1 })), ['INVALID_ARGUMENT', 'options.quorum'], 'no quorum without f')

  const bad = async (o: Record<string, unknown>, field: string): Promise<void> => {
    const e = (await Client.connect(o as never).catch((x: unknown) => x)) as ConfigError
    t.ok(e instanceof ConfigError && e.field === field, `${JSON.stringify(o).slice(0, 60)}: ConfigError on ${field} (${e.message})`)
  }
  await bad({ host: HOST, port: endpoints[0]!.port, f: 1 }, 'f')
  await bad({ replicas: endpoints, f: -1 }, 'f')
  await bad({ replicas: endpoints, f: 4 }, 'f')
  await bad({ replicas: endpoints, f: '1' }, 'f')
  await bad({ replicas: [endpoints[0], endpoints[0], endpoints[1]], f: 1 }, 'replicas')
})

/**
 * A fake replica on 127.0.0.1 (a raw client-port speaker): answers every
 * request twice with `lie`, and sends replies to requests never made.
 */
async function doubleLiar(t: Tap): Promise<number> {
  const { createServer } = await import('node:net')
  const wire = await import('../lib/wire.js')
  const sockets = new Set<import('node:net').Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    let buf = Buffer.alloc(0)
    let welcomed = false
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      if (!welcomed) {
        if (buf.length < wire.HELLO_FIXED_BYTES) return
        const body = buf.readUInt32LE(24)
        if (buf.length < wire.HELLO_FIXED_BYTES + body) return
        buf = buf.subarray(wire.HELLO_FIXED_BYTES + body)
        const w = Buffer.alloc(wire.HELLO_FIXED_BYTES + 8)
        w.writeUInt32LE(wire.HELLO_MAGIC, 0)
        w.writeUInt16LE(wire.PROTOCOL_VERSION, 4)
        w.writeUInt16LE(wire.WELCOME_CLIENT, 6)
        w.writeUInt32LE(9, 12)
        w.writeBigUInt64LE(1n, 16)
        w.writeUInt32LE(8, 24)
        w.writeUInt32LE(1 << 20, wire.HELLO_FIXED_BYTES)
        w.writeUInt32LE(1024, wire.HELLO_FIXED_BYTES + 4)
        s.write(w)
        welcomed = true
      }
      while (buf.length >= wire.HEADER_BYTES && buf.length >= wire.HEADER_BYTES + buf.readUInt32LE(0)) {
        const len = buf.readUInt32LE(0)
        const id = buf.readUInt32LE(wire.OFFSET_MSG_ID)
        const route = buf.readUInt32LE(wire.OFFSET_ROUTE)
        buf = buf.subarray(wire.HEADER_BYTES + len)
        const reply = (rid: number): Buffer => {
          const h = Buffer.alloc(wire.HEADER_BYTES + 3)
          h.writeUInt32LE(3, 0)
          h.writeUInt32LE(route, wire.OFFSET_ROUTE)
          h[wire.OFFSET_KIND] = wire.KIND_REPLY
          h.writeUInt32LE(rid, wire.OFFSET_MSG_ID)
          h.write('lie', wire.HEADER_BYTES)
          return h
        }
        // The same reply twice, and replies to ids never asked.
        s.write(Buffer.concat([reply(id), reply(id), reply(id + 1), reply(id + 1000)]))
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, HOST, () => r()))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((r) => server.close(() => r()))
  })
  const a = server.address()
  return typeof a === 'object' && a !== null ? a.port : 0
}

t.test('a replica that replies twice, and to requests never made, counts once', async (t) => {
  // Three honest replicas answer after 100 ms; the liar at once, twice, and
  // ahead (ids not asked yet). Counted twice, 'lie' would make quorum 2 first.
  const ports = await freePorts(3)
  const config = { id: 'q-double', replicas: ports.map((port, i) => ({ id: i + 1, host: HOST, port, clientPort: 0 })) }
  const endpoints: { host: string; port: number }[] = [{ host: HOST, port: await doubleLiar(t) }]
  for (let id = 1; id <= 3; id++) {
    const r = await Replica.start({ auth: 'none', id, cluster: config })
    t.teardown(() => r.close({ timeoutMs: 0 }))
    r.handle('get', () => new Promise<string>((resolve) => setTimeout(() => resolve('ok'), 100)))
    endpoints.push({ host: HOST, port: r.clientPort! })
  }
  const c = await connect(t, endpoints)
  for (let i = 0; i < 5; i++) t.equal(text(await c.call('get', `k${i}`, { quorum: 2 })), 'ok', `call ${i}: the honest reply`)
  const err = (await c.call('get', 'k', { quorum: 2, timeoutMs: 50 }).catch((e: unknown) => e)) as QuorumError
  t.equal(err.code, 'NO_QUORUM', 'before the honest replies: one lie is one vote, not a quorum')
  t.equal(text(err.replies[0]!.reply!), 'lie')
})

t.test('a silent replica cannot make calls pile up: past maxInFlight its share fails at once, the quorum comes from the others', async (t) => {
  const ports = await freePorts(4)
  const config = { id: 'q-pileup', replicas: ports.map((port, i) => ({ id: i + 1, host: HOST, port, clientPort: 0 })) }
  const endpoints: { host: string; port: number }[] = []
  const held: RequestContext[] = []
  for (let id = 1; id <= 4; id++) {
    const r = await Replica.start({ auth: 'none', id, cluster: config })
    t.teardown(() => r.close({ timeoutMs: 0 }))
    // Replica 4 never answers.
    r.handle('get', (_req, ctx) => (id === 4 ? void held.push(ctx) : 'ok'))
    endpoints.push({ host: HOST, port: r.clientPort! })
  }
  const c = await connect(t, endpoints, { maxInFlight: 4 })
  for (let i = 0; i < 50; i++) t.equal(text(await c.call('get', `k${i}`, { quorum: 3 })), 'ok', `call ${i}`)
  t.ok(c.inFlight <= 4, `calls left waiting on the silent replica stay within its maxInFlight (${c.inFlight})`)
  const err = (await c.call('get', 'k', { quorum: 4, timeoutMs: 200 }).catch((e: unknown) => e)) as QuorumError
  t.equal(err.code, 'NO_QUORUM')
  t.equal((err.replies[3]!.error as { code?: string }).code, 'TOO_MANY_REQUESTS', 'the silent replica: refused at once, not queued')
  const bad = (await c.call('get', 'k', { quorum: 2, key: (() => 7) as unknown as (r: Uint8Array) => string }).catch((e: unknown) => e)) as QuorumError
  t.equal(bad.code, 'NO_QUORUM', 'a key that returns neither a string nor bytes: each reply an error')
  t.ok(bad.replies.some((r) => (r.error as { code?: string } | undefined)?.code === 'INVALID_ARGUMENT'), 'INVALID_ARGUMENT naming options.key')
})
