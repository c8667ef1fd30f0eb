// Lifecycle: close() leaves nothing behind (a process exits by itself after
// closing its replicas), option validation, the per-peer queue cap and the
// high-water mark with 'drain'.
import { createServer, type Socket } from 'node:net'

import t from 'tap'

import * as wire from '../lib/wire.js'

import { type ClusterConfig, ConfigError, QueueFullError, Replica, type ReplicaOptions } from 'nexres-rpc'

import { type Child, lastCount, spawnFixture } from './child-helpers.js'
import { type Tap, freePorts, loopbackCluster, until } from './helpers.js'

const HEADER = wire.HEADER_BYTES

/** The type of a subtest's `t`. */
type TapTest = Tap

interface Counts {
  threads: number
  sockets: number
}
type CloseResult = { undeliveredBytes: Record<string, number> }
interface ChildResult {
  mode: string
  before: Counts
  during: Counts
  after: Counts
  /** One CloseResult, or one per replica. */
  close: CloseResult | CloseResult[]
  closeMs: number
  received?: Record<string, number>
  closedErrors?: number
  otherErrors?: string[]
  sendAfterClose?: string
  sent?: number
  peerStats?: { queuedBytes: number; unackedBytes: number; connected: boolean }
}

/** Runs lifecycle-child.mjs in a mode; returns its result once it has exited by itself. */
async function runLifecycleChild(t: TapTest, mode: string, cluster?: ClusterConfig): Promise<ChildResult> {
  cluster ??= await loopbackCluster(3, 'lifecycle')
  const child = spawnFixture('lifecycle-child.mjs', [mode], { NEXRES_CLUSTER: JSON.stringify(cluster) })
  t.teardown(() => child.kill())
  const m = await child.waitLine(/^result (.*)$/, 30_000, `${mode} result`)
  const res = JSON.parse(m[1]!) as ChildResult
  // The child never calls process.exit: it must end because nothing is left.
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined
  try {
    exit = await child.waitExit(8000)
  } catch (err) {
    t.fail(`the process did not exit by itself after close(): ${(err as Error).message}`)
  }
  if (exit) t.same(exit, { code: 0, signal: null }, 'the process exited by itself with code 0')
  t.equal(res.after.threads, res.before.threads, `no thread left (before ${res.before.threads}, running ${res.during.threads}, after ${res.after.threads})`)
  t.equal(res.after.sockets, res.before.sockets, `no socket left (before ${res.before.sockets}, running ${res.during.sockets}, after ${res.after.sockets})`)
  t.ok(res.during.threads > res.before.threads && res.during.sockets > res.before.sockets, 'the replicas did run io threads and sockets')
  return res
}

/** `a` sends replica 2 numbered messages of `size` payload bytes on 'seq' (a u64 LE counter first). */
function numbered(a: Replica, size: number): { send: () => boolean; readonly sent: number } {
  const payload = new Uint8Array(size)
  const dv = new DataView(payload.buffer)
  let sent = 0
  return {
    send: () => {
      dv.setBigUint64(0, BigInt(sent), true)
      const ok = a.send(2, 'seq', payload)
      sent++
      return ok
    },
    get sent() {
      return sent
    },
  }
}

