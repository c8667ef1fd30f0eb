// ioSpinMicros (docs/API.md): io threads keep polling for that long after
// their last event before they sleep. Checked: bad values refused by name;
// replicas that spin serve everything as replicas that do not (streams both
// ways in order, pipelined calls to sync, async and worker-thread handlers, hostile
// connections on both ports refused with their reason meanwhile); the io
// threads are busy while traffic comes more often than the spin, use no CPU
// once it stops, and are gone after close().
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import t from 'tap'

import { Client, ConfigError, Replica, type ReplicaOptions } from 'nexres-rpc'

import { RawClient, REJECT, connectClient, startServer, utf8, within } from './client-support.js'
import { honestStream, keyedPair, loopbackCluster, until } from './helpers.js'

// CPU time (ms) of this process's io threads ("nexres-io"), by thread id.
function ioThreads(): Map<string, number> {
  const out = new Map<string, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    let stat: string
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() !== 'nexres-io') continue
      stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
    } catch {
      continue // the thread ended meanwhile
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime + stime in clock ticks: USER_HZ, which Linux fixes at 100 for /proc.
    out.set(tid, ((Number(f[11]) + Number(f[12])) * 1000) / 100)
  }
  return out
}

function cpuSince(before: Map<string, number>): number[] {
  const now = ioThreads()
  return [...before].map(([tid, ms]) => (now.get(tid) ?? ms) - ms)
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

t.test('bad ioSpinMicros values are refused by name, nothing started', async (t) => {
  const cluster = await loopbackCluster(1, 'spin-args')
  for (const v of [-1, 10_001, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '100', true, null]) {
    let err: unknown
    let started: Replica | undefined
    try {
      started = await Replica.start({ auth: 'none', id: 1, cluster, ioSpinMicros: v } as unknown as ReplicaOptions)
    } catch (e) {
      err = e
    }
    if (started !== undefined) {
      await started.close({ timeoutMs: 0 })
      t.fail(`ioSpinMicros ${String(v)}: started`)
      continue
    }
    t.ok(err instanceof ConfigError, `ioSpinMicros ${String(v)}: ConfigError (${String(err)})`)
    t.equal((err as ConfigError).code, 'CONFIG_INVALID')
    t.equal((err as ConfigError).field, 'ioSpinMicros')
  }
  t.same([...ioThreads().keys()], [], 'no io thread left running')
  // The bounds themselves are taken.
  for (const v of [0, 10_000]) {
    const r = await Replica.start({ auth: 'none', id: 1, cluster, ioSpinMicros: v })
    await r.close({ timeoutMs: 0 })
  }
})

t.test('spinning replicas: streams both ways, pipelined sync and async calls, hostile connections on both ports', async (t) => {
  const [a, b] = await keyedPair(t, 'spin', { ioSpinMicros: 2000 })
  const ab = honestStream(t, a, b, 'ab')
  const ba = honestStream(t, b, a, 'ba')

  const { replica, endpoint } = await startServer(t, { ioSpinMicros: 2000 })
  replica.handle('echo', (req) => req)
  replica.handle('later', async (req) => {
    await sleep(req[0]! % 3)
    return req
  })
  const c = await connectClient(t, endpoint)
  // Hostile meanwhile: garbage on the client port, and on a replica port.
  const junk = Buffer.from('GET / HTTP/1.1\r\n\r\n'.padEnd(64, 'x'))
  const hostile = await Promise.all(Array.from({ length: 8 }, () => RawClient.open(t, endpoint.port)))
  for (const h of hostile) h.write(junk)
  const onReplicaPort = await RawClient.open(t, a.port)
  onReplicaPort.write(junk)

  let wrong = 0
  for (let round = 0; round < 40; round++) {
    const calls = Array.from({ length: 64 }, (_, i) => {
      const body = `${round}:${i}`
      return c.call(i % 2 === 0 ? 'echo' : 'later', body).then((r) => {
        if (utf8(r) !== body) wrong++
      })
    })
    await within(Promise.all(calls), 20_000, `round ${round} of 64 calls`)
  }
  t.equal(wrong, 0, '2,560 calls (sync and async handlers) answered with their own bodies')
  t.same(await Promise.all(hostile.map((h) => h.refusal(8000))), Array(8).fill(REJECT.BAD_MAGIC), 'client-port garbage: BAD_MAGIC each')
  t.equal(await onReplicaPort.refusal(8000), REJECT.BAD_MAGIC, 'replica-port garbage: BAD_MAGIC')
  t.equal(replica.stats().rejectsByReason.BAD_MAGIC, 8)
  await until(() => ab.got > 2000 && ba.got > 2000, 20_000, 'streams under way')
  await ab.finish()
  await ba.finish()
  const late = await Client.connect({ host: endpoint.host, port: endpoint.port })
  t.equal(utf8(await within(late.call('echo', 'after'), 5000, 'echo after')), 'after', 'a client connected afterwards is served')
  await late.close()
})

t.test('spinning io threads in front of worker handlers: 64 pipelined CPU-heavy calls per round, each answered right', async (t) => {
  const handlers = fileURLToPath(new URL('./fixtures/worker-handlers.mjs', import.meta.url))
  const { endpoint } = await startServer(t, { ioSpinMicros: 2000, workers: 2, handlers })
  const c = await connectClient(t, endpoint)
  const sha50 = (b: Buffer): Buffer => {
    let h = b
    for (let i = 0; i < 50; i++) h = createHash('sha256').update(h).digest()
    return h
  }
  let wrong = 0
  for (let round = 0; round < 10; round++) {
    const calls = Array.from({ length: 64 }, (_, i) => {
      const body = Buffer.from(`${round}:${i}`)
      return c.call('sha', body).then((r) => {
        if (!Buffer.from(r).equals(sha50(body))) wrong++
      })
    })
    await within(Promise.all(calls), 20_000, `round ${round}`)
  }
  t.equal(wrong, 0, '640 calls answered by the workers with their own digests')
})

t.test('busy while traffic comes faster than the spin, no CPU once it stops, threads gone after close', { skip: process.platform !== 'linux' && '/proc only' }, async (t) => {
  const cluster = await loopbackCluster(2, 'spin-cpu')
  // One io thread each, so that every io thread of the receiver carries the link.
  const a = await Replica.start({ auth: 'none', id: 1, cluster, ioThreads: 1 })
  const b = await Replica.start({ auth: 'none', id: 2, cluster, ioThreads: 1, ioSpinMicros: 10_000 })
  t.teardown(() => Promise.all([a.close({ timeoutMs: 0 }), b.close({ timeoutMs: 0 })]))
  await a.waitForPeers()
  await b.waitForPeers()
  let got = 0
  b.on('m', () => got++)
  const threads = ioThreads()
  t.equal(threads.size, 2, 'one io thread per replica, named nexres-io')

  // A message every 2 ms for ~600 ms: within b's 10 ms spin, its io thread
  // keeps polling between them; a's (no spin) sleeps between its sends.
  const before = ioThreads()
  const start = performance.now()
  let sent = 0
  while (performance.now() - start < 600) {
    a.send(2, 'm', 'tick')
    sent++
    await sleep(2)
  }
  const wall = performance.now() - start
  await until(() => got === sent, 10_000, `all ${sent} ticks`)
  const used = cpuSince(before).sort((x, y) => x - y)
  t.comment(`io thread CPU over ${Math.round(wall)} ms of ticks: ${used.join(' ms, ')} ms`)
  t.ok(used[1]! >= wall / 3, `the spinning thread was busy (${used[1]} ms of ${Math.round(wall)})`)
  t.ok(used[0]! <= used[1]! / 4, `the other slept between ticks (${used[0]} ms)`)

  // Idle: once the spin is over, no CPU (the heartbeat wakes them once a
  // second, for one spin each); a thread that never slept would use ~1000 ms.
  await sleep(100)
  const idle0 = ioThreads()
  await sleep(1000)
  const idle = cpuSince(idle0)
  t.ok(Math.max(...idle) <= 250, `io threads idle: ${idle.join(' ms, ')} ms of CPU over 1 s`)

  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
  t.same([...ioThreads().keys()], [], 'every io thread ended with close()')
})
