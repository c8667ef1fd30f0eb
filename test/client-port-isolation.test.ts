// The client port cannot take what replica links need (issue: "the client
// port can stall replica traffic"). A receiver replica with a client port runs
// in its own process; an attacker in this process holds 2,000 handshaken idle
// client connections and 200 requests that declare 4 MiB and send 1 MiB,
// while peers stream 200,000 numbered messages each: every message arrives
// in order, a sender that connects during the attack is delivered too, a new
// client's call succeeds, and the receiver's client-port memory stays within
// maxClientReceiveBytes.
import { type Socket, connect } from 'node:net'

import t from 'tap'

import * as wire from '../lib/wire.js'

import { Client } from '../lib/index.js'
import { type Child, lastCount, spawnFixture } from './child-helpers.js'
import { clientHello, fdSoftLimit, freePorts, requestHeader, until } from './helpers.js'

const HOST = '127.0.0.1'
const HELLO_FIXED = wire.HELLO_FIXED_BYTES
const MiB = 1024 * 1024

/** A raw client connection that completes the handshake and then does what it is told. */
function openHandshaken(port: number, held: Socket[]): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: HOST, port })
    held.push(s)
    let got = 0
    const timer = setTimeout(() => reject(new Error('no CLIENT_WELCOME within 20 s')), 20_000)
    s.on('error', () => {})
    s.on('connect', () => s.write(clientHello()))
    s.on('data', (d: Buffer) => {
      got += d.length
      if (got >= HELLO_FIXED) {
        clearTimeout(timer)
        s.removeAllListeners('data')
        s.on('data', () => {})
        resolve(s)
      }
    })
    s.on('close', () => {
      clearTimeout(timer)
      reject(new Error('closed before CLIENT_WELCOME'))
    })
  })
}

async function inBatches<T>(n: number, batch: number, f: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = []
  for (let i = 0; i < n; i += batch) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(batch, n - i) }, (_, k) => f(i + k)))))
  }
  return out
}

async function stats(c: Child): Promise<{ rss: number; receiveBytesAllocated: number; clientReceiveBytesAllocated: number; clients: number }> {
  const from = c.lines.length
  c.proc.stdin!.write('stats\n')
  await until(() => c.lines.slice(from).some((l) => l.startsWith('stats ')), 10_000, 'stats line')
  const line = c.lines.slice(from).find((l) => l.startsWith('stats '))!
  return JSON.parse(line.slice(6)) as { rss: number; receiveBytesAllocated: number; clientReceiveBytesAllocated: number; clients: number }
}

const SOFT = fdSoftLimit()
// 2 descriptors per attacker connection would be ours and the receiver's: the
// receiver is another process, so one each here.
const IDLE = SOFT >= 4096 ? 2000 : Math.max(100, SOFT - 600)
const HALF = SOFT >= 4096 ? 200 : 50
const COUNT = 200_000

