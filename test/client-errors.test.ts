// What a client is told when things go wrong (issue 10 item 6) and how it
// reads large replies (item 7), through the public API over real sockets on
// 127.0.0.1: each connect failure carries its cause (socket error, the
// replica's refusal with its reason code, a silent server, the replica port
// by mistake), several replicas list each cause; the limits announced in
// CLIENT_WELCOME make an oversized call fail alone; route names in
// NO_SUCH_ROUTE and 'unrouted'; Client.connect({ waitForReady }); a 32 MiB
// reply and replies cut at every byte.
import { type Server, Socket, createServer } from 'node:net'

import t from 'tap'

import * as wire from '../lib/wire.js'

import {
  Client,
  type ClientOptions,
  type ClusterConfig,
  type ConnectionFailure,
  ConnectionLostError,
  type Endpoint,
  RemoteError,
  Replica,
  type ReplicaOptions,
  TimeoutError,
  type UnroutedInfo,
  routeId,
} from 'nexres-rpc'

import { spawnFixture } from './child-helpers.js'
import { type Tap, freePorts, until, timeBound } from './helpers.js'

type CodedError = Error & ConnectionFailure & { code?: string; remoteCode?: string; route?: string }

const HOST = '127.0.0.1'
const HELLO_FIXED = wire.HELLO_FIXED_BYTES
const FRAME_HEADER = wire.HEADER_BYTES
const HELLO_MAGIC = wire.HELLO_MAGIC
const KIND_REQUEST = wire.KIND_REQUEST
const KIND_REPLY = wire.KIND_REPLY
const KIND_ERROR = wire.KIND_ERROR

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** The error `p` rejects with (a test failure if it resolves or hangs past `ms`). */
async function rejection(t: Tap, p: Promise<unknown>, ms: number, what: string): Promise<CodedError> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<'hang'>((r) => {
    timer = setTimeout(() => r('hang'), ms)
  })
  try {
    const o = await Promise.race([
      p.then(
        () => 'resolved' as const,
        (e: unknown) => ({ e }),
      ),
      hang,
    ])
    if (o === 'hang' || o === 'resolved') {
      t.fail(`${what}: ${o === 'hang' ? `still pending after ${ms} ms` : 'resolved'}, expected a rejection`)
      return new Error('no rejection') as CodedError
    }
    return o.e as CodedError
  } finally {
    clearTimeout(timer)
  }
}

/** A one-replica cluster whose replica listens for clients on a free port. */
async function startServer(t: Tap, options: Omit<ReplicaOptions, 'id' | 'cluster'> = {}, clientPort = 0): Promise<{ replica: Replica; endpoint: Endpoint }> {
  const [port] = await freePorts(1)
  const cluster: ClusterConfig = { id: 'errors-test', replicas: [{ id: 1, host: HOST, port: port!, clientPort }] }
  const replica = await Replica.start({ auth: 'none', id: 1, cluster, ...options })
  t.teardown(() => replica.close({ timeoutMs: 0 }))
  return { replica, endpoint: { host: HOST, port: replica.clientPort! } }
}

async function connectClient(t: Tap, options: ClientOptions): Promise<Client> {
  const c = await Client.connect(options)
  t.teardown(() => c.close())
  return c
}

/** A TCP server on 127.0.0.1 that runs `onSocket` for each connection. */
async function tcpServer(t: Tap, onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const sockets = new Set<Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    onSocket(s)
  })
  await new Promise<void>((r) => server.listen(0, HOST, r))
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  )
  const a = server.address()
  if (a === null || typeof a === 'string') throw new Error('no port')
  return { server, port: a.port }
}

/** A server that accepts and never answers (a hung process, a wrong service). */
const silentServer = (t: Tap): Promise<{ server: Server; port: number }> => tcpServer(t, () => {})

// -------------------------------------------------------------- the cause

