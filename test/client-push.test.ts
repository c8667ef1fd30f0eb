// Replies from any replica, and pushes (issue 12 item 3), over real sockets
// on 127.0.0.1: replica.push(clientId, route, payload) reaches a keyed
// client's client.on(route) in order, returns false (queuing nothing) for a
// client not connected or not reading; replica.replyTo answers a request
// that reached the replica through another (a leader forwarding ctx.origin),
// counted toward the client's quorum call; replies to requests never made,
// a second reply, and wrong ones from a lying replica are never counted.
import { Socket } from 'node:net'

import t from 'tap'

import { clientKeyPair, finishKeyed, keyedHello } from '../lib/client-auth.js'
import { readWelcome } from '../lib/client-handshake.js'
import { decodeKey } from '../lib/config.js'

import { Client, InvalidArgumentError, QuorumError, Replica, type RequestOrigin, generateKeyPair } from 'nexres-rpc'

import { HOST, connectClient, expectReject, sleep, startServer, utf8 } from './client-support.js'
import { type Tap, freePorts, timeBound, until } from './helpers.js'

t.test('push reaches a keyed client in order; false for a client not connected', async (t) => {
  const server = await startServer(t)
  const k = generateKeyPair()
  let id: string | undefined
  server.replica.handle('hello', (_req, ctx) => {
    id = ctx.client.id
    return 'hi'
  })
  server.replica.handle('echo', (req) => req)
  const c = await connectClient(t, { ...server.endpoint, privateKey: k.privateKey, maxInFlight: 4 })
  const got: string[] = []
  const from = new Set<number>()
  c.on('news', (payload, info) => {
    got.push(utf8(payload))
    from.add(info.replica)
  })
  await c.call('hello', '')
  t.equal(id, k.publicKey, 'the replica knows the client by its key')
  // Pushes interleaved with calls: neither disturbs the other (pushes are
  // not replies: the connection's unanswered requests are untouched).
  const calls: Promise<Uint8Array>[] = []
  for (let i = 0; i < 500; i++) {
    t.equal(server.replica.push(id!, 'news', `n${i}`), true)
    if (i % 5 === 0) calls.push(c.call('echo', `e${i}`))
  }
  const echoed = await Promise.all(calls)
  t.same(echoed.map(utf8), calls.map((_, j) => `e${j * 5}`), '100 calls answered while 500 pushes arrived')
  await until(() => got.length === 500, timeBound(5000), () => `500 pushes (${got.length})`)
  t.same(got, Array.from({ length: 500 }, (_, i) => `n${i}`), 'in order')
  t.same([...from], [1], 'each says which replica pushed it')
  t.equal(server.replica.push(generateKeyPair().publicKey, 'news', 'x'), false, 'a client never connected: false')
  const errors: unknown[] = []
  c.events.on('handler-error', (e) => errors.push(e))
  c.on('boom', () => {
    throw new Error('push handler fails')
  })
  server.replica.push(id!, 'boom', 'x')
  server.replica.push(id!, 'unhandled', 'x') // no handler: dropped
  server.replica.push(id!, 'news', 'after')
  await until(() => got.length === 501, timeBound(5000), 'the push after a throwing handler')
  t.equal((errors[0] as Error | undefined)?.message, 'push handler fails', "a throwing push handler is the client's 'handler-error' event")
  await c.close()
  await until(() => !server.replica.push(id!, 'news', 'x'), timeBound(5000), 'push false once the client closed')
  t.pass('push returns false once the client is gone')
  t.throws(() => server.replica.push('not-a-key', 'news', 'x'), InvalidArgumentError, 'a bad client id: INVALID_ARGUMENT')
  t.throws(() => server.replica.push(k.publicKey, 'news', 42 as unknown as string), InvalidArgumentError, 'a bad payload: INVALID_ARGUMENT')
  t.throws(() => server.replica.replyTo(k.publicKey, -1, 'r', 'x'), InvalidArgumentError, 'a bad request id: INVALID_ARGUMENT')
  t.throws(() => server.replica.replyTo(undefined as unknown as string, 1, 'r', 'x'), InvalidArgumentError, 'no client id (a client without a key): INVALID_ARGUMENT')
})

t.test('a client that does not read: push turns false, nothing queued without bound', async (t) => {
  const server = await startServer(t)
  const pair = clientKeyPair(decodeKey('k', generateKeyPair().privateKey))
  // A raw keyed client that completes its handshake, then never reads.
  const s = new Socket()
  t.teardown(() => s.destroy())
  s.on('error', () => {})
  await new Promise<void>((r) => s.connect(server.endpoint.port, HOST, () => r()))
  const h = keyedHello('', pair, false)
  s.write(h.hello)
  let buf = Buffer.alloc(0)
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d])
  }
  s.on('data', onData)
  await until(() => {
    const w = readWelcome(buf, server.endpoint, false, '')
    return w !== undefined && !(w instanceof Error)
  }, timeBound(5000), 'the CLIENT_WELCOME')
  const w = readWelcome(buf, server.endpoint, false, '')
  if (w === undefined || w instanceof Error || w.proof === undefined) throw new Error('no keyed welcome')
  const session = finishKeyed(h, pair, w.proof, undefined, false)
  if (typeof session === 'string') throw new Error(session)
  s.write(session.authFrame)
  await sleep(100)
  s.off('data', onData)
  s.pause()
  const id = Buffer.from(pair.publicKey).toString('base64url')
  const mib = new Uint8Array(1 << 20)
  let accepted = 0
  for (let i = 0; i < 400; i++) {
    if (!server.replica.push(id, 'flood', mib)) break
    accepted++
    if (i % 8 === 7) await sleep(5)
  }
  t.ok(accepted < 400, `push turned false after ${accepted} MiB the client did not read`)
  t.ok(accepted >= 1, 'the first pushes were taken')
})