t.test('client port attack does not stall replica links', async (t) => {
  if (IDLE < 2000) t.comment(`fd soft limit ${SOFT}: scaled down to ${IDLE} idle connections`)
  const [p1, p2, p3, c1] = await freePorts(4)
  const cluster = {
    id: 'isolation',
    replicas: [
      { id: 1, host: HOST, port: p1!, clientPort: c1! },
      { id: 2, host: HOST, port: p2! },
      { id: 3, host: HOST, port: p3! },
    ],
  }
  const env = { NEXRES_CLUSTER: JSON.stringify(cluster) }
  // A long idle timeout: the attacker's connections stay for the whole test.
  const receiver = spawnFixture('receiver.mjs', [], {
    ...env,
    NEXRES_ID: '1',
    NEXRES_OPTIONS: JSON.stringify({ clientIdleTimeoutMs: 600_000 }),
  })
  const children: Child[] = [receiver]
  const held: Socket[] = []
  t.teardown(async () => {
    for (const s of held) s.destroy()
    await Promise.all(children.map((c) => c.kill()))
  })
  await receiver.waitLine(/^ready /, 20_000, 'receiver ready')
  const base = await stats(receiver)

  // Quiet: replica 2 streams COUNT messages.
  const quietSender = spawnFixture('sender.mjs', [], { ...env, NEXRES_ID: '2', NEXRES_TO: '1', NEXRES_COUNT: String(COUNT), NEXRES_PER_TICK: '4000' })
  children.push(quietSender)
  await quietSender.waitLine(/^up$/, 30_000, 'quiet sender up')
  const q0 = Date.now()
  await until(() => lastCount(receiver).count >= COUNT, 60_000, `${COUNT} quiet messages`)
  const quietMs = Date.now() - q0
  t.equal(lastCount(receiver).bad, 0, 'quiet stream in order')

  // The attack: handshaken idle connections, then half-sent 4 MiB requests.
  const idle = await inBatches(IDLE, 200, () => openHandshaken(c1!, held))
  t.equal(idle.length, IDLE, `${IDLE} idle client connections handshaken`)
  const half = await inBatches(HALF, 50, async (i) => {
    const s = await openHandshaken(c1!, held)
    s.write(requestHeader(4 * MiB, i + 1))
    s.write(Buffer.alloc(MiB, 1))
    return s
  })
  t.equal(half.length, HALF, `${HALF} connections each sending 1 MiB of a declared 4 MiB request`)
  // Let the receiver read what it will of the half-sent requests.
  await new Promise((r) => setTimeout(r, 500))
  const during = await stats(receiver)
  t.ok(
    during.clientReceiveBytesAllocated <= 64 * MiB,
    `client-port receive memory ${(during.clientReceiveBytesAllocated / MiB).toFixed(1)} MiB <= maxClientReceiveBytes (64 MiB)`,
  )
  t.ok(
    during.receiveBytesAllocated <= base.receiveBytesAllocated + 16 * MiB,
    `replica-port receive memory untouched by clients (${(base.receiveBytesAllocated / MiB).toFixed(1)} -> ${(during.receiveBytesAllocated / MiB).toFixed(1)} MiB)`,
  )

  // A replica that connects during the attack streams COUNT more.
  const lateSender = spawnFixture('sender.mjs', [], { ...env, NEXRES_ID: '3', NEXRES_TO: '1', NEXRES_COUNT: String(COUNT), NEXRES_PER_TICK: '4000' })
  children.push(lateSender)
  await lateSender.waitLine(/^up$/, 30_000, 'late sender up during the attack')
  const a0 = Date.now()
  await until(() => lastCount(receiver).count >= 2 * COUNT, 60_000, `${COUNT} messages during the attack`)
  const attackMs = Date.now() - a0
  t.equal(lastCount(receiver).count, 2 * COUNT, 'every message delivered once')
  t.equal(lastCount(receiver).bad, 0, 'in order per sender')
  t.comment(`quiet ${quietMs} ms, under attack ${attackMs} ms`)
  // Both runs are paced by the sender's ticks; 250 ms of slack absorbs a
  // scheduling hiccup on a loaded 2-core machine.
  t.ok(attackMs <= 2 * quietMs + 250, `under attack ${attackMs} ms <= 2 x quiet ${quietMs} ms`)

  // A new client is served while the attacker holds its connections.
  const client = await Client.connect({ replicas: [{ host: HOST, port: c1! }], clusterId: 'isolation', connectTimeoutMs: 5000 })
  t.teardown(() => client.close())
  const reply = await client.call('echo', new Uint8Array([1, 2, 3]), { timeoutMs: 5000 })
  t.same([...reply], [1, 2, 3], "a new client's call succeeds during the attack")

  // The idle connections hold no memory and are all still open; a half-sent
  // request is either still open or was refused to make room for others
  // (its memory region full: TOO_MANY_CONNECTIONS).
  const after = await stats(receiver)
  const idleOpen = idle.filter((s) => !s.destroyed && s.readyState === 'open').length
  t.equal(idleOpen, IDLE, `every idle connection is still open (${idleOpen})`)
  t.ok(after.clients >= IDLE, `the attacker still holds its connections (${after.clients} open)`)
  t.ok(
    after.rss - base.rss < 256 * MiB,
    `receiver RSS grew ${((after.rss - base.rss) / MiB).toFixed(1)} MiB (< 256 MiB) with ${IDLE + HALF} hostile connections`,
  )
})

