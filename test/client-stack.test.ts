// A call's rejection carries the caller's stack, also when it is raised
// later from a timer, a reply or a lost connection: the async functions
// awaiting the call appear in it (V8's async stack trace, taken when the
// call fails).
import t from 'tap'

import { Client, Replica, RemoteError, TimeoutError } from 'nexres-rpc'

import { type Tap, loopbackCluster } from './helpers.js'

async function server(t: Tap, name: string): Promise<{ r: Replica; port: number }> {
  const cluster = await loopbackCluster(1, name)
  cluster.replicas[0]!.clientPort = 0
  const r = await Replica.start({ auth: 'none', id: 1, cluster })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  r.handle('never', () => new Promise<Uint8Array>(() => {}))
  r.handle('fails', () => {
    throw new Error('handler failed')
  })
  return { r, port: r.clientPort! }
}

async function callerThatTimesOut(c: Client): Promise<unknown> {
  try {
    return await c.call('never', new Uint8Array([1]), { timeoutMs: 50 })
  } catch (e) {
    return e
  }
}

async function callerOfAFailingRoute(c: Client): Promise<unknown> {
  try {
    return await c.call('fails', new Uint8Array([1]))
  } catch (e) {
    return e
  }
}

async function awaitsOneCall(c: Client, n: number): Promise<unknown> {
  try {
    return await c.call('never', new Uint8Array([n]))
  } catch (e) {
    return e
  }
}

async function callerWhenTheServerGoes(c: Client, r: Replica): Promise<unknown[]> {
  const calls = [awaitsOneCall(c, 1), awaitsOneCall(c, 2)]
  await new Promise((resolve) => setTimeout(resolve, 50))
  await r.close({ timeoutMs: 0 })
  return Promise.all(calls)
}

t.test('a timeout raised by the sweep timer names the caller', async (t) => {
  const { port } = await server(t, 'stack-timeout')
  const c = await Client.connect({ host: '127.0.0.1', port, clusterId: 'stack-timeout' })
  t.teardown(() => c.close())
  const err = await callerThatTimesOut(c)
  t.type(err, TimeoutError)
  t.match((err as Error).stack, /callerThatTimesOut/, 'the stack shows the call site')
  t.match((err as Error).stack, /^TimeoutError|TIMEOUT|no reply/m, 'and the error itself first')
})

t.test('an error reply names the caller', async (t) => {
  const { port } = await server(t, 'stack-remote')
  const c = await Client.connect({ host: '127.0.0.1', port, clusterId: 'stack-remote' })
  t.teardown(() => c.close())
  const err = await callerOfAFailingRoute(c)
  t.type(err, RemoteError)
  t.match((err as Error).stack, /callerOfAFailingRoute/)
})

t.test('calls failed together by a lost connection each get their own error with the caller', async (t) => {
  const { r, port } = await server(t, 'stack-lost')
  const c = await Client.connect({ host: '127.0.0.1', port, clusterId: 'stack-lost', reconnect: { minMs: 10, maxMs: 20 } })
  t.teardown(() => c.close())
  const [a, b] = await callerWhenTheServerGoes(c, r)
  t.ok(a instanceof Error && b instanceof Error, 'both calls failed')
  t.not(a, b, 'one error object per call')
  t.equal((a as Error).constructor, (b as Error).constructor, 'of the same class')
  t.match((a as Error).stack, /awaitsOneCall/)
  t.equal(((a as Error).stack ?? '').split('at the call:').length, 2, 'the call site appended once')
  t.equal((a as { code?: string }).code, (b as { code?: string }).code, 'same code')
})
