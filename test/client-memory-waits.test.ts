// How client connections wait for the client port's receive memory
// (maxClientReceiveBytes) once it is full:
// - eviction looks at the age of the request now arriving, not at how long
//   the connection has had some request in progress: a client streaming
//   requests back to back is never the one refused, connections that begin
//   a request and stall are;
// - a waiting connection is woken when memory comes back, it does not poll:
//   a thousand of them waiting cost the receiver no CPU.
import { type Socket, connect } from 'node:net'

import t from 'tap'

import * as wire from '../lib/wire.js'

import { Client, Replica } from '../lib/index.js'
import { clientHello, freePorts, requestHeader, until } from './helpers.js'

const HOST = '127.0.0.1'
const HELLO_FIXED = wire.HELLO_FIXED_BYTES
const FRAME_HEADER = wire.HEADER_BYTES
const MiB = 1024 * 1024

/** A raw client connection past its handshake (CLIENT_WELCOME read). */
function welcomed(port: number, held: Socket[]): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: HOST, port })
    held.push(s)
    let got = 0
    s.on('error', () => {})
    s.on('connect', () => s.write(clientHello()))
    const onData = (d: Buffer): void => {
      got += d.length
      if (got < HELLO_FIXED) return
      s.off('data', onData)
      s.on('data', () => {})
      resolve(s)
    }
    s.on('data', onData)
    s.once('close', () => reject(new Error('closed before CLIENT_WELCOME')))
  })
}

/** A raw client connection that begins a request of `declared` bytes, sends `sent` of them and stalls. */
async function stalledRequest(port: number, held: Socket[], declared: number, sent: number): Promise<Socket> {
  const s = await welcomed(port, held)
  s.write(Buffer.concat([requestHeader(declared, 1), Buffer.alloc(sent, 7)]))
  return s
}

t.test('a client streaming requests back to back is not the one refused', async (t) => {
  const [p1, c1] = await freePorts(2)
  const cluster = { id: 'stream-evict', replicas: [{ id: 1, host: HOST, port: p1!, clientPort: c1! }] }
  // 4 MiB of client memory: 64 chunks of 64 KiB.
  const r = await Replica.start({ auth: 'none', id: 1, cluster, maxClientReceiveBytes: 4 * MiB, maxRequestBytes: 512 * 1024, clientIdleTimeoutMs: 600_000 })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  r.handle('size', (req) => new Uint8Array(new Uint32Array([req.length]).buffer))
  const client = await Client.connect({ replicas: [{ host: HOST, port: c1! }], clusterId: 'stream-evict', connectTimeoutMs: 5000 })
  t.teardown(() => client.close())
  // Requests bigger than a chunk, 4 in flight at all times: the connection
  // always has one arriving, for the whole test.
  const body = new Uint8Array(200_000).fill(3)
  let answered = 0
  let failed: unknown = null
  let stop = false
  const lanes = Array.from({ length: 4 }, async () => {
    while (!stop && failed === null) {
      try {
        const reply = await client.call('size', body, { timeoutMs: 30_000 })
        if (Buffer.from(reply).readUInt32LE(0) !== body.length) throw new Error('wrong reply')
        answered++
      } catch (e) {
        failed = e
      }
    }
  })
  // Streaming for well over the 1 s after which a request in progress may
  // be refused.
  await until(() => answered >= 20, 20_000, 'the stream under way')
  await new Promise((resolve) => setTimeout(resolve, 1500))
  const before = answered
  // Then 100 connections each begin a request and stall: more than the
  // budget holds. Some wait for memory; the stalled ones that hold memory
  // must give way, not the streaming client.
  const held: Socket[] = []
  t.teardown(() => {
    for (const s of held) s.destroy()
  })
  const stalled = await Promise.all(Array.from({ length: 100 }, () => stalledRequest(c1!, held, 100_000, 10)))
  let refused = 0
  for (const s of stalled) s.once('close', () => refused++)
  await until(() => refused >= 10 && answered >= before + 40, 30_000, () => `stalled requests refused while the stream goes on (refused ${refused}, answered ${answered - before} since, failed ${String(failed)})`)
  stop = true
  await Promise.all(lanes)
  t.equal(failed, null, `every streamed request answered (${answered}), its connection never refused`)
  t.ok(refused >= 10, `stalled requests gave way (${refused} refused)`)
  t.ok((r.stats().rejectsByReason.TOO_MANY_CONNECTIONS ?? 0) >= refused, 'counted as TOO_MANY_CONNECTIONS')
  t.ok(r.stats().clientReceiveBytesAllocated <= 4 * MiB, 'client memory within maxClientReceiveBytes')
})