t.test('connection refused: CONNECTION_LOST whose cause is the ECONNREFUSED socket error', async (t) => {
  const [port] = await freePorts(1)
  const e = await rejection(t, Client.connect({ host: HOST, port: port!, connectTimeoutMs: 2000 }), 10_000, 'connect to a closed port')
  t.equal(e.code, 'CONNECTION_LOST', e.message)
  t.ok(e instanceof ConnectionLostError)
  t.equal((e.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED', 'err.cause is the socket error')
  t.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}: connection refused \\(ECONNREFUSED\\)`), 'the message names the endpoint and the cause')
  t.same(e.endpoint, { host: HOST, port }, 'err.endpoint')
  t.equal(e.errors?.length, 1, 'one replica tried: one entry in err.errors')
  t.equal(e.reasonCode, undefined, 'no refusal by a replica')
})

t.test('a silent server: TIMEOUT saying the handshake got no answer within connectTimeoutMs', async (t) => {
  const { port } = await silentServer(t)
  const e = await rejection(t, Client.connect({ host: HOST, port, connectTimeoutMs: 300 }), 10_000, 'connect to a silent server')
  t.equal(e.code, 'TIMEOUT', e.message)
  t.ok(e instanceof TimeoutError)
  t.match(e.message, /the handshake got no answer within connectTimeoutMs \(300 ms\)/)
  t.same(e.endpoint, { host: HOST, port })
})

t.test("a wrong clusterId: the replica's refusal, reasonCode WRONG_CLUSTER and its text, in fields and in the message", async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('echo', (req) => req)
  const e = await rejection(t, Client.connect({ ...endpoint, clusterId: 'another-cluster' }), 10_000, 'connect with a wrong clusterId')
  t.equal(e.code, 'CONNECTION_LOST', e.message)
  t.equal(e.reasonCode, 'WRONG_CLUSTER', 'err.reasonCode')
  t.equal(e.reason, 'cluster id does not match', 'err.reason: the replica\'s text')
  t.match(e.message, /refused the connection: WRONG_CLUSTER: cluster id does not match \(the client asked for cluster "another-cluster"\)/)
  const ok = await connectClient(t, { ...endpoint, clusterId: 'errors-test' })
  t.equal(Buffer.from(await ok.call('echo', 'x')).toString(), 'x', 'the right clusterId connects')
})

t.test('the replica port by mistake: refused with BAD_FRAME, and the message says it is a replica port', async (t) => {
  const { replica } = await startServer(t)
  const e = await rejection(t, Client.connect({ host: HOST, port: replica.port }), 10_000, 'connect to the replica port')
  t.equal(e.code, 'CONNECTION_LOST', e.message)
  t.equal(e.reasonCode, 'BAD_FRAME', 'the replica port refuses a CLIENT_HELLO with BAD_FRAME')
  t.equal(e.reason, 'expected HELLO')
  t.match(e.message, /this looks like a replica port; clients connect to a replica's clientPort/)
})

t.test('not a nexres-rpc server at all: the message says so', async (t) => {
  const { port } = await tcpServer(t, (s) => s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'))
  const e = await rejection(t, Client.connect({ host: HOST, port }), 10_000, 'connect to an HTTP server')
  t.equal(e.code, 'CONNECTION_LOST', e.message)
  t.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port} is not a nexres-rpc client port`))
})