t.test('close() leaves no thread, socket or handle behind', async (t) => {
  t.test('3 replicas exchange messages, close, and the process exits by itself', async (t) => {
    const res = await runLifecycleChild(t, 'exchange')
    t.same(res.received, { 1: 8000, 2: 8000, 3: 8000 }, 'every message arrived before the close')
    t.same(res.close, [{ undeliveredBytes: {}, remoteUndeliveredBytes: {} }, { undeliveredBytes: {}, remoteUndeliveredBytes: {} }, { undeliveredBytes: {}, remoteUndeliveredBytes: {} }], 'nothing undelivered')
  })

  t.test('closing while messages are sent in a tight loop', async (t) => {
    const res = await runLifecycleChild(t, 'tight-loop')
    t.ok((res.closedErrors ?? 0) > 0, `sends after close() began threw CLOSED (${res.closedErrors})`)
    t.same(res.otherErrors, [], 'no other send error')
    t.equal(res.sendAfterClose, 'CLOSED', 'send after close throws CLOSED')
    t.ok(Array.isArray(res.close) && res.close.length === 3, 'every close() resolved')
  })

  t.test('worker threads (workers: 2) end with close(): no thread or socket left, the process exits', async (t) => {
    const res = await runLifecycleChild(t, 'workers', await loopbackCluster(2, 'lifecycle-workers'))
    t.same(res.received, { 2: 5000 }, 'every message was answered from a worker')
  })

  t.test('closing a replica whose peers are down reports what was not delivered and still exits', async (t) => {
    const res = await runLifecycleChild(t, 'peers-down')
    const frame = HEADER + 100
    // 10 sends + 1 broadcast to replica 2, 5 sends + 1 broadcast to replica 3
    t.same(res.close, { undeliveredBytes: { 2: 11 * frame, 3: 6 * frame }, remoteUndeliveredBytes: {} }, 'undeliveredBytes per down peer')
    t.ok(res.closeMs >= 190, `close waited for the timeout (${res.closeMs} ms)`)
    t.ok(res.closeMs < 3000, `close did not wait much longer than its timeout (${res.closeMs} ms)`)
  })

  t.test('closing a replica whose peer accepted the connection but never reads (writes pending) still exits', async (t) => {
    const cluster = await loopbackCluster(2, 'stuck')
    // Replica 2 is a fake: it answers HELLO with a WELCOME (PROTOCOL.md §2), then never reads again.
    const sockets = new Set<Socket>()
    const server = createServer((sock) => {
      sockets.add(sock)
      sock.on('error', () => {})
      let buf = Buffer.alloc(0)
      const onData = (d: Buffer): void => {
        buf = Buffer.concat([buf, d])
        if (buf.length < 32 || buf.length < 32 + buf.readUInt32LE(24)) return
        sock.off('data', onData)
        sock.pause()
        const cid = Buffer.from(cluster.id)
        const w = Buffer.alloc(32 + cid.length)
        w.write('NXRP', 0, 'latin1')
        w.writeUInt16LE(1, 4) // version
        w.writeUInt16LE(2, 6) // WELCOME
        w.writeUInt16LE(0, 8) // auth none
        w.writeUInt8(cid.length, 10)
        w.writeUInt32LE(2, 12) // sender
        w.writeUInt32LE(0x12345678, 16) // incarnation
        w.writeUInt32LE(cid.length, 24)
        cid.copy(w, 32)
        sock.write(w)
      }
      sock.on('data', onData)
    })
    await new Promise<void>((r) => server.listen(cluster.replicas[1]!.port, '127.0.0.1', r))
    t.teardown(() => {
      for (const s of sockets) s.destroy()
      return new Promise<void>((r) => server.close(() => r()))
    })
    const res = await runLifecycleChild(t, 'stuck-peer', cluster)
    const total = res.sent! * (HEADER + 1000)
    t.ok(res.peerStats!.connected, 'the link to the fake peer was up')
    t.equal(res.peerStats!.queuedBytes, total, 'nothing acknowledged')
    t.ok(res.peerStats!.unackedBytes < total, `writes are stuck (${res.peerStats!.unackedBytes} of ${total} bytes written)`)
    t.same(res.close, { undeliveredBytes: { 2: total }, remoteUndeliveredBytes: {} }, 'everything reported undelivered')
    t.ok(res.closeMs < 3000, `close returned promptly (${res.closeMs} ms)`)
  })
})

