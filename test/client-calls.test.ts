// User clients calling a replica's client port (docs/PROTOCOL.md §6) through
// the public API, over real sockets on 127.0.0.1: pipelining, deferred and
// error replies, timeouts, aborts, a server killed mid-call and restarted,
// request size limits, typed services with every codec, in-flight bounds,
// failover between replicas, the caller's identity, and raw hostile sockets.
import { type Socket, connect } from 'node:net'
import { fileURLToPath } from 'node:url'

import t from 'tap'

import * as wire from '../lib/wire.js'

import {
  Client,
  type ClientOptions,
  type ClusterConfig,
  type Endpoint,
  RemoteError,
  Replica,
  type ReplicaOptions,
  type RequestContext,
  codecs,
  defineService,
  routeId,
} from 'nexres-rpc'

import { type Child, spawnFixture } from './child-helpers.js'
import { freePorts, until } from './helpers.js'

/** A tap test object, as handed to t.test callbacks. */
type Tap = Parameters<Parameters<typeof t.test>[0]>[0]

type CodedError = Error & { code?: string; remoteCode?: string }

const HOST = '127.0.0.1'

// ------------------------------------------------------------------ helpers

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

const utf8 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8')

type Outcome<T> = { state: 'fulfilled'; value: T } | { state: 'rejected'; error: unknown } | { state: 'pending' }