t.test("several replicas: err.errors gives each replica's cause, in order; every one silent -> TIMEOUT", async (t) => {
  const [closed] = await freePorts(1)
  const silent = await silentServer(t)
  const { endpoint: wrongCluster } = await startServer(t)
  const replicas = [{ host: HOST, port: closed! }, { host: HOST, port: silent.port }, wrongCluster]
  const e = await rejection(
    t,
    Client.connect({ replicas, clusterId: 'nope', connectTimeoutMs: 300, reconnect: { minMs: 5, maxMs: 10 } }),
    10_000,
    'connect with three bad replicas',
  )
  t.equal(e.code, 'CONNECTION_LOST', 'causes of several kinds: CONNECTION_LOST')
  const errs = (e.errors ?? []) as CodedError[]
  t.equal(errs.length, 3, 'one error per replica')
  t.equal((errs[0]?.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED', 'first: refused')
  t.same(errs[0]?.endpoint, replicas[0])
  t.equal(errs[1]?.code, 'TIMEOUT', 'second: silent')
  t.same(errs[1]?.endpoint, replicas[1])
  t.equal(errs[2]?.reasonCode, 'WRONG_CLUSTER', 'third: refused by the replica')
  t.same(errs[2]?.endpoint, replicas[2])
  t.equal(e.reasonCode, 'WRONG_CLUSTER', 'the top-level fields are the last attempt\'s')
  t.same(e.endpoint, replicas[2])
  for (const part of ['ECONNREFUSED', 'the handshake got no answer', 'WRONG_CLUSTER']) t.ok(e.message.includes(part), `the message has "${part}"`)

  const silent2 = await silentServer(t)
  const all = await rejection(
    t,
    Client.connect({ replicas: [{ host: HOST, port: silent.port }, { host: HOST, port: silent2.port }], connectTimeoutMs: 200, reconnect: { minMs: 5, maxMs: 10 } }),
    10_000,
    'connect with two silent replicas',
  )
  t.equal(all.code, 'TIMEOUT', all.message)
  t.equal(all.errors?.length, 2)
})

// ---------------------------------------------------- limits in the WELCOME

t.test("a call over the replica's maxRequestBytes fails alone, locally; the calls beside it resolve on the same connection", async (t) => {
  const { replica, endpoint } = await startServer(t, { maxRequestBytes: 64 * 1024, maxClientInFlight: 300 })
  let handled = 0
  replica.handle('echo', (req) => {
    handled++
    return req
  })
  for (const [label, options] of [
    ['no maxRequestBytes given', {}],
    ['maxRequestBytes 1 MiB given, above the replica\'s', { maxRequestBytes: 1024 * 1024 }],
  ] as const) {
    const c = await connectClient(t, { ...endpoint, ...options })
    t.same(c.limits, { maxRequestBytes: 64 * 1024, maxInFlight: 300 }, `${label}: the replica's limits are in force`)
    let disconnects = 0
    c.events.on('disconnect', () => disconnects++)
    const before = handled
    const small = Array.from({ length: 20 }, (_, i) => c.call('echo', `small ${i}`))
    const big = c.call('echo', Buffer.alloc(100 * 1024, 7))
    const more = Array.from({ length: 20 }, (_, i) => c.call('echo', `after ${i}`))
    const atLimit = c.call('echo', Buffer.alloc(64 * 1024, 9))
    const e = await rejection(t, big, 5000, `${label}: 100 KiB call`)
    t.equal(e.code, 'REQUEST_TOO_LARGE', `${label}: the oversized call rejects with REQUEST_TOO_LARGE (${e.message})`)
    const replies = await Promise.all([...small, ...more, atLimit])
    t.same(
      replies.slice(0, 40).map((r) => Buffer.from(r).toString()),
      [...Array.from({ length: 20 }, (_, i) => `small ${i}`), ...Array.from({ length: 20 }, (_, i) => `after ${i}`)],
      `${label}: the 40 calls beside it resolve`,
    )
    t.equal(replies[40]!.length, 64 * 1024, `${label}: a call of exactly maxRequestBytes goes through`)
    t.equal(handled - before, 41, `${label}: the handler saw every call but the oversized one`)
    t.equal(disconnects, 0, `${label}: the connection was kept`)
    t.ok(c.connected)
  }
  t.equal(replica.stats().rejectsByReason.REQUEST_TOO_LARGE ?? 0, 0, 'the replica refused nothing')
})

t.test("maxInFlight: the replica's maxClientInFlight unless given", async (t) => {
  const { replica, endpoint } = await startServer(t, { maxClientInFlight: 7 })
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)
  t.equal(c.limits.maxInFlight, 7, 'announced by the replica')
  const given = await connectClient(t, { ...endpoint, maxInFlight: 50 })
  t.equal(given.limits.maxInFlight, 50, 'as given (past the replica\'s cap, TCP backpressure holds requests)')
  const replies = await Promise.all(Array.from({ length: 60 }, (_, i) => given.call('echo', String(i))))
  t.equal(replies.length, 60, 'and calls past the cap complete')
})

// ------------------------------------------------------------ route names

t.test('NO_SUCH_ROUTE names the route the call used', async (t) => {
  t.test('a server in another process (it knows only the id): the client adds the name', async (t) => {
    const [port, clientPort] = await freePorts(2)
    const cluster: ClusterConfig = { id: 'errors-test', replicas: [{ id: 1, host: HOST, port: port!, clientPort: clientPort! }] }
    const server = spawnFixture('rpc-server.mjs', [], { NEXRES_CLUSTER: JSON.stringify(cluster), NEXRES_ID: '1' })
    t.teardown(() => server.kill())
    await server.waitLine(/^ready/, 15_000, 'rpc-server ready')
    const c = await connectClient(t, { host: HOST, port: clientPort! })
    const e = await rejection(t, c.call('no.such.route', 'x'), 5000, 'unknown route')
    t.ok(e instanceof RemoteError)
    t.equal(e.remoteCode, 'NO_SUCH_ROUTE')
    t.equal(e.route, 'no.such.route', 'err.route')
    t.match(e.message, /^NO_SUCH_ROUTE: no handler for route id \d+ on replica 1 \(route "no\.such\.route"\)$/, e.message)
  })

  t.test('the server names it when it knows the name, and gives the id when it does not', async (t) => {
    const { replica, endpoint } = await startServer(t)
    replica.on('a.message.route', () => {}) // a DATA handler: the name is known, no request handler
    const c = await connectClient(t, endpoint)
    const e = await rejection(t, c.call('a.message.route', 'x'), 5000, 'request to a message-only route')
    t.equal(e.remoteCode, 'NO_SUCH_ROUTE')
    t.match(e.message, new RegExp(`no handler for route "a\\.message\\.route" \\(id ${routeId('a.message.route')}\\) on replica 1$`), e.message)
    // A raw client asks for a route id no name in this process hashes to.
    const errorBody = await rawRequest(t, endpoint.port, 0xdeadbeef)
    t.equal(errorBody.kind, KIND_ERROR)
    t.match(errorBody.text, /NO_SUCH_ROUTE.*no handler for route id 3735928559 on replica 1$/, 'only the id when no name is known')
  })
})

/** Sends one REQUEST for `route` on a raw connection; the answer's kind and body. */
async function rawRequest(t: Tap, port: number, route: number): Promise<{ kind: number; text: string }> {
  const s = new Socket()
  t.teardown(() => s.destroy())
  let rx = Buffer.alloc(0)
  s.on('data', (d: Buffer) => (rx = Buffer.concat([rx, d])))
  s.on('error', () => {})
  await new Promise<void>((r) => s.connect(port, HOST, r))
  const h = Buffer.alloc(HELLO_FIXED)
  h.writeUInt32LE(HELLO_MAGIC, 0)
  h.writeUInt16LE(1, 4)
  h.writeUInt16LE(3, 6)
  const f = Buffer.alloc(FRAME_HEADER)
  f.writeUInt32LE(route, 4)
  f[12] = KIND_REQUEST
  f.writeUInt32LE(1, 16)
  s.write(Buffer.concat([h, f]))
  await until(() => rx.length >= HELLO_FIXED && rx.length >= HELLO_FIXED + rx.readUInt32LE(24) + FRAME_HEADER, 5000, 'the answer')
  const at = HELLO_FIXED + rx.readUInt32LE(24)
  await until(() => rx.length >= at + FRAME_HEADER + rx.readUInt32LE(at), 5000, 'the answer body')
  const body = rx.subarray(at + FRAME_HEADER, at + FRAME_HEADER + rx.readUInt32LE(at))
  return { kind: rx[at + 12]!, text: body.toString('latin1', 1, 1 + body[0]!) + ' ' + body.toString('utf8', 1 + body[0]!) }
}

t.test("'unrouted' gives the route name when this thread knows it, only the id otherwise", async (t) => {
  // The sender is another process (route 'seq'): this process never hashed
  // that name until it registers a request handler for it.
  const [p1, p2] = await freePorts(2)
  const cluster: ClusterConfig = {
    id: 'unrouted-test',
    replicas: [
      { id: 1, host: HOST, port: p1! },
      { id: 2, host: HOST, port: p2! },
    ],
  }
  const replica = await Replica.start({ auth: 'none', id: 2, cluster })
  t.teardown(() => replica.close({ timeoutMs: 0 }))
  const seen: UnroutedInfo[] = []
  replica.events.on('unrouted', (info) => seen.push(info))
  const sender = spawnFixture('sender.mjs', [], {
    NEXRES_CLUSTER: JSON.stringify(cluster),
    NEXRES_ID: '1',
    NEXRES_TO: '2',
    NEXRES_PER_TICK: '1',
  })
  t.teardown(() => sender.kill())
  await until(() => seen.length > 0, 15_000, 'an unrouted message')
  t.same(Object.keys(seen[0]!).sort(), ['from', 'route', 'size'], 'no name known: { from, route, size }')
  t.equal(seen[0]!.from, 1)
  t.equal(seen[0]!.size, 16)
  const id = seen[0]!.route
  replica.handle('seq', () => 'a request handler: the name is now known, messages are still unrouted')
  const mark = seen.length
  await until(() => seen.length > mark + 1, 15_000, 'more unrouted messages')
  const named = seen.slice(mark + 1)
  t.ok(
    named.every((i) => i.routeName === 'seq' && i.route === id),
    `after handle('seq'): routeName 'seq' with the same id ${id}`,
  )
  t.equal(routeId('seq'), id)
})

// ----------------------------------------------------------- waitForReady

t.test('Client.connect({ waitForReady: true })', async (t) => {
  t.test('a replica that starts 500 ms after connect began: connect resolves, a call succeeds', async (t) => {
    const [port, clientPort] = await freePorts(2)
    const connecting = Client.connect({ host: HOST, port: clientPort!, waitForReady: true, connectTimeoutMs: 10_000, reconnect: { minMs: 20, maxMs: 100 } })
    let settled = false
    connecting.then(
      () => (settled = true),
      () => (settled = true),
    )
    await sleep(500)
    t.notOk(settled, 'still waiting while nobody listens')
    const cluster: ClusterConfig = { id: 'errors-test', replicas: [{ id: 1, host: HOST, port: port!, clientPort: clientPort! }] }
    const replica = await Replica.start({ auth: 'none', id: 1, cluster })
    t.teardown(() => replica.close({ timeoutMs: 0 }))
    replica.handle('echo', (req) => req)
    const c = await connecting
    t.teardown(() => c.close())
    t.ok(c.connected)
    t.equal(Buffer.from(await c.call('echo', 'ready')).toString(), 'ready')
  })

  t.test('nobody ever listens: rejects once connectTimeoutMs has passed, with cause ECONNREFUSED', async (t) => {
    const [port] = await freePorts(1)
    const started = Date.now()
    const e = await rejection(
      t,
      Client.connect({ host: HOST, port: port!, waitForReady: true, connectTimeoutMs: 800, reconnect: { minMs: 20, maxMs: 100 } }),
      10_000,
      'waitForReady with nobody listening',
    )
    const elapsed = Date.now() - started
    t.equal(e.code, 'CONNECTION_LOST', e.message)
    t.equal((e.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED', 'cause: ECONNREFUSED')
    t.ok(elapsed >= 790, `kept trying for connectTimeoutMs (${elapsed} ms)`)
    t.ok(elapsed < timeBound(5000), `and stopped then (${elapsed} ms)`)
    t.match(e.message, /within connectTimeoutMs \(800 ms, waitForReady\)/)
  })

  t.test('without waitForReady, one round and done', async (t) => {
    const [port] = await freePorts(1)
    const started = Date.now()
    const e = await rejection(t, Client.connect({ host: HOST, port: port!, connectTimeoutMs: 5000 }), 10_000, 'connect with nobody listening')
    t.equal(e.code, 'CONNECTION_LOST')
    t.ok(Date.now() - started < 4000, 'did not wait out connectTimeoutMs (5000 ms)')
  })

  t.test('waitForReady must be a boolean', async (t) => {
    await t.rejects(Client.connect({ host: HOST, port: 1, waitForReady: 'yes' as unknown as boolean }), { code: 'CONFIG_INVALID' })
  })
})

// ------------------------------------------------------------ large replies

t.test('a 32 MiB reply read in many socket reads decodes intact, each byte copied once to reassemble it', async (t) => {
  const { replica, endpoint } = await startServer(t, { clientIdleTimeoutMs: 0 })
  const SIZE = 32 * 1024 * 1024
  const big = Buffer.allocUnsafe(SIZE)
  for (let i = 0; i < SIZE; i += 4) big.writeUInt32LE(i ^ 0x5a5a5a5a, i)
  replica.handle('big', () => big)
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)
  // Bytes the client joins to reassemble replies split across reads
  // (Buffer.concat is its only copy on the read path).
  let joined = 0
  const concat = Buffer.concat
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    const out = concat(list, total)
    joined += out.length
    return out
  }) as typeof Buffer.concat
  let reply: Uint8Array
  let small: Uint8Array[]
  try {
    ;[reply, small] = await Promise.all([c.call('big', '', { timeoutMs: 60_000 }), Promise.all(Array.from({ length: 10 }, (_, i) => c.call('echo', `e${i}`)))])
  } finally {
    Buffer.concat = concat
  }
  t.equal(reply.length, SIZE, '32 MiB')
  t.ok(Buffer.compare(reply, big) === 0, 'intact')
  t.same(
    small.map((r) => Buffer.from(r).toString()),
    Array.from({ length: 10 }, (_, i) => `e${i}`),
    'the small replies beside it too',
  )
  t.ok(joined <= SIZE + 64 * 1024, `reassembly copied ${joined} bytes for a ${SIZE}-byte reply (at most once each)`)
})