t.test('config validation: CONFIG_INVALID naming the field', async (t) => {
  const ports = await freePorts(3)
  const replicas = (): { id: number; host: string; port: unknown }[] =>
    ports.map((port, i) => ({ id: i + 1, host: '127.0.0.1', port }))
  const cluster = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ id: 'cfg', replicas: replicas(), ...over })
  const withPort = (port: unknown): Record<string, unknown> => {
    const rs = replicas()
    rs[1]!.port = port
    return cluster({ replicas: rs })
  }
  const dupIds = replicas()
  dupIds[2]!.id = 1

  const cases: { name: string; options: Record<string, unknown>; field: string }[] = [
    { name: 'duplicate replica ids', options: { id: 1, cluster: cluster({ replicas: dupIds }) }, field: 'cluster.replicas[2].id' },
    { name: 'port 0', options: { id: 1, cluster: withPort(0) }, field: 'cluster.replicas[1].port' },
    { name: 'port 70000', options: { id: 1, cluster: withPort(70000) }, field: 'cluster.replicas[1].port' },
    { name: 'port 1.5', options: { id: 1, cluster: withPort(1.5) }, field: 'cluster.replicas[1].port' },
    { name: "port '7001' (a string)", options: { id: 1, cluster: withPort('7001') }, field: 'cluster.replicas[1].port' },
    { name: 'self id missing from the cluster', options: { id: 9, cluster: cluster() }, field: 'id' },
    { name: 'empty cluster id', options: { id: 1, cluster: cluster({ id: '' }) }, field: 'cluster.id' },
    { name: 'replicas not an array (object)', options: { id: 1, cluster: cluster({ replicas: { 1: replicas()[0] } }) }, field: 'cluster.replicas' },
    { name: 'replicas not an array (string)', options: { id: 1, cluster: cluster({ replicas: '127.0.0.1:7001' }) }, field: 'cluster.replicas' },
    { name: 'ioThreads 0', options: { id: 1, cluster: cluster(), ioThreads: 0 }, field: 'ioThreads' },
  ]
  for (const c of cases) {
    let started: Replica | undefined
    let err: unknown
    try {
      started = await Replica.start(c.options as unknown as ReplicaOptions)
    } catch (e) {
      err = e
    }
    if (started) {
      await started.close({ timeoutMs: 0 })
      t.fail(`${c.name}: Replica.start resolved`)
      continue
    }
    const e = err as ConfigError
    t.ok(e instanceof ConfigError, `${c.name}: ConfigError (got ${String(err)})`)
    t.equal(e.code, 'CONFIG_INVALID', `${c.name}: code`)
    t.equal(e.field, c.field, `${c.name}: field`)
    t.ok(typeof e.message === 'string' && e.message.includes(c.field), `${c.name}: message names ${c.field}: "${e.message}"`)
  }
})