t.test('connections waiting for client memory are woken, not polled', async (t) => {
  const [p1, c1] = await freePorts(2)
  const cluster = { id: 'mem-wait', replicas: [{ id: 1, host: HOST, port: p1!, clientPort: c1! }] }
  // 1 MiB of client memory: 512 KiB for chunks of 64 KiB (8 of them), the
  // rest for requests bigger than a chunk.
  const r = await Replica.start({ auth: 'none', id: 1, cluster, maxClientReceiveBytes: 1 * MiB, maxRequestBytes: 200 * 1024, clientIdleTimeoutMs: 600_000 })
  t.teardown(() => r.close({ timeoutMs: 0 }))
  const held: Socket[] = []
  const timers: NodeJS.Timeout[] = []
  t.teardown(() => {
    for (const x of timers) clearInterval(x)
    for (const s of held) s.destroy()
  })
  // 8 connections hold every chunk and stay active: every 300 ms each
  // completes its request and begins the next, so none is ever the oldest
  // by 1 s and none is refused (they are busy, as honest clients are).
  const holders = await Promise.all(Array.from({ length: 8 }, () => stalledRequest(c1!, held, 100, 10)))
  let id = 2
  for (const s of holders) {
    timers.push(setInterval(() => s.write(Buffer.concat([Buffer.alloc(90, 1), requestHeader(100, id++), Buffer.alloc(10, 7)])), 300))
  }
  await until(() => r.stats().clientReceiveBytesAllocated >= MiB / 2, 10_000, 'client memory for chunks full')
  // 1,000 more connections each send a whole request and wait for memory.
  const waiters: Socket[] = []
  for (let i = 0; i < 10; i++) waiters.push(...(await Promise.all(Array.from({ length: 100 }, () => stalledRequest(c1!, held, 100, 100)))))
  let answered = 0
  let closedWaiters = 0
  for (const s of waiters) {
    let got = 0
    s.on('data', (d: Buffer) => {
      if (got < FRAME_HEADER && (got += d.length) >= FRAME_HEADER) answered++
    })
    s.once('close', () => closedWaiters++)
  }
  await new Promise((resolve) => setTimeout(resolve, 300))
  const waiting = waiters.length - answered
  // The receiver's CPU (this process: JS and io threads) while they wait.
  const cpu0 = process.cpuUsage()
  const w0 = Date.now()
  await new Promise((resolve) => setTimeout(resolve, 2000))
  const cpu = process.cpuUsage(cpu0)
  const share = (cpu.user + cpu.system) / 1000 / (Date.now() - w0)
  t.ok(waiting >= 900, `connections waiting for memory (${waiting})`)
  const reported = r.stats().clients.filter((c) => c.waitingForMemory).length
  t.ok(reported >= 900 && reported <= waiting, `stats report them as waitingForMemory (${reported})`)
  t.ok(share < 0.15, `${waiting} connections waiting for memory cost ${(share * 100).toFixed(1)} % of a core (no polling)`)
  // Memory comes back: every waiter is woken and answered.
  for (const x of timers) clearInterval(x)
  for (const s of holders) s.destroy()
  await until(() => answered === waiters.length, 20_000, 'every waiter answered')
  t.equal(answered, 1000, 'every waiting connection was served')
  t.equal(closedWaiters, 0, 'no waiting connection was refused')
})