/** How `p` settled within `ms` (or that it did not). */
async function settleWithin<T>(p: Promise<T>, ms: number): Promise<Outcome<T>> {
  let timer: NodeJS.Timeout | undefined
  const pending = new Promise<Outcome<T>>((r) => {
    timer = setTimeout(() => r({ state: 'pending' }), ms)
  })
  try {
    return await Promise.race([
      p.then(
        (value): Outcome<T> => ({ state: 'fulfilled', value }),
        (error: unknown): Outcome<T> => ({ state: 'rejected', error }),
      ),
      pending,
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** The value of `p`; throws if it rejects or is still pending after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const o = await settleWithin(p, ms)
  if (o.state === 'fulfilled') return o.value
  if (o.state === 'rejected') {
    const e = o.error as CodedError
    throw new Error(`${what}: rejected with ${e?.code ?? ''} ${e?.message ?? String(e)}`, { cause: o.error })
  }
  throw new Error(`${what}: still pending after ${ms} ms`)
}

interface Want {
  code: string
  remoteCode?: string
  message?: RegExp
}

/**
 * Checks that `p` rejects within `ms` with `want`; records a failure (and
 * returns undefined) when it resolves or hangs.
 */
async function expectReject(t: Tap, p: Promise<unknown>, want: Want, ms: number, what: string): Promise<CodedError | undefined> {
  const o = await settleWithin(p, ms)
  if (o.state === 'pending') {
    t.fail(`${what}: still pending after ${ms} ms, expected ${want.code}`)
    return undefined
  }
  if (o.state === 'fulfilled') {
    t.fail(`${what}: resolved (${o.value instanceof Uint8Array ? JSON.stringify(utf8(o.value).slice(0, 60)) : String(o.value)}), expected ${want.code}`)
    return undefined
  }
  const e = o.error as CodedError
  t.equal(e?.code, want.code, `${what}: code ${want.code} (${e?.message})`)
  if (want.remoteCode !== undefined) {
    t.ok(e instanceof RemoteError, `${what}: a RemoteError`)
    t.equal(e?.remoteCode, want.remoteCode, `${what}: remoteCode ${want.remoteCode}`)
  }
  if (want.message !== undefined) t.match(e?.message, want.message, `${what}: message`)
  return e
}

interface Server {
  replica: Replica
  endpoint: Endpoint
  cluster: ClusterConfig
}

/** A one-replica cluster whose replica listens for clients on a free port. */
async function startServer(t: Tap, options: Omit<ReplicaOptions, 'id' | 'cluster'> = {}): Promise<Server> {
  const [port] = await freePorts(1)
  const cluster: ClusterConfig = { id: 'rpc-test', replicas: [{ id: 1, host: HOST, port: port!, clientPort: 0 }] }
  const replica = await Replica.start({ auth: 'none', id: 1, cluster, ...options })
  t.teardown(() => replica.close({ timeoutMs: 0 }))
  t.ok(Number.isInteger(replica.clientPort) && replica.clientPort! > 0, `client port bound (${replica.clientPort})`)
  return { replica, endpoint: { host: HOST, port: replica.clientPort! }, cluster }
}

async function connectClient(t: Tap, options: ClientOptions): Promise<Client> {
  const c = await within(Client.connect(options), 10_000, 'Client.connect')
  t.teardown(() => c.close())
  return c
}

/** Calls whose rejections are observed at once (no unhandled rejection); settle later. */
function observed<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {})
  return p
}

// ------------------------------------------------------ raw client sockets

const HELLO_FIXED = wire.HELLO_FIXED_BYTES
const FRAME_HEADER = wire.HEADER_BYTES
const HELLO_MAGIC = wire.HELLO_MAGIC
const TYPE_HELLO = 1
const TYPE_CLIENT_HELLO = 3
const TYPE_CLIENT_WELCOME = 4
const KIND_DATA = wire.KIND_DATA
const KIND_REJECT = wire.KIND_REJECT
const KIND_REQUEST = wire.KIND_REQUEST
const KIND_REPLY = wire.KIND_REPLY
const REJECT = { BAD_MAGIC: 1, BAD_FRAME: 6, HANDSHAKE_TIMEOUT: 8, REQUEST_TOO_LARGE: 11, IDLE_TIMEOUT: 12 } as const

function clientHello(type = TYPE_CLIENT_HELLO): Buffer {
  const h = Buffer.alloc(HELLO_FIXED)
  h.writeUInt32LE(HELLO_MAGIC, 0)
  h.writeUInt16LE(1, 4)
  h.writeUInt16LE(type, 6)
  return h
}

function frame(kind: number, route: number, id: number, body: Uint8Array, sender = 0): Buffer {
  const h = Buffer.alloc(FRAME_HEADER)
  h.writeUInt32LE(body.length, 0)
  h.writeUInt32LE(route, 4)
  h.writeUInt32LE(sender, 8)
  h[12] = kind
  h.writeUInt32LE(id, 16)
  return Buffer.concat([h, body])
}

/** A raw TCP connection to a client port; collects what the server writes. */
class RawClient {
  readonly sock: Socket
  rx = Buffer.alloc(0)
  closed = false
  connected = false
  localPort = -1

  constructor(port: number) {
    this.sock = connect({ host: HOST, port, noDelay: true })
    this.sock.on('connect', () => {
      this.connected = true
      this.localPort = this.sock.localPort ?? -1
    })
    this.sock.on('data', (d: Buffer) => (this.rx = Buffer.concat([this.rx, d])))
    this.sock.on('error', () => {}) // ECONNRESET after a refusal; 'close' follows
    this.sock.on('close', () => (this.closed = true))
  }

  static async open(t: Tap, port: number): Promise<RawClient> {
    const c = new RawClient(port)
    t.teardown(() => {
      c.sock.destroy()
    })
    await until(() => c.connected || c.closed, 5000, 'raw socket connect')
    if (!c.connected) throw new Error('raw socket did not connect')
    return c
  }

  write(b: Uint8Array): void {
    this.sock.write(b)
  }

  /** Sends CLIENT_HELLO and reads CLIENT_WELCOME; returns the connection id it names. */
  async handshake(): Promise<number> {
    this.write(clientHello())
    await until(() => this.rx.length >= HELLO_FIXED || this.closed, 5000, 'CLIENT_WELCOME')
    if (this.rx.length < HELLO_FIXED) throw new Error(`no CLIENT_WELCOME: ${this.rx.toString('hex')}`)
    if (this.rx.readUInt32LE(0) !== HELLO_MAGIC || this.rx.readUInt16LE(6) !== TYPE_CLIENT_WELCOME) {
      throw new Error(`not a CLIENT_WELCOME: ${this.rx.subarray(0, 32).toString('hex')}`)
    }
    const bodyLen = this.rx.readUInt32LE(24)
    await until(() => this.rx.length >= HELLO_FIXED + bodyLen || this.closed, 5000, 'CLIENT_WELCOME body')
    const connectionId = Number(this.rx.readBigUInt64LE(16))
    this.rx = this.rx.subarray(HELLO_FIXED + bodyLen)
    return connectionId
  }

  /** Waits until the server closed the connection; returns the REJECT code it sent first, if any. */
  async refusal(ms: number): Promise<number | undefined> {
    await until(() => this.closed, ms, 'the server to close the raw connection')
    let p = 0
    while (this.rx.length - p >= FRAME_HEADER) {
      const len = this.rx.readUInt32LE(p)
      if (this.rx[p + 12] === KIND_REJECT && this.rx.length - p >= FRAME_HEADER + 2) return this.rx.readUInt16LE(p + FRAME_HEADER)
      p += FRAME_HEADER + len
    }
    return undefined
  }
}

// -------------------------------------------------------------------- tests

t.test('pipelined calls: 4 clients x 500 in flight, every reply matches its request', async (t) => {
  const { replica, endpoint } = await startServer(t)
  let handled = 0
  // reply = 'R' + the request reversed; answered at once, from a promise, or
  // later through ctx.reply, so replies come back out of order.
  replica.handle('transform', (req, ctx) => {
    const n = handled++
    const out = Buffer.allocUnsafe(req.length + 1)
    out[0] = 0x52
    for (let i = 0; i < req.length; i++) out[i + 1] = req[req.length - 1 - i]!
    if (n % 3 === 0) return out
    if (n % 3 === 1) return Promise.resolve().then(() => out)
    setTimeout(() => ctx.reply(out), n % 7)
    return undefined
  })
  const clients = await Promise.all(Array.from({ length: 4 }, () => connectClient(t, endpoint)))
  const N = 500
  const expected = (req: Buffer): Buffer => Buffer.concat([Buffer.from('R'), Buffer.from(req).reverse()])
  const runs = clients.map((c, ci) => {
    const calls: Promise<Uint8Array>[] = []
    const reqs: Buffer[] = []
    for (let i = 0; i < N; i++) {
      // distinct payloads, mostly small, some above the client's 16 KiB large-body threshold
      const size = i % 100 === 0 ? 20_000 + i : 12 + ((i * 37) % 300)
      const req = Buffer.alloc(size, `c${ci}/i${i};`)
      reqs.push(req)
      calls.push(c.call('transform', req))
    }
    t.equal(c.inFlight, N, `client ${ci}: ${N} calls in flight at once`)
    return Promise.all(calls).then((replies) => replies.filter((r, i) => Buffer.compare(r, expected(reqs[i]!)) !== 0).length)
  })
  const bad = await within(Promise.all(runs), 30_000, '2000 pipelined calls')
  t.same(bad, [0, 0, 0, 0], 'every reply is the answer to its own request')
  t.equal(handled, 4 * N, 'the server handled each request once')
  t.same(
    clients.map((c) => c.inFlight),
    [0, 0, 0, 0],
    'nothing left in flight',
  )
})

t.test('calls of every size, one after another and in bursts, over one connection', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('echo', (req) => req)
  replica.handle('empty', () => '')
  const c = await connectClient(t, endpoint)
  // around the client's 16 KiB large-body threshold and its 256 KiB staging buffer
  const sizes = [0, 1, 100, 1000, 4095, 4096, 5000, 8000, 12_000, 15_000, 16_383, 16_384, 20_000, 100_000, 1024 * 1024]
  const failures: string[] = []
  for (const size of sizes) {
    const rounds = size >= 100_000 ? 5 : 40
    for (let k = 0; k < rounds; k++) {
      const body = Buffer.alloc(size, (size + k) & 0xff)
      let p: Promise<Uint8Array>
      try {
        p = c.call('echo', body)
      } catch (err) {
        failures.push(`${size} bytes, call ${k + 1} in a row: call() threw synchronously: ${String(err)}`)
        break
      }
      const o = await settleWithin(p, 10_000)
      if (o.state !== 'fulfilled') {
        const e = o.state === 'rejected' ? (o.error as CodedError) : undefined
        failures.push(`${size} bytes, call ${k + 1} in a row: ${o.state} ${e?.code ?? ''} ${e?.message ?? ''}`)
        break
      }
      if (Buffer.compare(o.value, body) !== 0) {
        failures.push(`${size} bytes, call ${k + 1} in a row: wrong reply (${o.value.length} bytes)`)
        break
      }
    }
  }
  t.same(failures, [], 'sequential calls of every size are answered with their own bytes')

  // bursts: 40 calls of mixed sizes issued in one tick, ten times
  const burstFailures: string[] = []
  for (let round = 0; round < 10 && burstFailures.length === 0; round++) {
    const bodies = Array.from({ length: 40 }, (_, i) => Buffer.alloc(sizes[(i * 7 + round) % 13]!, (i + round) & 0xff))
    const calls: Promise<Uint8Array>[] = []
    for (const b of bodies) {
      try {
        calls.push(c.call('echo', b))
      } catch (err) {
        burstFailures.push(`round ${round}: call() threw synchronously: ${String(err)}`)
        break
      }
    }
    const outs = await within(Promise.allSettled(calls), 10_000, `burst ${round}`)
    outs.forEach((o, i) => {
      if (o.status === 'rejected') burstFailures.push(`round ${round}, call ${i}: ${(o.reason as CodedError).code} ${(o.reason as Error).message}`)
      else if (Buffer.compare(o.value, bodies[i]!) !== 0) burstFailures.push(`round ${round}, call ${i}: wrong reply`)
    })
  }
  t.same(burstFailures, [], 'bursts of mixed sizes are answered with their own bytes')

  const empty = await within(c.call('empty', 'x'), 5000, 'empty reply')
  t.equal(empty.length, 0, 'an empty reply arrives as zero bytes')
})

