// Arguments of the wrong kind, as plain JavaScript (or a cast) can pass them,
// on every public entry point: each call throws (or, for methods returning a
// promise, rejects with) InvalidArgumentError — a TypeError with code
// INVALID_ARGUMENT naming the parameter and what arrived — before touching
// any state, and a good call right after still succeeds and is delivered.
// Any ArrayBufferView is sent as its bytes (Float32Array, DataView, a Buffer
// slice), strings as UTF-8. Unknown option keys are CONFIG_INVALID naming
// the key.
import t from 'tap'

import {
  Client,
  type ClusterConfig,
  ConfigError,
  InvalidArgumentError,
  type Message,
  Replica,
  type RequestContext,
  codecs,
  defineService,
  routeId,
  signedBytes,
  verifySigned,
} from 'nexres-rpc'

import { type Tap, loopbackCluster, until } from './helpers.js'

// Calls below pass what the types forbid, as plain JavaScript would.
type Loose = any

/** Payloads that are not bytes or a string (an ArrayBufferView or a string is fine). */
const BAD_PAYLOADS: [string, unknown][] = [
  ['ArrayBuffer', new ArrayBuffer(8)],
  ['number 3', 3],
  ['object', { a: 1 }],
  ['undefined', undefined],
  ['null', null],
  ['symbol Symbol(s)', Symbol('s')],
  ['array', [1, 2, 3]],
  ['bigint 3n', 3n],
  ['boolean true', true],
]
/** Replica ids that are not ids at all. */
const BAD_IDS: [string, unknown][] = [
  ['number NaN', NaN],
  ['number -2', -2],
  ['number 1.5', 1.5],
  ['number 0', 0],
  ['number Infinity', Infinity],
  ['number 2147483648', 2 ** 31],
  ['string "2"', '2'],
  ['undefined', undefined],
  ['null', null],
  ['object', {}],
  ['symbol Symbol(id)', Symbol('id')],
]
/** Route names that are not non-empty strings. */
const BAD_ROUTES: [string, unknown][] = [
  ['undefined', undefined],
  ['null', null],
  ['number 7', 7],
  ['string ""', ''],
  ['object', {}],
  ['symbol Symbol(r)', Symbol('r')],
  ['ArrayBuffer', new ArrayBuffer(2)],
]
const BAD_FUNCTIONS: [string, unknown][] = [
  ['undefined', undefined],
  ['null', null],
  ['number 3', 3],
  ['string "f"', 'f'],
  ['object', {}],
]

/** `fn()` throws InvalidArgumentError naming `parameter` (and `received`, when given). */
function refused(t: Tap, what: string, fn: () => unknown, parameter: string, received?: string): void {
  let err: unknown
  let result: unknown
  try {
    result = fn()
  } catch (e) {
    err = e
  }
  if (err === undefined) {
    if (result instanceof Promise) result.catch(() => undefined)
    t.fail(`${what}: did not throw (returned ${String(result)})`)
    return
  }
  checkError(t, what, err, parameter, received)
}

/** `fn()` returns a promise (it does not throw) that rejects with InvalidArgumentError naming `parameter`. */
async function rejected(t: Tap, what: string, fn: () => Promise<unknown>, parameter: string, received?: string): Promise<void> {
  let p: Promise<unknown>
  try {
    p = fn()
  } catch (e) {
    t.fail(`${what}: threw synchronously (${String(e)}) instead of rejecting`)
    return
  }
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  if (err === undefined) {
    t.fail(`${what}: resolved`)
    return
  }
  checkError(t, what, err, parameter, received)
}

function checkError(t: Tap, what: string, err: unknown, parameter: string, received?: string): void {
  const e = err as InvalidArgumentError
  const ok =
    e instanceof InvalidArgumentError &&
    e instanceof TypeError &&
    e.code === 'INVALID_ARGUMENT' &&
    e.name === 'InvalidArgumentError' &&
    e.parameter === parameter &&
    (received === undefined || e.received === received) &&
    e.message.startsWith(`${parameter}: `)
  t.ok(ok, `${what}: INVALID_ARGUMENT on ${parameter}${received !== undefined ? ` (${received})` : ''} — got ${e?.name} ${e?.code} ${(e as { parameter?: string })?.parameter} ${(e as { received?: string })?.received}: ${e?.message}`)
}