t.test('when client receive memory is full, the oldest request in progress gives way', async (t) => {
  const { Replica } = await import('../lib/index.js')
  const [p1, c1] = await freePorts(2)
  const cluster = { id: 'evict', replicas: [{ id: 1, host: HOST, port: p1!, clientPort: c1! }] }
  // 4 MiB of client receive memory: 64 chunks of 64 KiB.
  const r = await Replica.start({ auth: 'none', id: 1, cluster, maxClientReceiveBytes: 4 * MiB, maxRequestBytes: 512 * 1024, clientIdleTimeoutMs: 600_000 })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  r.handle('echo', (req) => req)
  const held: Socket[] = []
  t.teardown(() => {
    for (const s of held) s.destroy()
  })
  // 100 connections each begin a small request and never finish it: each
  // pins a chunk, more than the budget holds.
  const slow = await inBatches(100, 50, async (i) => {
    const s = await openHandshaken(c1!, held)
    s.write(requestHeader(1000, i + 1))
    s.write(Buffer.alloc(10, 1))
    return s
  })
  // Chunks of 64 KiB take at most half of the budget (the other half is for
  // requests bigger than a chunk).
  await until(() => r.stats().clientReceiveBytesAllocated >= 2 * MiB, 10_000, 'client receive memory for small requests full')
  t.ok(r.stats().clientReceiveBytesAllocated <= 4 * MiB, 'client receive memory stays within maxClientReceiveBytes')
  const closed = slow.map(() => false)
  slow.forEach((s, i) => s.on('close', () => (closed[i] = true)))
  // A new client: its request needs memory; an old half-sent one gives way
  // once it has been arriving for 1 s.
  const client = await Client.connect({ replicas: [{ host: HOST, port: c1! }], clusterId: 'evict', connectTimeoutMs: 5000 })
  t.teardown(() => client.close())
  const reply = await client.call('echo', new Uint8Array([9, 8, 7]), { timeoutMs: 10_000 })
  t.same([...reply], [9, 8, 7], "a new client's call succeeds while half-sent requests fill the budget")
  await until(() => closed.some((c) => c), 5000, 'a half-sent request refused')
  t.ok((r.stats().rejectsByReason.TOO_MANY_CONNECTIONS ?? 0) >= 1, 'the refusal is counted as TOO_MANY_CONNECTIONS')
  t.ok(closed.indexOf(true) < 32, `an old connection gave way (first refused: #${closed.indexOf(true)})`)
})

t.test('a connection paused at maxClientInFlight holds no receive memory', async (t) => {
  const { Replica } = await import('../lib/index.js')
  const [p1, c1] = await freePorts(2)
  const cluster = { id: 'paused-idle', replicas: [{ id: 1, host: HOST, port: p1!, clientPort: c1! }] }
  // 64 chunks of 64 KiB; each connection may have one request in flight.
  const r = await Replica.start({ auth: 'none', id: 1, cluster, maxClientReceiveBytes: 4 * MiB, maxRequestBytes: 512 * 1024, maxClientInFlight: 1 })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  const waiting: (() => void)[] = []
  r.handle('poll', () => new Promise<Uint8Array>((resolve) => waiting.push(() => resolve(new Uint8Array([1])))))
  r.handle('echo', (req) => req)
  // More long polls than there are chunks: each connection is paused at its
  // in-flight bound with nothing arriving, for as long as its poll waits.
  const N = 80
  const clients = await Promise.all(
    Array.from({ length: N }, () => Client.connect({ replicas: [{ host: HOST, port: c1! }], clusterId: 'paused-idle', connectTimeoutMs: 5000 })),
  )
  t.teardown(() => {
    for (const w of waiting) w()
    for (const c of clients) c.close()
  })
  const polls = clients.map((c) => c.call('poll', new Uint8Array(10), { timeoutMs: 30_000 }))
  await until(() => waiting.length === N, 10_000, `all ${N} long polls read`)
  t.equal(waiting.length, N, 'every long poll reached its handler')
  const fresh = await Client.connect({ replicas: [{ host: HOST, port: c1! }], clusterId: 'paused-idle', connectTimeoutMs: 5000 })
  t.teardown(() => fresh.close())
  const reply = await fresh.call('echo', new Uint8Array([7, 7]), { timeoutMs: 5000 })
  t.same([...reply], [7, 7], "a new client's call succeeds while the polls wait")
  for (const w of waiting.splice(0)) w()
  const answers = await Promise.all(polls)
  t.ok(answers.every((a) => a.length === 1 && a[0] === 1), 'every long poll answered')
})

t.test('concurrent requests of the largest size all arrive (default options)', async (t) => {
  const { Replica } = await import('../lib/index.js')
  const [p1, c1] = await freePorts(2)
  const cluster = { id: 'big', replicas: [{ id: 1, host: HOST, port: p1!, clientPort: c1! }] }
  const r = await Replica.start({ auth: 'none', id: 1, cluster })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  r.handle('len', (req) => String(req.length))
  // 16 clients each upload 4 MiB (maxRequestBytes) at once: 64 MiB in flight
  // against 64 MiB of client receive memory. Each grows with what arrives;
  // none may wait forever for memory the others hold.
  const size = 4 * MiB
  const clients = await Promise.all(
    Array.from({ length: 16 }, () => Client.connect({ replicas: [{ host: HOST, port: c1! }], clusterId: 'big', connectTimeoutMs: 5000 })),
  )
  t.teardown(() => Promise.all(clients.map((c) => c.close())))
  const body = new Uint8Array(size).fill(5)
  const replies = await Promise.all(clients.map((c) => c.call('len', body, { timeoutMs: 30_000 })))
  t.same(replies.map((b) => Buffer.from(b).toString()), Array(16).fill(String(size)), '16 concurrent 4 MiB requests answered')
  t.ok(r.stats().clientReceiveBytesAllocated <= 64 * MiB, 'within maxClientReceiveBytes')
})