t.test('deferred replies: ctx.reply later, ctx.fail with a chosen code, one reply per request', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('later', (req, ctx) => {
    setTimeout(() => ctx.reply(`later:${utf8(req)}`), 30)
  })
  replica.handle('fail-now', (_req, ctx) => {
    ctx.fail('MY_CODE', 'msg')
    ctx.reply('ignored: after fail')
  })
  replica.handle('fail-later', (_req, ctx) => {
    setTimeout(() => ctx.fail('MY_CODE', 'failed later'), 30)
  })
  const repliedFlags: boolean[] = []
  replica.handle('twice', (_req, ctx) => {
    repliedFlags.push(ctx.replied)
    ctx.reply('first')
    repliedFlags.push(ctx.replied)
    ctx.reply('second')
    ctx.fail('NOPE', 'ignored')
    return 'returned, ignored'
  })
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)

  const t0 = Date.now()
  const r = await within(c.call('later', 'x1'), 5000, 'deferred call')
  const elapsed = Date.now() - t0
  t.equal(utf8(r), 'later:x1', 'the deferred reply arrives')
  t.ok(elapsed >= 28, `not before the handler replied (${elapsed} ms)`)

  // 20 deferred calls at once, each with its own reply
  const many = await within(
    Promise.all(Array.from({ length: 20 }, (_, i) => c.call('later', `m${i}`))),
    10_000,
    '20 deferred calls',
  )
  t.same(
    many.map(utf8),
    Array.from({ length: 20 }, (_, i) => `later:m${i}`),
    '20 concurrent deferred calls, each its own reply',
  )

  const e1 = await expectReject(t, c.call('fail-now', ''), { code: 'REMOTE_ERROR', remoteCode: 'MY_CODE', message: /msg/ }, 5000, 'ctx.fail')
  t.ok(e1 instanceof Error, 'an Error')
  await expectReject(t, c.call('fail-later', ''), { code: 'REMOTE_ERROR', remoteCode: 'MY_CODE', message: /failed later/ }, 5000, 'deferred ctx.fail')

  t.equal(utf8(await within(c.call('twice', ''), 5000, 'twice')), 'first', 'only the first reply counts')
  t.same(repliedFlags, [false, true], 'ctx.replied turns true on the first reply')
  t.equal(utf8(await within(c.call('echo', 'after'), 5000, 'echo')), 'after', 'the next call gets its own reply, not a stray one')
  t.ok(c.connected, 'still connected')
})

t.test('a handler that throws (sync or async) -> HANDLER_ERROR with its message; the server keeps serving', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('throw-sync', () => {
    throw new Error('sync boom')
  })
  replica.handle('throw-async', async () => {
    await sleep(2)
    throw new Error('async boom')
  })
  replica.handle('throw-coded', () => {
    throw Object.assign(new Error('no such key'), { code: 'NOT_FOUND' })
  })
  replica.handle('throw-coded-async', async () => {
    await sleep(1)
    throw Object.assign(new Error('over quota'), { code: 'QUOTA_EXCEEDED' })
  })
  replica.handle('throw-lowercase-code', () => {
    throw Object.assign(new Error('lower-case code'), { code: 'not-a-stable-code' })
  })
  replica.handle('throw-string', () => {
    throw 'a plain string'
  })
  replica.handle('bad-return', () => 42)
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)

  await expectReject(t, c.call('bad-return', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /number/ }, 5000, 'a handler returning a number')
  await expectReject(t, c.call('throw-sync', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /sync boom/ }, 5000, 'sync throw')
  t.equal(utf8(await within(c.call('echo', 'one'), 5000, 'echo')), 'one', 'served after a sync throw')
  await expectReject(t, c.call('throw-async', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /async boom/ }, 5000, 'async throw')
  t.equal(utf8(await within(c.call('echo', 'two'), 5000, 'echo')), 'two', 'served after an async throw')
  await expectReject(t, c.call('throw-coded', ''), { code: 'REMOTE_ERROR', remoteCode: 'NOT_FOUND', message: /no such key/ }, 5000, 'error with a code')
  await expectReject(t, c.call('throw-coded-async', ''), { code: 'REMOTE_ERROR', remoteCode: 'QUOTA_EXCEEDED', message: /over quota/ }, 5000, 'async error with a code')
  await expectReject(t, c.call('throw-lowercase-code', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /lower-case code/ }, 5000, 'a code that is not upper snake case')
  await expectReject(t, c.call('throw-string', ''), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /a plain string/ }, 5000, 'a thrown string')

  // throws interleaved with good calls, pipelined
  const mixed = Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? c.call('echo', `e${i}`) : c.call(i % 4 === 1 ? 'throw-sync' : 'throw-async', '')))
  const outcomes = await within(Promise.allSettled(mixed), 10_000, 'mixed calls')
  const wrong = outcomes.filter((o, i) =>
    i % 2 === 0
      ? o.status !== 'fulfilled' || utf8(o.value) !== `e${i}`
      : o.status !== 'rejected' || (o.reason as CodedError).remoteCode !== 'HANDLER_ERROR',
  )
  t.equal(wrong.length, 0, 'pipelined throws and good calls each get their own answer')
  t.equal(replica.stats().handlerErrors, 6 + 30, 'every throw counted in stats().handlerErrors')
  t.ok(c.connected, 'the connection stays up')
})

t.test('unknown route -> NO_SUCH_ROUTE, the connection stays usable', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)
  let disconnects = 0
  c.events.on('disconnect', () => disconnects++)
  await expectReject(t, c.call('no.such.route', 'x'), { code: 'REMOTE_ERROR', remoteCode: 'NO_SUCH_ROUTE' }, 5000, 'unknown route')
  const Missing = defineService('missing', { m: { request: codecs.text, response: codecs.text } })
  await expectReject(t, c.service(Missing).m('x'), { code: 'REMOTE_ERROR', remoteCode: 'NO_SUCH_ROUTE' }, 5000, 'a service nobody serves')
  t.equal(utf8(await within(c.call('echo', 'still here'), 5000, 'echo')), 'still here')
  t.equal(disconnects, 0, 'no disconnect')
})