/** `fn()` throws (or rejects with) ConfigError on `field` whose message suggests `hint`. */
async function unknownOption(t: Tap, what: string, fn: () => unknown, field: string, hint: string): Promise<void> {
  let err: unknown
  try {
    const r = fn()
    if (r instanceof Promise) err = await r.then(() => undefined, (e: unknown) => e)
  } catch (e) {
    err = e
  }
  const e = err as ConfigError
  t.ok(
    e instanceof ConfigError && e.code === 'CONFIG_INVALID' && e.field === field && e.message.includes(hint),
    `${what}: CONFIG_INVALID on ${field} suggesting ${hint} (got ${String(err)})`,
  )
}

async function startCluster(t: Tap, n: number, name: string, clientPortOn1 = false): Promise<{ rs: Replica[]; cluster: ClusterConfig }> {
  const cluster = await loopbackCluster(n, name)
  if (clientPortOn1) cluster.replicas[0]!.clientPort = 0
  const rs = await Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster })))
  t.teardown(() => Promise.all(rs.map((r) => r.close({ timeoutMs: 200 }))))
  await Promise.all(rs.map((r) => r.waitForPeers()))
  return { rs, cluster }
}

const bytesOf = (m: Message): number[] => [...m.payload]

t.test('Replica: send, broadcast, sendAsync refuse wrong kinds; a 3-replica cluster still delivers everything after them', async (t) => {
  const { rs } = await startCluster(t, 3, 'args-send')
  const [a, b, c] = rs as [Replica, Replica, Replica]
  const got = new Map<number, { from: number; bytes: number[] }[]>()
  for (const r of rs) {
    got.set(r.id, [])
    r.on('good', (m) => got.get(r.id)!.push({ from: m.from, bytes: bytesOf(m) }))
  }
  const la = a as Loose
  // Good, bad, good, all in one tick: refused calls must leave the staging
  // buffer as it was (before: later sends in the tick were lost, and with 3
  // replicas the flush threw "run out of range" from a microtask).
  a.send(2, 'good', new Uint8Array([1]))
  a.send(3, 'good', new Uint8Array([2]))
  for (const [received, bad] of BAD_PAYLOADS) {
    refused(t, `send payload ${received}`, () => la.send(2, 'good', bad), 'payload', received)
    refused(t, `broadcast payload ${received}`, () => la.broadcast('good', bad), 'payload', received)
  }
  for (const [received, bad] of BAD_IDS) refused(t, `send to ${received}`, () => la.send(bad, 'good', 'x'), 'to', received)
  for (const [received, bad] of BAD_ROUTES) {
    refused(t, `send route ${received}`, () => la.send(2, bad, 'x'), 'route', received)
    refused(t, `broadcast route ${received}`, () => la.broadcast(bad, 'x'), 'route', received)
  }
  refused(t, 'broadcast options a number', () => la.broadcast('good', 'x', 3), 'options', 'number 3')
  refused(t, 'broadcast options null', () => la.broadcast('good', 'x', null), 'options', 'null')
  refused(t, 'broadcast options.sign a string', () => la.broadcast('good', 'x', { sign: 'yes' }), 'options.sign', 'string "yes"')
  await unknownOption(t, 'broadcast { sgin }', () => la.broadcast('good', 'x', { sgin: true }), 'options.sgin', 'sign')
  t.throws(() => a.send(a.id, 'good', 'x'), { code: 'UNKNOWN_PEER' }, 'its own id is a valid id but not a peer: UNKNOWN_PEER')
  t.throws(() => a.send(99, 'good', 'x'), { code: 'UNKNOWN_PEER' }, 'an id outside the cluster: UNKNOWN_PEER')
  // Good sends right after, same tick, of every kind of bytes.
  a.send(3, 'good', new Float32Array([1.5, 2.5]))
  const backing = new Uint8Array([10, 11, 12, 13, 14, 15, 16, 17])
  a.send(2, 'good', new DataView(backing.buffer, 2, 4))
  a.send(2, 'good', Buffer.from(backing.buffer, 5, 3))
  a.broadcast('good', new Uint16Array([0x0102, 0x0304]))
  a.send(3, 'good', 'é')
  t.equal(a.stats().peers.every((p) => p.queuedBytes >= 0), true, 'stats readable')

  // sendAsync: the same checks, as rejections, before any waiting.
  const lb = b as Loose
  for (const [received, bad] of BAD_PAYLOADS) await rejected(t, `sendAsync payload ${received}`, () => lb.sendAsync(1, 'good', bad), 'payload', received)
  for (const [received, bad] of BAD_IDS) await rejected(t, `sendAsync to ${received}`, () => lb.sendAsync(bad, 'good', 'x'), 'to', received)
  for (const [received, bad] of BAD_ROUTES) await rejected(t, `sendAsync route ${received}`, () => lb.sendAsync(1, bad, 'x'), 'route', received)
  await rejected(t, 'sendAsync options a string', () => lb.sendAsync(1, 'good', 'x', 'fast'), 'options', 'string "fast"')
  await rejected(t, 'sendAsync options.signal not a signal', () => lb.sendAsync(1, 'good', 'x', { signal: {} }), 'options.signal', 'object')
  await unknownOption(t, 'sendAsync { signl }', () => lb.sendAsync(1, 'good', 'x', { signl: undefined }), 'options.signl', 'signal')
  await b.sendAsync(1, 'good', new Float64Array([0.5]))
  await b.sendAsync(3, 'good', new DataView(new Uint8Array([42, 43]).buffer, 1, 1))

  const f32 = [...new Uint8Array(new Float32Array([1.5, 2.5]).buffer)]
  const u16 = [...new Uint8Array(new Uint16Array([0x0102, 0x0304]).buffer)]
  const f64 = [...new Uint8Array(new Float64Array([0.5]).buffer)]
  const want = new Map<number, { from: number; bytes: number[] }[]>([
    [1, [{ from: 2, bytes: f64 }]],
    [
      2,
      [
        { from: 1, bytes: [1] },
        { from: 1, bytes: [12, 13, 14, 15] },
        { from: 1, bytes: [15, 16, 17] },
        { from: 1, bytes: u16 },
      ],
    ],
    [
      3,
      [
        { from: 1, bytes: [2] },
        { from: 1, bytes: f32 },
        { from: 1, bytes: u16 },
        { from: 1, bytes: [...Buffer.from('é')] },
        { from: 2, bytes: [43] },
      ],
    ],
  ])
  const count = (m: Map<number, unknown[]>): number => [...m.values()].reduce((s, l) => s + l.length, 0)
  await until(() => count(got) >= count(want), 10_000, 'every good message')
  const sorted = (l: { from: number; bytes: number[] }[]): { from: number; bytes: number[] }[] => [...l].sort((x, y) => x.from - y.from)
  for (const id of [1, 2, 3]) t.same(sorted(got.get(id)!), sorted(want.get(id)!), `replica ${id} got exactly the good messages, each as its bytes (Float32Array: 8 bytes, DataView: its window)`)
  t.equal(count(got), count(want), 'nothing else arrived')
  // A last round from each replica: nothing was left broken.
  for (const r of rs) r.broadcast('good', `from ${r.id}`)
  await until(() => count(got) === count(want) + 6, 10_000, 'a last broadcast from each replica')
  const results = await Promise.all([a, b, c].map((r) => r.close({ timeoutMs: 2000 })))
  t.same(results, [{ undeliveredBytes: {}, remoteUndeliveredBytes: {} }, { undeliveredBytes: {}, remoteUndeliveredBytes: {} }, { undeliveredBytes: {}, remoteUndeliveredBytes: {} }], 'every message was acknowledged: nothing was lost silently')
})