t.test('replies cut at every byte boundary, across headers and bodies, decode intact', async (t) => {
  // A fake replica: answers the handshake, then writes each reply in pieces
  // of 1..7 bytes with a pause between, so reads split anywhere.
  const { port } = await tcpServer(t, (s) => {
    let rx = Buffer.alloc(0)
    let welcomed = false
    const out: Buffer[] = []
    let writing = false
    const pump = async (): Promise<void> => {
      if (writing) return
      writing = true
      let n = 0
      while (out.length > 0 && !s.destroyed) {
        const b = out.shift()!
        for (let p = 0; p < b.length && !s.destroyed; ) {
          const k = 1 + (n++ % 7)
          s.write(b.subarray(p, p + k))
          p += k
          await sleep(1)
        }
      }
      writing = false
    }
    s.setNoDelay(true)
    s.on('data', (d: Buffer) => {
      rx = Buffer.concat([rx, d])
      if (!welcomed) {
        if (rx.length < HELLO_FIXED) return
        const w = Buffer.alloc(HELLO_FIXED + 8)
        w.writeUInt32LE(HELLO_MAGIC, 0)
        w.writeUInt16LE(1, 4)
        w.writeUInt16LE(4, 6)
        w.writeUInt32LE(1, 12)
        w.writeUInt32LE(8, 24)
        w.writeUInt32LE(1 << 20, HELLO_FIXED)
        w.writeUInt32LE(64, HELLO_FIXED + 4)
        out.push(w)
        welcomed = true
        rx = rx.subarray(HELLO_FIXED + rx.readUInt32LE(24))
      }
      while (rx.length >= FRAME_HEADER && rx.length >= FRAME_HEADER + rx.readUInt32LE(0)) {
        const len = rx.readUInt32LE(0)
        const reply = Buffer.alloc(FRAME_HEADER + len)
        rx.copy(reply, 0, 0, FRAME_HEADER + len)
        reply[12] = KIND_REPLY
        reply.writeUInt32LE(1, 8)
        out.push(reply)
        rx = rx.subarray(FRAME_HEADER + len)
      }
      void pump()
    })
  })
  const c = await connectClient(t, { host: HOST, port })
  t.same(c.limits, { maxRequestBytes: 1 << 20, maxInFlight: 64 }, 'limits read from the fake CLIENT_WELCOME')
  const bodies = ['', 'a', 'hello', 'x'.repeat(23), 'y'.repeat(24), 'z'.repeat(25), Buffer.alloc(300, 3).toString('latin1')]
  const replies = await Promise.all(bodies.map((b) => c.call('echo', Buffer.from(b, 'latin1'), { timeoutMs: 20_000 })))
  t.same(
    replies.map((r) => Buffer.from(r).toString('latin1')),
    bodies,
    'every reply intact',
  )
})