t.test('timeouts: TIMEOUT after timeoutMs, a late reply is dropped', async (t) => {
  const { replica, endpoint } = await startServer(t)
  const held: RequestContext[] = []
  replica.handle('hold', (_req, ctx) => {
    held.push(ctx)
  })
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)
  let disconnects = 0
  c.events.on('disconnect', () => disconnects++)

  const t0 = Date.now()
  const e = await expectReject(t, c.call('hold', 'x', { timeoutMs: 100 }), { code: 'TIMEOUT' }, 5000, 'call with timeoutMs 100')
  const elapsed = Date.now() - t0
  t.ok(e instanceof Error)
  t.ok(elapsed >= 95 && elapsed < 2000, `rejected after about 100 ms (${elapsed} ms)`)
  t.equal(c.inFlight, 0, 'no longer in flight')

  await until(() => held.length === 1, 5000, 'the held request')
  held[0]!.reply('too late')
  await sleep(50)
  t.equal(utf8(await within(c.call('echo', 'next'), 5000, 'echo after a late reply')), 'next', 'the late reply is ignored; the next call gets its own')

  // many at once
  const batch = Array.from({ length: 50 }, (_, i) => c.call('hold', `b${i}`, { timeoutMs: 100 + i }))
  const outs = await within(Promise.allSettled(batch), 5000, '50 timing out calls')
  t.equal(outs.filter((o) => o.status === 'rejected' && (o.reason as CodedError).code === 'TIMEOUT').length, 50, '50 calls time out')
  await until(() => held.length === 51, 5000, '51 held requests')
  for (const ctx of held) ctx.reply('late')
  await sleep(50)

  // the client's default timeoutMs
  const c2 = await connectClient(t, { ...endpoint, timeoutMs: 150 })
  const t1 = Date.now()
  await expectReject(t, c2.call('hold', 'd'), { code: 'TIMEOUT' }, 5000, 'call under the client default timeoutMs 150')
  t.ok(Date.now() - t1 >= 140, `not before the default timeout (${Date.now() - t1} ms)`)

  t.equal(utf8(await within(c.call('echo', 'still'), 5000, 'echo')), 'still')
  t.equal(disconnects, 0, 'timeouts and late replies never cost the connection')

  // replies to a client that has gone are dropped by the server
  const c3 = await within(Client.connect(endpoint), 5000, 'connect')
  t.teardown(() => c3.close())
  const base = held.length
  const gone = Array.from({ length: 20 }, (_, i) => observed(c3.call('hold', `g${i}`)))
  await until(() => held.length === base + 20, 5000, '20 more held requests')
  const goneCtx = held.slice(base)
  t.match(goneCtx[0]!.client.address, /^127\.0\.0\.1:\d+$/, 'address while connected')
  await c3.close()
  const closedOutcomes = await within(Promise.allSettled(gone), 5000, 'calls of the closed client')
  t.ok(
    closedOutcomes.every((o) => o.status === 'rejected' && (o.reason as CodedError).code === 'CLOSED'),
    'calls in flight reject with CLOSED when the client closes',
  )
  await until(() => goneCtx[0]!.client.address === '', 5000, "ctx.client.address to become '' once the connection is gone")
  for (const ctx of goneCtx) ctx.reply('to nobody')
  await sleep(50)
  t.equal(utf8(await within(c.call('echo', 'unharmed'), 5000, 'echo')), 'unharmed', 'the server keeps serving after replying to a gone client')
})

t.test('abort: a pending call rejects with ABORTED; an already-aborted signal rejects at once', async (t) => {
  const { replica, endpoint } = await startServer(t)
  const held: RequestContext[] = []
  replica.handle('hold', (_req, ctx) => {
    held.push(ctx)
  })
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, endpoint)

  const ac = new AbortController()
  const p = c.call('hold', 'a', { signal: ac.signal })
  await until(() => held.length === 1, 5000, 'the request to reach the server')
  const reason = new Error('user gave up')
  ac.abort(reason)
  const e = await expectReject(t, p, { code: 'ABORTED' }, 2000, 'aborted call')
  t.equal(e?.cause, reason, 'the abort reason is the cause')
  t.equal(c.inFlight, 0, 'no longer in flight')
  held[0]!.reply('after abort') // dropped by the client
  await sleep(30)
  t.equal(utf8(await within(c.call('echo', 'ok'), 5000, 'echo')), 'ok', 'the reply to the aborted call is dropped; the next call gets its own')

  // already aborted: rejects before any I/O, nothing is sent
  const before = held.length
  const pre = c.call('hold', 'never sent', { signal: AbortSignal.abort() })
  const first = await Promise.race([
    pre.then(
      () => 'resolved',
      (err: CodedError) => err.code,
    ),
    new Promise((r) => setImmediate(() => r('still pending after setImmediate'))),
  ])
  t.equal(first, 'ABORTED', 'an already-aborted signal rejects at once')
  await sleep(50)
  t.equal(held.length, before, 'the request was never sent')

  // aborting after the reply changes nothing
  const ac2 = new AbortController()
  t.equal(utf8(await within(c.call('echo', 'done', { signal: ac2.signal }), 5000, 'echo')), 'done')
  ac2.abort()
  t.equal(c.inFlight, 0)
})

t.test("a call waiting for room (maxInFlight reached, whenFull 'wait') still honours its signal and timeoutMs", async (t) => {
  const { replica, endpoint } = await startServer(t)
  const held: RequestContext[] = []
  replica.handle('hold', (_req, ctx) => {
    held.push(ctx)
  })
  replica.handle('echo', (req) => req)
  const c = await connectClient(t, { ...endpoint, maxInFlight: 1 })
  const blocker = observed(c.call('hold', 'blocker'))
  await until(() => held.length === 1, 5000, 'the blocking request')

  const ac = new AbortController()
  const queuedAborted = observed(c.call('echo', 'queued, aborted', { signal: ac.signal }))
  await sleep(20)
  const t0 = Date.now()
  ac.abort()
  await expectReject(t, queuedAborted, { code: 'ABORTED' }, 1000, 'abort of a call waiting for room')
  t.ok(Date.now() - t0 < 1000, `the abort took effect promptly (${Date.now() - t0} ms)`)

  const t1 = Date.now()
  const queuedTimed = observed(c.call('echo', 'queued, timeoutMs 100', { timeoutMs: 100 }))
  await expectReject(t, queuedTimed, { code: 'TIMEOUT' }, 1500, 'timeoutMs of a call waiting for room')
  t.ok(Date.now() - t1 < 1500, `timed out promptly (${Date.now() - t1} ms)`)

  // a plain call queued behind them must go out as soon as there is room
  const queuedPlain = observed(c.call('echo', 'queued, plain'))
  await sleep(20)
  held[0]!.reply('released')
  t.equal(utf8(await within(blocker, 5000, 'the blocking call')), 'released')
  const o = await settleWithin(queuedPlain, 5000)
  t.equal(o.state, 'fulfilled', `the plain queued call completes once there is room (${o.state})`)
  if (o.state === 'fulfilled') t.equal(utf8(o.value), 'queued, plain')
  await sleep(50)
  t.equal(held.length, 1, 'the aborted and timed-out calls were never sent')
  t.equal(c.inFlight, 0, 'nothing left in flight')
})