t.test('Replica: on, handle, off, serve, waitForPeers, isConnected, close refuse wrong kinds and stay usable', async (t) => {
  const { rs, cluster } = await startCluster(t, 2, 'args-register', true)
  const [a, b] = rs as [Replica, Replica]
  const la = a as Loose
  for (const [received, bad] of BAD_ROUTES) {
    refused(t, `on route ${received}`, () => la.on(bad, () => undefined), 'route', received)
    refused(t, `handle route ${received}`, () => la.handle(bad, () => 'x'), 'route', received)
    refused(t, `off route ${received}`, () => la.off(bad), 'route', received)
  }
  for (const [received, bad] of BAD_FUNCTIONS) {
    refused(t, `on handler ${received}`, () => la.on('r', bad), 'handler', received)
    refused(t, `handle handler ${received}`, () => la.handle('r', bad), 'handler', received)
  }
  const Svc = defineService('svc', { up: { request: codecs.text, response: codecs.text } })
  for (const [received, bad] of [['undefined', undefined], ['null', null], ['number 3', 3], ['string "svc"', 'svc']] as [string, unknown][]) {
    refused(t, `serve service ${received}`, () => la.serve(bad, { up: (s: string) => s }), 'service', received)
    refused(t, `serve impl ${received}`, () => la.serve(Svc, bad), 'impl', received)
  }
  refused(t, 'serve a hand-made service with a dotted name', () => la.serve({ name: 'a.b', methods: {} }, {}), 'service.name', 'string "a.b"')
  refused(t, 'serve a hand-made service without codecs', () => la.serve({ name: 'ab', methods: { m: { request: 3 } } }, { m: () => 'x' }), 'service.methods.m.request', 'number 3')
  refused(t, 'serve impl method not a function', () => la.serve(Svc, { up: 'x' }), 'impl.up', 'string "x"')
  for (const [received, bad] of BAD_IDS) refused(t, `isConnected ${received}`, () => la.isConnected(bad), 'peer', received)
  await rejected(t, 'waitForPeers peers a number', () => la.waitForPeers(2), 'peers', 'number 2')
  await rejected(t, 'waitForPeers peers [NaN]', () => la.waitForPeers([NaN]), 'peers[0]', 'number NaN')
  await rejected(t, 'waitForPeers peers [2, 1.5]', () => la.waitForPeers([2, 1.5]), 'peers[1]', 'number 1.5')
  await rejected(t, 'waitForPeers options a number', () => la.waitForPeers([2], 5), 'options', 'number 5')
  await rejected(t, 'waitForPeers timeoutMs negative', () => la.waitForPeers([2], { timeoutMs: -1 }), 'options.timeoutMs', 'number -1')
  await rejected(t, 'waitForPeers timeoutMs NaN', () => la.waitForPeers([2], { timeoutMs: NaN }), 'options.timeoutMs', 'number NaN')
  await rejected(t, 'waitForPeers timeoutMs past what a timer can wait', () => la.waitForPeers([2], { timeoutMs: 2 ** 31 }), 'options.timeoutMs', 'number 2147483648')
  await unknownOption(t, 'waitForPeers { timeout }', () => la.waitForPeers([2], { timeout: 5 }), 'options.timeout', 'timeoutMs')
  await rejected(t, 'close options a number', () => la.close(0), 'options', 'number 0')
  await rejected(t, 'close timeoutMs a string', () => la.close({ timeoutMs: '5' }), 'options.timeoutMs', 'string "5"')
  await unknownOption(t, 'close { timeoutMS }', () => la.close({ timeoutMS: 5 }), 'options.timeoutMS', 'timeoutMs')

  // None of that registered anything or closed anything.
  t.equal(a.isConnected(2), true, 'still connected')
  await a.waitForPeers([2], { timeoutMs: 1000 })
  const seen: string[] = []
  a.on('r', (m) => seen.push(m.text()))
  a.handle('r', (req) => Buffer.from(req).toString().toUpperCase())
  a.serve(Svc, { up: (s) => s.toUpperCase() })
  b.send(1, 'r', 'hello')
  await until(() => seen.length === 1, 5000, 'the message')
  t.same(seen, ['hello'], 'the route registered after the refused calls gets its message')
  const c = await Client.connect({ host: '127.0.0.1', port: a.clientPort! })
  t.teardown(() => c.close())
  t.equal(Buffer.from(await c.call('r', 'abc')).toString(), 'ABC', 'handle works')
  t.equal(await c.service(Svc).up('xyz'), 'XYZ', 'serve works')
  t.equal(cluster.id, 'args-register')
})