/**
 * Four replicas (f = 1). 'put' on the leader forwards ctx.origin with the
 * request to every other replica, which answers the client with replyTo;
 * replica `liar` answers wrong (and twice, and to ids never asked).
 */
async function forwarding(t: Tap, name: string, liar: number | undefined, leaderDelayMs: number | undefined) {
  const ports = await freePorts(4)
  const keys = ports.map(() => generateKeyPair())
  const cluster = { id: name, replicas: ports.map((port, i) => ({ id: i + 1, host: HOST, port, clientPort: 0, publicKey: keys[i]!.publicKey })) }
  const replicas: Replica[] = []
  const handled = [0, 0, 0, 0]
  for (let id = 1; id <= 4; id++) {
    const r = await Replica.start({ id, cluster, privateKey: keys[id - 1]!.privateKey })
    t.teardown(() => r.close({ timeoutMs: 0 }))
    replicas.push(r)
  }
  await Promise.all(replicas.map((r) => r.waitForPeers()))
  replicas.forEach((r, i) => {
    const id = i + 1
    const answer = (req: string): string => (id === liar ? 'lie' : `ok:${req}`)
    r.handle('put', (req, ctx) => {
      handled[i]!++
      r.broadcast('fwd', JSON.stringify({ origin: ctx.origin, req: utf8(req) }))
      // The leader's own reply: late, or never (undefined).
      if (leaderDelayMs !== undefined) setTimeout(() => ctx.reply(answer(utf8(req))), leaderDelayMs)
    })
    r.on('fwd', (msg) => {
      const { origin, req } = JSON.parse(utf8(msg.payload)) as { origin: RequestOrigin; req: string }
      r.replyTo(origin.clientId!, origin.requestId, origin.route, answer(req))
      if (id === liar) {
        r.replyTo(origin.clientId!, origin.requestId, origin.route, 'second lie')
        r.replyTo(origin.clientId!, origin.requestId + 1000, origin.route, 'never asked')
      }
    })
  })
  const endpoints = replicas.map((r, i) => ({ host: HOST, port: r.clientPort!, publicKey: keys[i]!.publicKey }))
  return { replicas, endpoints, handled }
}

t.test("'leader': the others answer through replyTo, counted toward the quorum", async (t) => {
  // The leader never answers itself: a quorum of 3 can only come from the
  // three others' replyTo, and none of them is asked while the leader's
  // call is open.
  const { endpoints, handled } = await forwarding(t, 'fwd-honest', undefined, undefined)
  const c = await Client.connect({ replicas: endpoints, f: 1, privateKey: generateKeyPair().privateKey })
  t.teardown(() => c.close())
  await until(() => c.connected, timeBound(5000), 'connected')
  await sleep(100) // every member connected (replyTo needs the client's connection on each replica)
  for (let i = 0; i < 50; i++) t.equal(utf8(await c.call('put', `k${i}`, { quorum: 3, to: 'leader' })), `ok:k${i}`)
  t.same(handled, [50, 0, 0, 0], 'only the leader ran the handler: each quorum of 3 came from replyTo')
})

t.test('a lying replica answering through replyTo, twice, and to ids never asked: never counted twice', async (t) => {
  const { endpoints } = await forwarding(t, 'fwd-liar', 3, 10)
  const c = await Client.connect({ replicas: endpoints, f: 1, privateKey: generateKeyPair().privateKey })
  t.teardown(() => c.close())
  await sleep(150)
  for (let i = 0; i < 30; i++) t.equal(utf8(await c.call('put', `k${i}`, { quorum: 3, to: 'leader' })), `ok:k${i}`)
  const e = await expectReject(t, c.call('put', 'x', { quorum: 4, to: 'leader', timeoutMs: 2000 }), { code: 'NO_QUORUM' }, timeBound(5000), 'quorum 4 with a liar')
  t.ok(e instanceof QuorumError, 'a QuorumError')
  const replies = (e as QuorumError | undefined)?.replies ?? []
  t.equal(replies.filter((r) => r.reply !== undefined && utf8(r.reply) === 'lie').length, 1, 'the liar counted once, with its first answer')
  // Decided as soon as 4 equal replies became impossible: when the lie came.
  t.ok(replies.every((r) => r.reply === undefined || ['ok:x', 'lie'].includes(utf8(r.reply))), 'no second lie, no reply to an id never asked, among the replies')
})

t.test('a client without a key cannot be answered elsewhere: ctx.origin.clientId is undefined', async (t) => {
  const server = await startServer(t)
  let origin: RequestOrigin | undefined
  server.replica.handle('o', (_req, ctx) => {
    origin = ctx.origin
    return JSON.stringify(ctx.origin)
  })
  const c = await connectClient(t, server.endpoint)
  await c.call('o', '')
  t.equal(origin?.clientId, undefined, 'no client id')
  t.equal(origin?.route, 'o', 'the route')
  t.equal(typeof origin?.requestId, 'number', 'the request id')
})