t.test('QUEUE_FULL: high-water mark, hard cap, delivery after the peer starts, drain', async (t) => {
  const cluster = await loopbackCluster(2, 'queue')
  const HWM = 256 * 1024
  const CAP = 1024 * 1024
  const PAYLOAD = 1176 // frame of 1200 bytes: neither limit is a multiple of it
  const FRAME = HEADER + PAYLOAD
  const a = await Replica.start({ auth: 'none',
    id: 1,
    cluster,
    highWaterMark: HWM,
    maxQueueBytes: CAP,
    reconnect: { minMs: 20, maxMs: 100 },
  })
  let b: Replica | undefined
  t.teardown(async () => {
    await a.close({ timeoutMs: 0 })
    await b?.close({ timeoutMs: 0 })
  })
  const drains: number[] = []
  a.events.on('drain', (peer) => drains.push(peer))

  // Replica 2 was never started: nothing is acknowledged, the queue only grows.
  const payload = new Uint8Array(PAYLOAD)
  const dv = new DataView(payload.buffer)
  const results: boolean[] = []
  let full: unknown
  for (let k = 0; k < 10_000; k++) {
    dv.setBigUint64(0, BigInt(k), true)
    try {
      results.push(a.send(2, 'q', payload))
    } catch (err) {
      full = err
      break
    }
  }
  const accepted = results.length
  const lastTrue = Math.floor(HWM / FRAME) // queue holds k * FRAME bytes after the k-th send
  const expectAccepted = Math.floor(CAP / FRAME)
  t.equal(results.indexOf(false), lastTrue, `send returns true up to the high-water mark (${lastTrue} messages)`)
  t.equal(results.slice(0, lastTrue).every((x) => x), true, 'true below the high-water mark')
  t.equal(results.slice(lastTrue).every((x) => !x), true, 'false past it')
  t.equal(accepted, expectAccepted, `${expectAccepted} messages accepted up to maxQueueBytes`)
  t.ok(full instanceof QueueFullError, `past the cap send throws QueueFullError (got ${String(full)})`)
  t.equal((full as QueueFullError).code, 'QUEUE_FULL', 'code QUEUE_FULL')
  t.equal((full as QueueFullError).peer, 2, 'names the peer')
  t.throws(() => a.send(2, 'q', payload), { code: 'QUEUE_FULL' }, 'still full: throws again')
  await new Promise((r) => setTimeout(r, 50))
  const st = a.stats().peers.find((p) => p.id === 2)!
  t.equal(st.queuedBytes, accepted * FRAME, 'the queue holds exactly the accepted messages (the refused ones were not queued)')
  t.equal(st.queuedMsgs, accepted, 'queuedMsgs')
  t.same(drains, [], 'no drain while the peer is down')

  // Start the peer in the same process: the accepted messages arrive, in order, once.
  b = await Replica.start({ auth: 'none', id: 2, cluster })
  const got: number[] = []
  b.on('q', (msg) => {
    const p = msg.payload
    got.push(Number(Buffer.from(p.buffer, p.byteOffset, 8).readBigUInt64LE(0)))
  })
  await until(() => got.length >= accepted, 15_000, `${accepted} queued messages at the started peer`)
  await until(() => drains.length > 0, 10_000, "'drain' for the peer")
  await new Promise((r) => setTimeout(r, 200)) // would show duplicates or extra messages
  t.equal(got.length, accepted, 'exactly the accepted messages were delivered')
  let inOrder = true
  for (let i = 0; i < got.length; i++) if (got[i] !== i) inOrder = false
  t.ok(inOrder, 'in send order, each exactly once')
  t.same(drains, [2], "one 'drain' event, for replica 2")
  t.equal(a.stats().peers.find((p) => p.id === 2)!.queuedBytes, 0, 'queue empty')
  t.equal(a.send(2, 'q', payload), true, 'after the drain send returns true again')
  await until(() => got.length === accepted + 1, 10_000, 'message after the drain')
})

t.test('backpressure: a frozen receiver (SIGSTOP) makes send return false; SIGCONT brings drain and every message', async (t) => {
  const cluster = await loopbackCluster(2, 'frozen')
  const receiver: Child = spawnFixture('receiver.mjs', [], {
    NEXRES_CLUSTER: JSON.stringify(cluster),
    NEXRES_ID: '2',
  })
  t.teardown(() => receiver.kill())
  await receiver.waitLine(/^ready \d+$/, 15_000, 'receiver ready')
  const HWM = 1024 * 1024
  const a = await Replica.start({ auth: 'none', id: 1, cluster, highWaterMark: HWM, maxQueueBytes: 64 * 1024 * 1024 })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  await a.waitForPeers([2], { timeoutMs: 15_000 })
  const drains: number[] = []
  a.events.on('drain', (peer) => drains.push(peer))

  const seq = numbered(a, 1000)
  const send = seq.send
  for (let i = 0; i < 100; i++) send()
  await until(() => lastCount(receiver).count === 100, 10_000, 'first messages at the receiver')

  t.ok(receiver.proc.kill('SIGSTOP'), 'receiver stopped')
  // Bounded loop, in ticks so acknowledgements (if any) can come in.
  let sawFalse = false
  const LIMIT = 50_000 // 50 MB, below maxQueueBytes: QUEUE_FULL would fail the test
  while (!sawFalse && seq.sent < LIMIT) {
    for (let i = 0; i < 200 && !sawFalse; i++) if (!send()) sawFalse = true
    await new Promise((r) => setImmediate(r))
  }
  t.ok(sawFalse, `send returned false after ${seq.sent} messages`)
  const queued = a.stats().peers.find((p) => p.id === 2)!.queuedBytes
  t.ok(queued >= HWM, `queue at or past the high-water mark (${queued} bytes)`)
  await new Promise((r) => setTimeout(r, 300))
  t.same(drains, [], 'no drain while the receiver is frozen')

  t.ok(receiver.proc.kill('SIGCONT'), 'receiver continued')
  await until(() => drains.length > 0, 15_000, "'drain' after SIGCONT")
  t.equal(drains[0], 2, "'drain' names the receiver")
  const total = seq.sent
  await until(() => lastCount(receiver).count >= total, 20_000, `all ${total} messages at the receiver`)
  await new Promise((r) => setTimeout(r, 100))
  const c = lastCount(receiver)
  t.equal(c.count, total, 'every message arrived, none twice')
  t.equal(c.bad, 0, 'in order')
  t.equal(c.last, total - 1, 'the last one last')
})