t.test('Client: connect, call, service stubs, defineService and RequestContext refuse wrong kinds; the connection stays usable', async (t) => {
  const { rs } = await startCluster(t, 1, 'args-client', true)
  const r = rs[0]!
  r.handle('echo', (req) => req)
  r.handle('bad-return', () => new ArrayBuffer(4))
  const ctxResults: { what: string; code?: string; parameter?: string; typeError: boolean }[] = []
  r.handle('ctx', (_req, ctx: RequestContext) => {
    const lc = ctx as Loose
    const attempt = (what: string, fn: () => void): void => {
      try {
        fn()
        ctxResults.push({ what, typeError: false })
      } catch (e) {
        const err = e as InvalidArgumentError
        ctxResults.push({ what, code: err.code, parameter: err.parameter, typeError: err instanceof TypeError })
      }
    }
    attempt('reply ArrayBuffer', () => lc.reply(new ArrayBuffer(2)))
    attempt('reply number', () => lc.reply(3))
    attempt('reply undefined', () => lc.reply(undefined))
    attempt('reply object', () => lc.reply({}))
    attempt('fail code number', () => lc.fail(3, 'm'))
    attempt('fail code lower case', () => lc.fail('nope', 'm'))
    attempt('fail message undefined', () => lc.fail('CODE'))
    t.equal(ctx.replied, false, 'the refused replies left the request unanswered')
    ctx.reply(new Float32Array([1.5]))
    return undefined
  })
  const Svc = defineService('typed', {
    text: { request: codecs.text, response: codecs.text },
    raw: { request: codecs.raw, response: codecs.raw },
    json: { request: codecs.json<{ n: number }>(), response: codecs.json<{ n: number }>() },
  })
  r.serve(Svc, {
    text: (s) => s + '!',
    raw: (b) => b,
    json: ({ n }) => ({ n: n + 1 }),
  })

  const port = r.clientPort!
  const connectLoose = Client.connect as Loose
  await unknownOption(t, 'connect(undefined)', () => connectLoose(undefined), 'options', 'must be an object')
  await unknownOption(t, 'connect { timeOutMs }', () => Client.connect({ host: '127.0.0.1', port, timeOutMs: 5 } as Loose), 'timeOutMs', 'timeoutMs')
  await unknownOption(t, 'connect { reconnect: { maxMS } }', () => Client.connect({ host: '127.0.0.1', port, reconnect: { maxMS: 5 } } as Loose), 'reconnect.maxMS', 'maxMs')
  await unknownOption(t, 'connect { clusterId: 3 }', () => Client.connect({ host: '127.0.0.1', port, clusterId: 3 } as Loose), 'clusterId', 'must be a string')
  await unknownOption(t, 'connect { port: "1" }', () => Client.connect({ host: '127.0.0.1', port: '1' } as Loose), 'port', 'must be an integer')

  const c = await Client.connect({ host: '127.0.0.1', port })
  t.teardown(() => c.close())
  let disconnects = 0
  c.events.on('disconnect', () => disconnects++)
  const lc = c as Loose
  for (const [received, bad] of BAD_PAYLOADS) await rejected(t, `call payload ${received}`, () => lc.call('echo', bad), 'payload', received)
  for (const [received, bad] of BAD_ROUTES) await rejected(t, `call route ${received}`, () => lc.call(bad, 'x'), 'route', received)
  await rejected(t, 'call options a number', () => lc.call('echo', 'x', 5), 'options', 'number 5')
  await rejected(t, 'call options null', () => lc.call('echo', 'x', null), 'options', 'null')
  await rejected(t, 'call timeoutMs NaN', () => lc.call('echo', 'x', { timeoutMs: NaN }), 'options.timeoutMs', 'number NaN')
  await rejected(t, 'call timeoutMs 0', () => lc.call('echo', 'x', { timeoutMs: 0 }), 'options.timeoutMs', 'number 0')
  await rejected(t, 'call timeoutMs a string', () => lc.call('echo', 'x', { timeoutMs: '100' }), 'options.timeoutMs', 'string "100"')
  await rejected(t, 'call signal not a signal', () => lc.call('echo', 'x', { signal: { aborted: false } }), 'options.signal', 'object')
  await unknownOption(t, 'call { timeout }', () => lc.call('echo', 'x', { timeout: 5 }), 'options.timeout', 'timeoutMs')
  t.equal(c.inFlight, 0, 'nothing is in flight after the refused calls')

  // Good calls right after: every kind of bytes arrives as its bytes.
  const backing = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])
  const replies = await Promise.all([
    c.call('echo', new DataView(backing.buffer, 3, 4)),
    c.call('echo', new Float32Array([1.5, 2.5])),
    c.call('echo', backing.subarray(6)),
    c.call('echo', 'plain'),
  ])
  t.same([...replies[0]!], [4, 5, 6, 7], 'a DataView is sent as its window of bytes')
  t.same([...replies[1]!], [...new Uint8Array(new Float32Array([1.5, 2.5]).buffer)], 'a Float32Array as its 8 bytes')
  t.same([...replies[2]!], [7, 8], 'a subarray as its bytes')
  t.equal(Buffer.from(replies[3]!).toString(), 'plain', 'a string as UTF-8')
  await t.rejects(c.call('bad-return', 'x'), { code: 'REMOTE_ERROR', remoteCode: 'HANDLER_ERROR', message: /returned ArrayBuffer/ }, 'a handler returning an ArrayBuffer: HANDLER_ERROR naming it')

  // RequestContext.reply / fail.
  const ctxReply = await c.call('ctx', 'x')
  t.same([...ctxReply], [...new Uint8Array(new Float32Array([1.5]).buffer)], 'ctx.reply with a Float32Array after the refused ones')
  t.same(
    ctxResults,
    [
      { what: 'reply ArrayBuffer', code: 'INVALID_ARGUMENT', parameter: 'payload', typeError: true },
      { what: 'reply number', code: 'INVALID_ARGUMENT', parameter: 'payload', typeError: true },
      { what: 'reply undefined', code: 'INVALID_ARGUMENT', parameter: 'payload', typeError: true },
      { what: 'reply object', code: 'INVALID_ARGUMENT', parameter: 'payload', typeError: true },
      { what: 'fail code number', code: 'INVALID_ARGUMENT', parameter: 'code', typeError: true },
      { what: 'fail code lower case', code: 'INVALID_ARGUMENT', parameter: 'code', typeError: true },
      { what: 'fail message undefined', code: 'INVALID_ARGUMENT', parameter: 'message', typeError: true },
    ],
    'ctx.reply/ctx.fail refuse wrong kinds',
  )

  // Typed services.
  const lcs = c as Loose
  for (const [received, bad] of [['undefined', undefined], ['null', null], ['number 3', 3], ['object', {}]] as [string, unknown][]) {
    refused(t, `client.service ${received}`, () => lcs.service(bad), received === 'object' ? 'def.name' : 'def', received === 'object' ? 'undefined' : received)
  }
  const stub = c.service(Svc) as Loose
  await rejected(t, 'text stub with a number', () => stub.text(3), 'request', 'number 3')
  await rejected(t, 'raw stub with an ArrayBuffer', () => stub.raw(new ArrayBuffer(2)), 'request', 'ArrayBuffer')
  await rejected(t, 'raw stub with a string', () => stub.raw('x'), 'request', 'string "x"')
  await rejected(t, 'json stub with undefined', () => stub.json(undefined), 'request', 'undefined')
  await rejected(t, 'json stub with a symbol', () => stub.json(Symbol('j')), 'request', 'symbol Symbol(j)')
  await rejected(t, 'stub options a number', () => stub.text('x', 3), 'options', 'number 3')
  t.equal(await stub.text('hi'), 'hi!', 'text stub works after')
  t.same([...(await stub.raw(new Uint16Array([0x0201])))], [1, 2], 'raw stub sends any ArrayBufferView as its bytes')
  t.same(await stub.json({ n: 1 }), { n: 2 }, 'json stub works after')

  const defineLoose = defineService as Loose
  refused(t, 'defineService name a number', () => defineLoose(3, {}), 'name', 'number 3')
  refused(t, 'defineService dotted name', () => defineLoose('a.b', {}), 'name', 'string "a.b"')
  refused(t, 'defineService methods undefined', () => defineLoose('s', undefined), 'methods', 'undefined')
  refused(t, 'defineService method not a pair', () => defineLoose('s', { m: 3 }), 'methods.m', 'number 3')
  refused(t, 'defineService codec without decode', () => defineLoose('s', { m: { request: codecs.text, response: { encode: () => new Uint8Array() } } }), 'methods.m.response', 'object')

  t.equal(disconnects, 0, 'the connection never dropped')
  t.equal(Buffer.from(await c.call('echo', 'still here')).toString(), 'still here', 'and still works')
})