t.test('server killed (SIGKILL) mid-call: every call in flight -> CONNECTION_LOST; restarted on the same port, the client reconnects', async (t) => {
  const [replicaPort, clientPort] = await freePorts(2)
  const cluster: ClusterConfig = { id: 'rpc-kill', replicas: [{ id: 1, host: HOST, port: replicaPort!, clientPort: clientPort! }] }
  const env = { NEXRES_CLUSTER: JSON.stringify(cluster), NEXRES_ID: '1' }
  const children: Child[] = []
  t.teardown(async () => {
    for (const ch of children) await ch.kill()
  })
  const spawnServer = async (): Promise<Child> => {
    const ch = spawnFixture('rpc-server.mjs', [], env)
    children.push(ch)
    const m = await ch.waitLine(/^ready (\d+)$/, 20_000, 'server ready')
    t.equal(Number(m[1]), clientPort, 'listening on the configured client port')
    return ch
  }
  const first = await spawnServer()
  const c = await connectClient(t, { host: HOST, port: clientPort!, reconnect: { minMs: 20, maxMs: 200 } })
  const events: string[] = []
  c.events.on('connect', () => events.push('connect'))
  c.events.on('disconnect', () => events.push('disconnect'))
  t.equal(utf8(await within(c.call('echo', 'before'), 5000, 'echo before the kill')), 'before')

  const N = 200
  const inFlight = Array.from({ length: N }, (_, i) => observed(c.call('hold', `h${i}`)))
  await first.waitLine(new RegExp(`^held ${N}$`), 10_000, `the server to hold ${N} requests`)
  // more calls right behind them, some perhaps not read yet by the server
  for (let i = 0; i < 20; i++) inFlight.push(observed(c.call('hold', Buffer.alloc(30_000, i))))
  t.equal(c.inFlight, N + 20, `${N + 20} calls in flight`)
  first.proc.kill('SIGKILL')
  const outcomes = await within(Promise.allSettled(inFlight), 10_000, 'the in-flight calls to settle after SIGKILL')
  const codes = new Map<string, number>()
  for (const o of outcomes) {
    const k = o.status === 'fulfilled' ? 'fulfilled' : String((o.reason as CodedError).code)
    codes.set(k, (codes.get(k) ?? 0) + 1)
  }
  t.same(Object.fromEntries(codes), { CONNECTION_LOST: N + 20 }, 'every call in flight rejects with CONNECTION_LOST')
  t.equal(c.inFlight, 0, 'nothing left in flight')
  await first.waitExit(5000)
  await until(() => !c.connected, 5000, 'the client to notice')
  t.same(events, ['disconnect'], "one 'disconnect' event")

  // while the server is down, calls fail fast instead of hanging
  await expectReject(t, c.call('echo', 'while down'), { code: 'CONNECTION_LOST' }, 10_000, 'a call while the server is down')

  await spawnServer()
  const r = await within(c.call('echo', 'after restart'), 10_000, 'the first call after the restart')
  t.equal(utf8(r), 'after restart', 'the next call after the restart succeeds')
  t.ok(c.connected, 'reconnected')
  t.same(events, ['disconnect', 'connect'], "then one 'connect' event")
  const more = await within(Promise.all(Array.from({ length: 100 }, (_, i) => c.call('echo', `x${i}`))), 10_000, '100 calls after the restart')
  t.same(
    more.map(utf8),
    Array.from({ length: 100 }, (_, i) => `x${i}`),
    'and the connection carries pipelined calls again',
  )
})

t.test("oversize requests: the server's maxRequestBytes (announced in CLIENT_WELCOME) and the client's own limit reject without I/O", async (t) => {
  const { replica, endpoint } = await startServer(t, { maxRequestBytes: 64 * 1024 })
  let handled = 0
  replica.handle('echo', (req) => {
    handled++
    return req
  })

  t.test("above the server limit: the client knows it from CLIENT_WELCOME and rejects that call alone, without I/O", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxRequestBytes: 1024 * 1024, reconnect: { minMs: 10, maxMs: 100 } })
    const events: string[] = []
    c.events.on('connect', () => events.push('connect'))
    c.events.on('disconnect', () => events.push('disconnect'))
    t.equal(c.limits.maxRequestBytes, 64 * 1024, "the server's 64 KiB, below the 1 MiB given")
    t.equal(utf8(await within(c.call('echo', 'small'), 5000, 'echo')), 'small')
    const before = handled
    const big = Buffer.alloc(100 * 1024, 7)
    await expectReject(t, c.call('echo', big), { code: 'REQUEST_TOO_LARGE' }, 10_000, '100 KiB request to a server with maxRequestBytes 64 KiB')
    t.equal(handled, before, 'the handler never saw it')
    t.equal(replica.stats().rejectsByReason.REQUEST_TOO_LARGE ?? 0, 0, 'the server refused nothing')
    const atLimit = Buffer.alloc(64 * 1024, 9)
    const r = await within(c.call('echo', atLimit), 10_000, 'a 64 KiB request after the refusal')
    t.equal(Buffer.compare(r, atLimit), 0, 'a request of exactly maxRequestBytes goes through')
    t.same(events, [], 'the connection was kept')
  })

  t.test("above the client's own maxRequestBytes: REQUEST_TOO_LARGE, nothing sent", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxRequestBytes: 1000 })
    let disconnects = 0
    c.events.on('disconnect', () => disconnects++)
    const before = handled
    const bytes = Buffer.alloc(1001, 1)
    const first = await Promise.race([
      c.call('echo', bytes).then(
        () => 'resolved',
        (err: CodedError) => err.code,
      ),
      new Promise((r) => setImmediate(() => r('still pending after setImmediate'))),
    ])
    t.equal(first, 'REQUEST_TOO_LARGE', '1001 bytes with maxRequestBytes 1000')
    // the limit is in bytes: 600 two-byte characters are 1200 bytes
    await expectReject(t, c.call('echo', 'é'.repeat(600)), { code: 'REQUEST_TOO_LARGE' }, 1000, 'a 1200-byte string')
    await sleep(50)
    t.equal(handled, before, 'nothing reached the server')
    t.equal(c.inFlight, 0)
    const ok = Buffer.alloc(1000, 2)
    t.equal(Buffer.compare(await within(c.call('echo', ok), 5000, '1000 bytes'), ok), 0, 'exactly maxRequestBytes is sent')
    t.equal(disconnects, 0, 'the connection was never touched')
  })
})