t.test('high-water mark: send compares it with the current queue, not the depth seen at the last flush', async (t) => {
  const cluster = await loopbackCluster(2, 'hwm')
  const HWM = 256 * 1024
  const a = await Replica.start({ auth: 'none',
    id: 1,
    cluster,
    highWaterMark: HWM,
    maxQueueBytes: 1024 * 1024,
    reconnect: { minMs: 20, maxMs: 100 },
  })
  let b: Replica | undefined
  t.teardown(async () => {
    await a.close({ timeoutMs: 0 })
    await b?.close({ timeoutMs: 0 })
  })
  const drains: number[] = []
  a.events.on('drain', (peer) => drains.push(peer))
  const payload = new Uint8Array(1000) // 1024-byte frames

  // 200 KiB queued for replica 2 before it starts (below the high-water mark).
  const first: boolean[] = []
  for (let i = 0; i < 200; i++) first.push(a.send(2, 'q', payload))
  t.equal(first.indexOf(false), -1, 'first burst (200 KiB): send returns true')
  await new Promise((r) => setTimeout(r, 20))
  t.equal(a.stats().peers[0]!.queuedBytes, 200 * 1024, 'queued while the peer is down')

  b = await Replica.start({ auth: 'none', id: 2, cluster })
  let got = 0
  b.on('q', () => {
    got++
  })
  await until(() => got === 200, 10_000, 'first burst delivered')
  await until(() => a.stats().peers[0]!.queuedBytes === 0, 10_000, 'first burst acknowledged')

  // The queue is empty now: another 60 KiB is far below the mark.
  const second: boolean[] = []
  for (let i = 0; i < 60; i++) second.push(a.send(2, 'q', payload))
  t.equal(
    second.indexOf(false),
    -1,
    'second burst (60 KiB, queue empty): send returns true' +
      (second.includes(false) ? ` (returned false from message ${second.indexOf(false) + 1})` : ''),
  )
  await until(() => got === 260, 10_000, 'second burst delivered')
  await new Promise((r) => setTimeout(r, 100))
  t.same(drains, [], "no 'drain' (send never had to return false)")
})