t.test('key and route helpers refuse wrong kinds', async (t) => {
  const h = { routeId: routeId as Loose, signedBytes: signedBytes as Loose, verifySigned: verifySigned as Loose }
  refused(t, 'routeId of a number', () => h.routeId(3), 'name', 'number 3')
  refused(t, 'routeId of undefined', () => h.routeId(undefined), 'name', 'undefined')
  const msg = { from: 1, route: 'r', id: 5, incarnation: 9n, payload: new Uint8Array([1]) }
  refused(t, 'signedBytes clusterId a number', () => h.signedBytes(3, msg), 'clusterId', 'number 3')
  refused(t, 'signedBytes msg undefined', () => h.signedBytes('c', undefined), 'msg', 'undefined')
  refused(t, 'signedBytes from NaN', () => h.signedBytes('c', { ...msg, from: NaN }), 'msg.from', 'number NaN')
  refused(t, 'signedBytes route an object', () => h.signedBytes('c', { ...msg, route: {} }), 'msg.route', 'object')
  refused(t, 'signedBytes id negative', () => h.signedBytes('c', { ...msg, id: -1 }), 'msg.id', 'number -1')
  refused(t, 'signedBytes incarnation a number', () => h.signedBytes('c', { ...msg, incarnation: 9 }), 'msg.incarnation', 'number 9')
  refused(t, 'signedBytes payload an ArrayBuffer', () => h.signedBytes('c', { ...msg, payload: new ArrayBuffer(1) }), 'msg.payload', 'ArrayBuffer')
  t.same(
    [...signedBytes('c', { ...msg, payload: new DataView(new Uint8Array([9, 1]).buffer, 1, 1) as Loose })],
    [...signedBytes('c', msg)],
    'a DataView payload is its bytes',
  )
  const cluster: ClusterConfig = { id: 'c', replicas: [{ id: 1, host: '127.0.0.1', port: 1 }] }
  refused(t, 'verifySigned cluster undefined', () => h.verifySigned(undefined, { ...msg, signature: new Uint8Array(64) }), 'cluster', 'undefined')
  refused(t, 'verifySigned signature a string', () => h.verifySigned(cluster, { ...msg, signature: 'sig' }), 'msg.signature', 'string "sig"')
  t.equal(verifySigned(cluster, { ...msg, signature: new Uint8Array(64) }), false, 'a replica without a key: false, as before')
})

