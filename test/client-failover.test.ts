// Clients when replicas go away: a server killed (SIGKILL) mid-call fails
// every call in flight with CONNECTION_LOST and the client reconnects to it
// once restarted; with several replicas the client fails over to a live one.

import t from 'tap'

import { Client, type ClusterConfig, type Endpoint } from 'nexres-rpc'

import { type Child, spawnFixture } from './child-helpers.js'
import { type CodedError, HOST, utf8, within, expectReject, startServer, connectClient, observed } from './client-support.js'
import { freePorts, until } from './helpers.js'

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