t.test('typed services: raw, text, json and msgpack codecs round trip through serve() and client.service()', async (t) => {
  interface Point {
    x: number
    y: number
    label: string
  }
  interface Sum {
    sum: number
    labels: string[]
    nested: { ok: boolean; none: null }
  }
  interface Blob {
    id: number
    name: string
    bin: Uint8Array
    tags: string[]
    big: number
  }
  interface BlobInfo {
    id: number
    size: number
    bin: Uint8Array
    name: string
    route: string
  }
  const Svc = defineService('codecs', {
    raw: { request: codecs.raw, response: codecs.raw },
    text: { request: codecs.text, response: codecs.text },
    json: { request: codecs.json<Point[]>(), response: codecs.json<Sum>() },
    pack: { request: codecs.msgpack<Blob>(), response: codecs.msgpack<BlobInfo>() },
    mixed: { request: codecs.json<{ n: number }>(), response: codecs.text },
  })
  const { replica, endpoint } = await startServer(t)
  replica.serve(Svc, {
    raw: (req) => Uint8Array.from(req).reverse(),
    text: async (req) => {
      await sleep(1)
      return req.toUpperCase()
    },
    json: (req) => ({
      sum: req.reduce((s, p) => s + p.x * p.y, 0),
      labels: req.map((p) => p.label),
      nested: { ok: true, none: null },
    }),
    pack: async (req, ctx) => ({ id: req.id + 1, size: req.bin.length, bin: req.bin, name: req.name, route: ctx.route }),
    mixed: (req) => `n=${req.n}`,
  })
  const c = await connectClient(t, endpoint)
  const api = c.service(Svc)

  // Each result is assigned to a variable of the type the codec promises:
  // this file's own type check (last subtest) fails if the types drift.
  const raw: Uint8Array = await within(api.raw(new Uint8Array([1, 2, 3, 250])), 5000, 'raw')
  t.same([...raw], [250, 3, 2, 1], 'raw')
  const text: string = await within(api.text('héllo wörld ✓'), 5000, 'text')
  t.equal(text, 'HÉLLO WÖRLD ✓', 'text (UTF-8)')
  const sum: Sum = await within(
    api.json([
      { x: 2, y: 3, label: 'a' },
      { x: 4, y: 5, label: 'b"quoted"' },
    ]),
    5000,
    'json',
  )
  t.same(sum, { sum: 26, labels: ['a', 'b"quoted"'], nested: { ok: true, none: null } }, 'json')
  const bin = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff)
  const info: BlobInfo = await within(
    api.pack({ id: 41, name: 'ünïcødé', bin, tags: ['x', 'y'], big: 2 ** 40 + 1 }),
    5000,
    'msgpack',
  )
  t.equal(info.id, 42, 'msgpack: number')
  t.equal(info.size, 300, 'msgpack: the binary arrived whole')
  t.equal(info.name, 'ünïcødé', 'msgpack: string')
  t.equal(info.route, 'codecs.pack', "the handler's ctx names the method's route")
  t.ok(info.bin instanceof Uint8Array, 'msgpack: binary decodes to bytes')
  t.equal(Buffer.compare(info.bin, bin), 0, 'msgpack: binary round trip')
  const mixed: string = await within(api.mixed({ n: 7 }), 5000, 'mixed')
  t.equal(mixed, 'n=7', 'json request, text response')

  // large values, many at once
  const bigText = 'ß'.repeat(50_000)
  const bigRes = await within(Promise.all([api.text(bigText), api.raw(new Uint8Array(70_000).fill(3)), api.mixed({ n: -1 })]), 10_000, 'concurrent typed calls')
  t.equal(bigRes[0], 'SS'.repeat(50_000), '100 KB of text')
  t.equal(bigRes[1].length, 70_000)
  t.equal(bigRes[2], 'n=-1')

  // the route of a method is "<service>.<method>"
  t.equal(utf8(await within(c.call('codecs.text', 'plain call'), 5000, 'plain call on a method route')), 'PLAIN CALL')

  // Compile-time only (never called): wrong types must be rejected by tsc.
  const typeErrors = async (): Promise<void> => {
    // @ts-expect-error a text method takes a string
    await api.text(42)
    // @ts-expect-error a json request must match the codec's type
    await api.json([{ x: 1 }])
    // @ts-expect-error the reply of a text method is a string
    const n: number = await api.text('x')
    // @ts-expect-error there is no such method
    await api.nope('x')
    replica.serve(Svc, {
      raw: (r) => r,
      text: (r) => r,
      json: () => ({ sum: 0, labels: [], nested: { ok: true, none: null } }),
      pack: (r) => ({ id: r.id, size: 0, bin: r.bin, name: r.name, route: '' }),
      // @ts-expect-error the implementation must return the response type
      mixed: () => 42,
    })
    void n
  }
  void typeErrors
})

t.test('1,000 concurrent calls on one connection; maxInFlight with whenFull reject and wait', async (t) => {
  const { replica, endpoint } = await startServer(t)
  // 'gather' answers nothing until 1,000 requests are outstanding at once
  const gathered: [Uint8Array, RequestContext][] = []
  replica.handle('gather', (req, ctx) => {
    gathered.push([req, ctx])
    if (gathered.length === 1000) for (const [r, cx] of gathered) cx.reply(r)
  })
  const held: RequestContext[] = []
  replica.handle('hold', (_req, ctx) => {
    held.push(ctx)
  })
  let outstanding = 0
  let maxOutstanding = 0
  replica.handle('slow', (req, ctx) => {
    outstanding++
    maxOutstanding = Math.max(maxOutstanding, outstanding)
    setTimeout(() => {
      outstanding--
      ctx.reply(req)
    }, 2)
  })
  replica.handle('echo', (req) => req)

  t.test('1,000 at once with maxInFlight 1000', async (t) => {
    const c = await connectClient(t, { ...endpoint, maxInFlight: 1000 })
    let disconnects = 0
    c.events.on('disconnect', () => disconnects++)
    const calls = Array.from({ length: 1000 }, (_, i) => c.call('gather', `g${i}`))
    t.equal(c.inFlight, 1000, '1000 in flight on the client')
    const o = await settleWithin(Promise.all(calls), 20_000)
    if (o.state !== 'fulfilled') {
      t.fail(`the 1000 calls did not complete (${o.state}); the server saw ${gathered.length} of them`)
      return
    }
    t.equal(gathered.length, 1000, 'all 1000 were outstanding at the server at the same time')
    t.equal(o.value.filter((r, i) => utf8(r) !== `g${i}`).length, 0, 'each reply matches its request')
    t.equal(disconnects, 0)
  })

  t.test("maxInFlight 10, whenFull 'reject': the 11th rejects with TOO_MANY_REQUESTS", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxInFlight: 10, whenFull: 'reject' })
    const ten = Array.from({ length: 10 }, (_, i) => observed(c.call('hold', `h${i}`)))
    t.equal(c.inFlight, 10)
    await expectReject(t, c.call('hold', 'eleventh'), { code: 'TOO_MANY_REQUESTS' }, 1000, 'the 11th call')
    await expectReject(t, c.call('echo', 'twelfth'), { code: 'TOO_MANY_REQUESTS' }, 1000, 'the 12th call')
    await until(() => held.length === 10, 5000, '10 held requests')
    await sleep(30)
    t.equal(held.length, 10, 'the refused calls never reached the server')
    for (const ctx of held) ctx.reply(`r:${ctx.requestId}`)
    const replies = await within(Promise.all(ten), 5000, 'the 10 held calls')
    t.equal(replies.length, 10)
    t.equal(utf8(await within(c.call('echo', 'room again'), 5000, 'echo')), 'room again', 'room again once replies came')
  })

  t.test("maxInFlight 10, whenFull 'wait' (default): 200 calls all complete, never more than 10 out", async (t) => {
    const c = await connectClient(t, { ...endpoint, maxInFlight: 10 })
    let maxClient = 0
    const calls = Array.from({ length: 200 }, (_, i) => {
      const p = c.call('slow', `s${i}`)
      maxClient = Math.max(maxClient, c.inFlight)
      return p
    })
    const poll = setInterval(() => (maxClient = Math.max(maxClient, c.inFlight)), 1)
    t.teardown(() => clearInterval(poll))
    const replies = await within(Promise.all(calls), 20_000, '200 calls through 10 slots')
    clearInterval(poll)
    t.equal(replies.filter((r, i) => utf8(r) !== `s${i}`).length, 0, 'each reply matches its request')
    t.ok(maxClient <= 10, `client never had more than 10 in flight (${maxClient})`)
    t.ok(maxOutstanding <= 10, `server never saw more than 10 outstanding (${maxOutstanding})`)
    t.ok(maxOutstanding >= 2, `calls did overlap (${maxOutstanding})`)
  })
})