t.test('WorkerReplica refuses wrong kinds like a Replica and still sends after them', async (t) => {
  const cluster = await loopbackCluster(2, 'args-worker')
  cluster.replicas[0]!.clientPort = 0
  const a = await Replica.start({ auth: 'none', id: 1, cluster, workers: 1, handlers: new URL('./fixtures/worker-args.mjs', import.meta.url) })
  t.teardown(() => a.close({ timeoutMs: 200 }))
  const b = await Replica.start({ auth: 'none', id: 2, cluster })
  t.teardown(() => b.close({ timeoutMs: 200 }))
  await Promise.all([a.waitForPeers(), b.waitForPeers()])
  const got: number[][] = []
  b.on('w-good', (m) => got.push(bytesOf(m)))
  const c = await Client.connect({ host: '127.0.0.1', port: a.clientPort! })
  t.teardown(() => c.close())
  const results = JSON.parse(Buffer.from(await c.call('probe', '')).toString()) as {
    what: string
    threw: boolean
    code?: string
    parameter?: string
    field?: string
    typeError?: boolean
  }[]
  t.ok(results.length > 0, `${results.length} bad calls made in the worker`)
  for (const r of results) {
    if (r.what === 'broadcast unknown option') {
      t.ok(r.threw && r.code === 'CONFIG_INVALID' && r.field === 'options.sing', `worker: ${r.what}: CONFIG_INVALID (${JSON.stringify(r)})`)
      continue
    }
    const parameter = r.what.startsWith('send to') ? 'to' : r.what.includes('route') ? 'route' : r.what.includes('handler') ? 'handler' : r.what.includes('sign') ? 'options.sign' : 'payload'
    t.ok(r.threw && r.code === 'INVALID_ARGUMENT' && r.typeError === true && r.parameter === parameter, `worker: ${r.what}: INVALID_ARGUMENT on ${parameter} (${JSON.stringify(r)})`)
  }
  await until(() => got.length === 4, 10_000, 'the worker’s good sends')
  t.same(
    got,
    [[...Buffer.from('first')], [...new Uint8Array(new Float32Array([1.5, 2.5]).buffer)], [8, 7, 6], [...Buffer.from('last')]],
    'the good sends before and after the refused ones all arrived, in order, each as its bytes',
  )
})