// ------------------------------------------------- an established connection lost

/** A fake replica: answers the handshake, then runs `onRequest` for the first request. */
async function fakeReplica(t: Tap, onRequest: (s: Socket) => void): Promise<number> {
  const { port } = await tcpServer(t, (s) => {
    let rx = Buffer.alloc(0)
    let state: 'hello' | 'requests' | 'done' = 'hello'
    s.on('data', (d: Buffer) => {
      rx = Buffer.concat([rx, d])
      if (state === 'hello' && rx.length >= HELLO_FIXED) {
        const w = Buffer.alloc(HELLO_FIXED)
        w.writeUInt32LE(HELLO_MAGIC, 0)
        w.writeUInt16LE(1, 4)
        w.writeUInt16LE(4, 6)
        w.writeUInt32LE(1, 12)
        s.write(w) // an older replica's WELCOME: no limits
        rx = rx.subarray(HELLO_FIXED)
        state = 'requests'
      }
      if (state === 'requests' && rx.length >= FRAME_HEADER) {
        state = 'done'
        onRequest(s)
      }
    })
  })
  return port
}

t.test('calls in flight when the connection drops: CONNECTION_LOST with the cause', async (t) => {
  t.test("a REJECT frame from the replica: its reasonCode and reason", async (t) => {
    const port = await fakeReplica(t, (s) => {
      const text = Buffer.from('expected a REQUEST frame')
      const f = Buffer.alloc(FRAME_HEADER + 2 + text.length)
      f.writeUInt32LE(2 + text.length, 0)
      f.writeUInt32LE(1, 8)
      f[12] = 3
      f.writeUInt16LE(6, FRAME_HEADER)
      text.copy(f, FRAME_HEADER + 2)
      s.end(f)
    })
    const c = await connectClient(t, { host: HOST, port })
    t.same(c.limits, { maxRequestBytes: 4 * 1024 * 1024, maxInFlight: 1024 }, 'a WELCOME without limits: the defaults')
    const reasons: string[] = []
    c.events.on('disconnect', (_ep, why) => reasons.push(why))
    const e = await rejection(t, c.call('echo', 'x'), 5000, 'a call the replica answers with REJECT')
    t.equal(e.code, 'CONNECTION_LOST', e.message)
    t.equal(e.reasonCode, 'BAD_FRAME')
    t.equal(e.reason, 'expected a REQUEST frame')
    t.match(e.message, new RegExp(`connection to 127\\.0\\.0\\.1:${port} lost: refused by the replica: BAD_FRAME: expected a REQUEST frame`))
    t.same(reasons, ['refused by the replica: BAD_FRAME: expected a REQUEST frame'], "the 'disconnect' reason")
  })

  t.test('a reset: cause ECONNRESET', async (t) => {
    const port = await fakeReplica(t, (s) => s.resetAndDestroy())
    const c = await connectClient(t, { host: HOST, port })
    const e = await rejection(t, c.call('echo', 'x'), 5000, 'a call the replica resets')
    t.equal(e.code, 'CONNECTION_LOST', e.message)
    t.equal((e.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET')
    t.match(e.message, /lost: connection reset by the replica \(ECONNRESET\)/)
  })

  t.test("an idle connection the replica closes: the 'disconnect' reason is IDLE_TIMEOUT", async (t) => {
    const { endpoint } = await startServer(t, { clientIdleTimeoutMs: 200 })
    const c = await connectClient(t, endpoint)
    const why = await new Promise<string>((r) => c.events.once('disconnect', (_ep, reason) => r(reason)))
    t.match(why, /^refused by the replica: IDLE_TIMEOUT: /)
  })
})