t.test('backpressure: a receiver whose event loop is blocked fills its receive buffers, then stops reading; send returns false, then drain and every message', async (t) => {
  const cluster = await loopbackCluster(2, 'blocked')
  // Receive buffers of the receiver: maxChunksPerConnection x receiveChunkBytes = 2 x 4 MiB.
  const CHUNKS = 2
  const CHUNK = 4 * 1024 * 1024
  const RECEIVE_BUFFERS = CHUNKS * CHUNK
  const receiver: Child = spawnFixture('receiver.mjs', [], {
    NEXRES_CLUSTER: JSON.stringify(cluster),
    NEXRES_ID: '2',
    NEXRES_OPTIONS: JSON.stringify({ maxChunksPerConnection: CHUNKS, receiveChunkBytes: CHUNK }),
  })
  t.teardown(() => receiver.kill())
  await receiver.waitLine(/^ready \d+$/, 15_000, 'receiver ready')
  const HWM = 1024 * 1024
  const a = await Replica.start({ auth: 'none', id: 1, cluster, highWaterMark: HWM, maxQueueBytes: 128 * 1024 * 1024 })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  await a.waitForPeers([2], { timeoutMs: 15_000 })
  const drains: number[] = []
  a.events.on('drain', (peer) => drains.push(peer))

  const FRAME = 1024
  const seq = numbered(a, FRAME - HEADER)
  const send = seq.send
  for (let i = 0; i < 100; i++) send()
  await until(() => lastCount(receiver).count === 100, 10_000, 'first messages at the receiver')

  // The receiver's JS thread is busy: its engine reads into its receive
  // buffers (maxChunksPerConnection x receiveChunkBytes), acknowledging, then
  // must stop reading (PROTOCOL.md §5), so the sender's queue grows.
  const BLOCK_MS = 4000
  receiver.proc.stdin!.write(`block ${BLOCK_MS}\n`)
  await receiver.waitLine(/^blocking \d+$/, 10_000, 'receiver blocking')
  const blockedAt = Date.now()
  // Send 3 x the receive buffers (return values checked below), then let it settle.
  const queuedNow = (): number => a.stats().peers.find((p) => p.id === 2)!.queuedBytes
  while (seq.sent < 100 + (3 * RECEIVE_BUFFERS) / FRAME) {
    for (let i = 0; i < 512; i++) send()
    await new Promise((r) => setImmediate(r))
  }
  await new Promise((r) => setTimeout(r, 500))
  const elapsed = Date.now() - blockedAt
  t.ok(elapsed < BLOCK_MS - 500, `still within the receiver's block (${elapsed} ms)`)
  const queued = queuedNow()
  t.comment(`${seq.sent} messages sent, ${queued} bytes queued at the sender`)
  t.ok(queued > HWM, 'the queue stays past the high-water mark while the receiver is blocked')
  // (Earlier sends in the loop may have returned false and been followed by
  // a 'drain' while the receiver's engine was still reading; count from here.)
  const drainsBefore = drains.length
  t.equal(send(), false, 'send returns false')
  await new Promise((r) => setTimeout(r, 200))
  t.equal(drains.length, drainsBefore, 'no drain while the receiver stays blocked')

  await until(() => drains.length > drainsBefore, 20_000, "'drain' once the receiver runs again")
  t.equal(drains[drainsBefore], 2, "'drain' names the receiver")
  const accepted = Number((await receiver.waitLine(/^unblocked accepted (\d+)$/, 10_000, 'receiver unblocked'))[1])
  t.ok(accepted <= RECEIVE_BUFFERS + CHUNK, `the blocked receiver's engine read at most its receive buffers (${accepted} bytes)`)
  // Each buffer is read into until less than a read's worth (64 KiB) is left,
  // so nearly all of the 8 MiB is used before reading stops.
  const want = RECEIVE_BUFFERS * 0.75
  t.ok(
    accepted >= want,
    `the blocked receiver's engine used its receive buffers before it stopped reading: accepted ${accepted} bytes, ` +
      `want >= ${want} (75% of ${CHUNKS} x ${CHUNK})`,
  )
  const total = seq.sent
  await until(() => lastCount(receiver).count >= total, 30_000, `all ${total} messages at the receiver`)
  await new Promise((r) => setTimeout(r, 100))
  const c = lastCount(receiver)
  t.equal(c.count, total, 'every message arrived, none twice')
  t.equal(c.bad, 0, 'in order')
  t.equal(c.last, total - 1, 'the last one last')
})