t.test('failover: replicas [dead, live] connects to the live one; when it goes, the next call moves on', async (t) => {
  const a = await startServer(t)
  const b = await startServer(t)
  a.replica.handle('who', () => 'A')
  b.replica.handle('who', () => 'B')
  const [deadPort] = await freePorts(1)
  const dead: Endpoint = { host: HOST, port: deadPort! }

  const c = await connectClient(t, { replicas: [dead, a.endpoint], reconnect: { minMs: 10, maxMs: 50 } })
  t.equal(utf8(await within(c.call('who', ''), 5000, 'call after failover')), 'A', 'connected to the live replica past the dead one')

  const c2 = await connectClient(t, { replicas: [a.endpoint, b.endpoint], reconnect: { minMs: 10, maxMs: 50 } })
  const connects: number[] = []
  c2.events.on('connect', (ep) => connects.push(ep.port))
  t.equal(utf8(await within(c2.call('who', ''), 5000, 'who')), 'A', 'the first replica of the list first')
  await a.replica.close({ timeoutMs: 0 })
  await until(() => !c2.connected, 5000, 'the client to see replica A go')
  t.equal(utf8(await within(c2.call('who', ''), 10_000, 'who after A closed')), 'B', 'the next call goes to replica B')
  t.same(connects, [b.endpoint.port], "one 'connect' event, for B")

  // every endpoint dead: CONNECTION_LOST, bounded
  const [d1, d2] = await freePorts(2)
  await expectReject(
    t,
    Client.connect({ replicas: [{ host: HOST, port: d1! }, { host: HOST, port: d2! }], reconnect: { minMs: 10, maxMs: 50 } }),
    { code: 'CONNECTION_LOST' },
    10_000,
    'connect with every replica dead',
  )
})

t.test('ctx.client: address 127.0.0.1:<port> and a positive connection id, different per client', async (t) => {
  const { replica, endpoint } = await startServer(t)
  replica.handle('whoami', (_req, ctx) =>
    JSON.stringify({ connectionId: ctx.client.connectionId, address: ctx.client.address, requestId: ctx.requestId, route: ctx.route }),
  )
  interface Who {
    connectionId: number
    address: string
    requestId: number
    route: string
  }
  const c1 = await connectClient(t, endpoint)
  const c2 = await connectClient(t, endpoint)
  const ask = async (c: Client): Promise<Who> => JSON.parse(utf8(await within(c.call('whoami', ''), 5000, 'whoami'))) as Who
  const [a1, a2, b1, b2] = [await ask(c1), await ask(c1), await ask(c2), await ask(c2)]
  for (const w of [a1, a2, b1, b2]) {
    t.match(w.address, /^127\.0\.0\.1:\d+$/, `address ${w.address}`)
    const port = Number(w.address.split(':')[1])
    t.ok(port >= 1 && port <= 65535, 'a real port')
    t.ok(Number.isInteger(w.connectionId) && w.connectionId > 0, `connection id ${w.connectionId} is a positive integer`)
    t.ok(Number.isInteger(w.requestId) && w.requestId > 0, `request id ${w.requestId}`)
    t.equal(w.route, 'whoami')
  }
  t.equal(a1.connectionId, a2.connectionId, 'same connection id for calls of one client')
  t.equal(a1.address, a2.address)
  t.not(a1.connectionId, b1.connectionId, 'different connection ids for two clients')
  t.not(a1.address, b1.address, 'different addresses for two clients')
  t.not(a1.requestId, a2.requestId, 'request ids differ between calls')
  t.equal(b1.connectionId, b2.connectionId)

  // a raw client knows its own port and the connection id from CLIENT_WELCOME
  const raw = await RawClient.open(t, endpoint.port)
  const welcomedId = await raw.handshake()
  raw.write(frame(KIND_REQUEST, routeId('whoami'), 77, new Uint8Array(0)))
  await until(() => raw.rx.length >= FRAME_HEADER && raw.rx.length >= FRAME_HEADER + raw.rx.readUInt32LE(0), 5000, 'the REPLY')
  t.equal(raw.rx[12], KIND_REPLY, 'a REPLY frame')
  t.equal(raw.rx.readUInt32LE(16), 77, 'for request 77')
  const w = JSON.parse(raw.rx.subarray(FRAME_HEADER, FRAME_HEADER + raw.rx.readUInt32LE(0)).toString()) as Who
  t.equal(w.address, `127.0.0.1:${raw.localPort}`, "the address is the client's own host:port")
  t.equal(w.connectionId, welcomedId, 'the connection id is the one CLIENT_WELCOME named')
  t.equal(w.requestId, 77, 'ctx.requestId is the id the client chose')
})

t.test('raw hostile clients on the client port', async (t) => {
  t.test('garbage instead of a handshake -> refused and closed; clients are still served', async (t) => {
    const { replica, endpoint } = await startServer(t)
    replica.handle('echo', (req) => req)
    const before = await connectClient(t, endpoint)
    t.equal(utf8(await within(before.call('echo', '1'), 5000, 'echo')), '1')
    const garbage = Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n'.padEnd(64, 'x'))
    const hostile = await Promise.all(Array.from({ length: 10 }, () => RawClient.open(t, endpoint.port)))
    for (const h of hostile) h.write(garbage)
    const codes = await Promise.all(hostile.map((h) => h.refusal(8000)))
    t.same(codes, Array(10).fill(REJECT.BAD_MAGIC), 'each refused with BAD_MAGIC and closed')
    t.equal(utf8(await within(before.call('echo', '2'), 5000, 'echo')), '2', 'a client connected before is still served')
    const after = await connectClient(t, endpoint)
    t.equal(utf8(await within(after.call('echo', '3'), 5000, 'echo')), '3', 'a new client is served')
    t.equal(replica.stats().rejectsByReason.BAD_MAGIC, 10, '10 BAD_MAGIC counted')
  })

  t.test('a replica HELLO on the client port -> BAD_FRAME', async (t) => {
    const { replica, endpoint } = await startServer(t)
    replica.handle('echo', (req) => req)
    const h = await RawClient.open(t, endpoint.port)
    h.write(clientHello(TYPE_HELLO))
    t.equal(await h.refusal(8000), REJECT.BAD_FRAME, 'BAD_FRAME')
    const c = await connectClient(t, endpoint)
    t.equal(utf8(await within(c.call('echo', 'x'), 5000, 'echo')), 'x')
  })

  t.test('garbage after a valid handshake -> BAD_FRAME; an oversize header -> REQUEST_TOO_LARGE', async (t) => {
    const { replica, endpoint } = await startServer(t, { maxRequestBytes: 1024 })
    replica.handle('echo', (req) => req)
    const c = await connectClient(t, endpoint)
    const h1 = await RawClient.open(t, endpoint.port)
    await h1.handshake()
    const junk = Buffer.alloc(48, 0xee)
    junk.writeUInt32LE(8, 0) // a small length, then junk where kind, flags and ids go
    h1.write(junk)
    t.equal(await h1.refusal(8000), REJECT.BAD_FRAME, 'junk bytes as a frame: BAD_FRAME')
    const h2 = await RawClient.open(t, endpoint.port)
    await h2.handshake()
    h2.write(frame(KIND_DATA, routeId('echo'), 1, Buffer.from('x')))
    t.equal(await h2.refusal(8000), REJECT.BAD_FRAME, 'a DATA frame on a client connection: BAD_FRAME')
    const h3 = await RawClient.open(t, endpoint.port)
    await h3.handshake()
    h3.write(frame(KIND_REQUEST, routeId('echo'), 1, Buffer.from('x'), 5))
    t.equal(await h3.refusal(8000), REJECT.BAD_FRAME, 'a REQUEST with a sender: BAD_FRAME')
    const h4 = await RawClient.open(t, endpoint.port)
    await h4.handshake()
    const header = frame(KIND_REQUEST, routeId('echo'), 1, new Uint8Array(0))
    header.writeUInt32LE(0x7fffffff, 0) // claims 2 GiB, sends no body
    h4.write(header)
    t.equal(await h4.refusal(8000), REJECT.REQUEST_TOO_LARGE, 'a header claiming 2 GiB: REQUEST_TOO_LARGE')
    t.equal(utf8(await within(c.call('echo', 'fine'), 5000, 'echo')), 'fine', 'the honest client is still served')
  })

  t.test('maxClientConnections 2: a third connection is closed at accept, admitted once one closes', async (t) => {
    const { replica, endpoint } = await startServer(t, { maxClientConnections: 2 })
    replica.handle('echo', (req) => req)
    const c1 = await connectClient(t, endpoint)
    const c2 = await connectClient(t, endpoint)
    await expectReject(t, Client.connect({ ...endpoint, connectTimeoutMs: 2000 }), { code: 'CONNECTION_LOST' }, 10_000, 'a third client')
    t.ok((replica.stats().rejectsByReason.TOO_MANY_CONNECTIONS ?? 0) >= 1, 'TOO_MANY_CONNECTIONS counted')
    t.equal(utf8(await within(c1.call('echo', 'a'), 5000, 'echo')), 'a', 'the admitted clients are served')
    await c2.close()
    let c3: Client | undefined
    const end = Date.now() + 5000
    while (c3 === undefined && Date.now() < end) {
      c3 = await Client.connect({ ...endpoint, connectTimeoutMs: 2000 }).catch(() => undefined)
      if (c3 === undefined) await sleep(20)
    }
    if (c3 === undefined) {
      t.fail('no room for a new client within 5 s after one closed')
      return
    }
    const admitted = c3
    t.teardown(() => admitted.close())
    t.equal(utf8(await within(admitted.call('echo', 'b'), 5000, 'echo')), 'b', 'a new client is admitted once one closed')
  })

  t.test('a connection that sends nothing -> closed after handshakeTimeoutMs', async (t) => {
    const { replica, endpoint } = await startServer(t, { handshakeTimeoutMs: 300, clientIdleTimeoutMs: 300 })
    replica.handle('echo', (req) => req)
    const t0 = Date.now()
    const silent = await RawClient.open(t, endpoint.port)
    const partial = await RawClient.open(t, endpoint.port)
    partial.write(clientHello().subarray(0, 10))
    t.equal(await silent.refusal(8000), REJECT.HANDSHAKE_TIMEOUT, 'silent: HANDSHAKE_TIMEOUT')
    t.equal(await partial.refusal(8000), REJECT.HANDSHAKE_TIMEOUT, 'a partial HELLO: HANDSHAKE_TIMEOUT')
    const elapsed = Date.now() - t0
    t.ok(elapsed >= 250, `not before the deadline (${elapsed} ms)`)
  })

  t.test('a client that completes the handshake and then idles -> closed after clientIdleTimeoutMs', async (t) => {
    const { replica, endpoint } = await startServer(t, { handshakeTimeoutMs: 5000, clientIdleTimeoutMs: 300 })
    replica.handle('echo', (req) => req)
    const held: RequestContext[] = []
    replica.handle('hold', (_req, ctx) => {
      held.push(ctx)
    })
    const t0 = Date.now()
    const idle = await RawClient.open(t, endpoint.port)
    await idle.handshake()
    const trickle = await RawClient.open(t, endpoint.port)
    await trickle.handshake()
    const req = frame(KIND_REQUEST, routeId('echo'), 1, Buffer.from('slowly'))
    let sent = 0
    const dripper = setInterval(() => {
      if (sent < req.length && !trickle.closed) trickle.write(req.subarray(sent, ++sent))
    }, 40)
    t.teardown(() => clearInterval(dripper))
    t.equal(await idle.refusal(8000), REJECT.IDLE_TIMEOUT, 'idle after the handshake: IDLE_TIMEOUT')
    t.ok(Date.now() - t0 >= 250, `not before the idle timeout (${Date.now() - t0} ms)`)
    t.equal(await trickle.refusal(8000), REJECT.IDLE_TIMEOUT, 'a frame trickled byte by byte: IDLE_TIMEOUT')
    clearInterval(dripper)

    // a library client with a call in flight longer than the idle timeout is not cut off
    const c = await connectClient(t, endpoint)
    const p = c.call('hold', 'long')
    await until(() => held.length === 1, 5000, 'the held request')
    await sleep(900)
    held[0]!.reply('answered after 900 ms')
    t.equal(utf8(await within(p, 5000, 'the long call')), 'answered after 900 ms', 'a connection with a call in flight is not idle')
    // an idle library client is closed by the server and reconnects on its next call
    await until(() => !c.connected, 5000, 'the idle library client to be closed')
    t.equal(utf8(await within(c.call('echo', 'back'), 5000, 'echo after an idle close')), 'back', 'it reconnects on the next call')
  })
})

t.test("this file's type-level checks compile (typed services, error types)", async (t) => {
  const { default: ts } = await import('typescript')
  const file = fileURLToPath(import.meta.url)
  const program = ts.createProgram([file], {
    noEmit: true,
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2022.d.ts'],
    types: ['node'],
    skipLibCheck: true,
  })
  const diags = ts.getPreEmitDiagnostics(program).filter((d) => d.file === undefined || d.file.fileName.includes('/test/'))
  const text = diags.map((d) => {
    const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined
    return `${d.file?.fileName ?? ''}:${where ? where.line + 1 : '?'}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
  })
  t.same(text, [], 'no type errors (and every @ts-expect-error is an error)')
})
