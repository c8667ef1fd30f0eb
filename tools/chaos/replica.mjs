// One replica of the chaos run (tools/chaos/run.mjs), in its own process.
// Streams numbered messages (sends to one peer and broadcasts) and checks
// what it receives. Everything it tells the run goes to stdout as JSON
// lines written with blocking write(2) calls (not process.stdout, which
// buffers when the pipe is full): a line written before a later action is
// in the pipe even if the process is then killed with SIGKILL.
//
// env NEXRES_CHAOS: JSON { id, k, cluster, options, seed, rate, replicas }
//   k: incarnation (1 = first start, +1 per restart); a new incarnation is a
//   new sender stream, its seqs start again at 1.
// stdin: JSON lines { cmd: 'quiesce' | 'health' | 'close' }
//
// Payload (little-endian): magic u32 | sender id u32 | incarnation u32 |
// flags u32 (bit 0 broadcast, bit 1 signed) | seq u32 per replica id 1..8
// (0 = not for that replica) | padding, byte i = (i * 7 + salt) & 255 with
// salt = (k * 31 + the first non-zero seq) & 255.
// Receivers check every byte, the sender id against msg.from, their own seq
// slot, and per sender stream: no duplicate, no reordering; gaps are
// reported (the run checks them against the sender's 'undelivered' events).
import { readFileSync, readdirSync, readlinkSync, writeSync } from 'node:fs'
import { createInterface } from 'node:readline'

import { Replica } from 'nexres-rpc'

const MAGIC = 0x4e584348
const HEAD = 16 + 4 * 8
const HEADER_BYTES = 24 // frame header (docs/PROTOCOL.md §3): what queues count per message
const SIG_BYTES = 64
/** A signed frame's body ends with the sender's incarnation and the signature (PROTOCOL.md §3). */
const SIGNED_TRAILER_BYTES = 8 + SIG_BYTES
/** A stream's progress is reported at its first message and at least every this many (the run's tolerance). */
const REPORT_EVERY = 32

const cfg = JSON.parse(process.env.NEXRES_CHAOS)
const { id, k } = cfg
const peers = cfg.cluster.replicas.map((r) => r.id).filter((p) => p !== id)

// fd 1 is the blocking end of the pipe from the run (libuv's spawn makes a
// child's stdio blocking; process.stdout is never opened here, which would
// make it non-blocking).
const pause = new Int32Array(new SharedArrayBuffer(4))
function out(obj) {
  const buf = Buffer.from(JSON.stringify(obj) + '\n')
  let off = 0
  while (off < buf.length) {
    try {
      off += writeSync(1, buf, off)
    } catch (err) {
      if (err.code !== 'EAGAIN' && err.code !== 'EINTR') throw err
      Atomics.wait(pause, 0, 0, 1)
    }
  }
}
const violation = (what) => out({ t: 'violation', what })

function fds(withList = false) {
  let all = 0
  let sockets = 0
  const list = []
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`)
      if (withList) list.push(`${fd}:${target}`)
      if (target.startsWith('socket:')) sockets++
      all++
    } catch {
      // the directory's own descriptor, closed by now
    }
  }
  return withList ? { all, sockets, list } : { all, sockets }
}
function rssBytes() {
  const m = readFileSync('/proc/self/status', 'utf8').match(/^VmRSS:\s+(\d+) kB/m)
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss
}
function threads() {
  const m = readFileSync('/proc/self/status', 'utf8').match(/^Threads:\s+(\d+)/m)
  return m ? Number(m[1]) : -1
}
const gc = () => {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc()
    globalThis.gc()
  }
}

// mulberry32: the traffic of this incarnation follows its own seed.
function mulberry32(a) {
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rand = mulberry32(cfg.seed >>> 0)

/** A growable Float64Array. */
class Column {
  constructor() {
    this.a = new Float64Array(1024)
    this.n = 0
  }
  push(v) {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2)
      b.set(this.a)
      this.a = b
    }
    this.a[this.n++] = v
  }
  /** First index whose value is >= v (the column is increasing). */
  lowerBound(v) {
    let lo = 0
    let hi = this.n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.a[mid] < v) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

// ---- sending side ------------------------------------------------------
// Per destination: seq i (1-based) has message id ids.a[i-1] and the
// destination's queue counted cum.a[i-1] frame bytes up to and including it.
const tx = new Map(peers.map((p) => [p, { ids: new Column(), cum: new Column(), blocked: 0 }]))

// Node opens its stdio streams lazily, and a pipe's takes a descriptor of
// its own (/dev/null): open those used here before counting.
void process.stderr, process.stdin
const fdsBefore = fds(true)
const rssBefore = rssBytes()
const threadsBefore = threads()
let replica
try {
  replica = await Replica.start({ id, cluster: cfg.cluster, ...cfg.options })
} catch (err) {
  process.stderr.write(`chaos replica ${id}.${k}: start failed: ${err?.code} ${err?.message}\n`)
  process.exit(3)
}
const fdsAfterStart = fds()

function build(flags, seqs, len) {
  const buf = new Uint8Array(len)
  const dv = new DataView(buf.buffer)
  dv.setUint32(0, MAGIC, true)
  dv.setUint32(4, id, true)
  dv.setUint32(8, k, true)
  dv.setUint32(12, flags, true)
  let salt = -1
  for (const [p, s] of seqs) {
    dv.setUint32(16 + 4 * (p - 1), s, true)
    if (salt < 0) salt = s
  }
  salt = (k * 31 + salt) & 255
  for (let i = HEAD; i < len; i++) buf[i] = (i * 7 + salt) & 255
  return buf
}

function pickSize() {
  const r = rand()
  if (r < 0.9) return HEAD + Math.floor(rand() * 400)
  if (r < 0.98) return 1024 + Math.floor(rand() * 7 * 1024)
  return 16 * 1024 + Math.floor(rand() * 84 * 1024) // sent by reference
}

function record(dest, msgId, frameBytes) {
  const t = tx.get(dest)
  const prev = t.cum.n > 0 ? t.cum.a[t.cum.n - 1] : 0
  t.ids.push(msgId)
  t.cum.push(prev + frameBytes)
}

let queueFull = 0
let sendsFalse = 0
let sending = true
function sendOne() {
  const bcast = rand() < 0.3
  const len = pickSize()
  if (bcast) {
    if (peers.some((p) => tx.get(p).blocked !== 0)) return
    const sign = cfg.options.auth === 'mac' && rand() < 0.05
    const seqs = peers.map((p) => [p, tx.get(p).ids.n + 1])
    const payload = build(1 | (sign ? 2 : 0), seqs, len)
    let ok
    try {
      ok = replica.broadcast('b', payload, sign ? { sign: true } : undefined)
    } catch (err) {
      if (err?.code === 'QUEUE_FULL') return void queueFull++
      throw err
    }
    const msgId = replica.lastMessageId
    for (const p of peers) record(p, msgId, HEADER_BYTES + len + (sign ? SIGNED_TRAILER_BYTES : 0))
    if (!ok) {
      sendsFalse++
      const hwm = cfg.options.highWaterMark
      for (const ps of replica.stats().peers) if (ps.queuedBytes >= hwm) tx.get(ps.id).blocked = Date.now()
    }
  } else {
    const dest = peers[Math.floor(rand() * peers.length)]
    const t = tx.get(dest)
    if (t.blocked !== 0) return
    const payload = build(0, [[dest, t.ids.n + 1]], len)
    let ok
    try {
      ok = replica.send(dest, 'm', payload)
    } catch (err) {
      if (err?.code === 'QUEUE_FULL') return void queueFull++
      throw err
    }
    record(dest, replica.lastMessageId, HEADER_BYTES + len)
    if (!ok) {
      sendsFalse++
      t.blocked = Date.now()
    }
  }
}

// Bursts every 10 ms, `rate` messages a second on average.
const perTick = cfg.rate / 100
let trafficTimer
function tick() {
  if (!sending) return
  const n = Math.floor(rand() * 2 * perTick + 0.5)
  for (let i = 0; i < n; i++) sendOne()
  // A peer blocked by backpressure whose queue is back under half the mark
  // for a second without a 'drain' event: the event was lost.
  const now = Date.now()
  for (const [p, t] of tx) {
    if (t.blocked !== 0 && now - t.blocked > 1000) {
      const ps = replica.stats().peers.find((s) => s.id === p)
      if (ps.queuedBytes <= cfg.options.highWaterMark / 2) {
        if (t.lowSince === undefined) t.lowSince = now
        else if (now - t.lowSince > 1000) {
          violation(`replica ${id}.${k}: send to ${p} returned false, its queue has been at ${ps.queuedBytes} bytes (under half the high-water mark) for over 1 s, and no 'drain' came`)
          t.blocked = 0
          t.lowSince = undefined
        }
      } else t.lowSince = undefined
    }
  }
  progress()
  trafficTimer = setTimeout(tick, 10)
}

replica.events.on('drain', (p) => {
  const t = tx.get(p)
  if (t !== undefined) {
    t.blocked = 0
    t.lowSince = undefined
  }
})

replica.events.on('undelivered', (peer, info) => {
  // Map the message ids onto this destination's seqs; the count and bytes
  // must be exactly those of the seqs in that id range.
  const t = tx.get(peer)
  const lo = t.ids.lowerBound(info.firstId)
  const hi = t.ids.lowerBound(info.lastId + 1) - 1
  const messages = hi - lo + 1
  const bytes = messages > 0 ? t.cum.a[hi] - (lo > 0 ? t.cum.a[lo - 1] : 0) : 0
  out({ t: 'undelivered', peer, from: lo + 1, to: hi + 1, info })
  if (messages !== info.messages || bytes !== info.bytes || t.ids.a[lo] !== info.firstId || t.ids.a[hi] !== info.lastId) {
    violation(
      `replica ${id}.${k}: 'undelivered' for ${peer} ${JSON.stringify(info)} does not match what was sent to it with ids in ` +
        `${info.firstId}..${info.lastId}: ${messages} messages, ${bytes} bytes (seqs ${lo + 1}..${hi + 1})`,
    )
  }
})

// ---- receiving side ----------------------------------------------------
/** Per sender stream 'id.k': first, last, count, and messages since the last report. */
const rx = new Map()
const dirty = new Set()
let received = 0

function onMessage(msg) {
  const p = msg.payload
  if (p.length < HEAD) return violation(`replica ${id}.${k}: a ${p.length}-byte message from ${msg.from} on '${msg.route}'`)
  const dv = new DataView(p.buffer, p.byteOffset, p.length)
  const from = dv.getUint32(4, true)
  const sk = dv.getUint32(8, true)
  const flags = dv.getUint32(12, true)
  const seq = dv.getUint32(16 + 4 * (id - 1), true)
  const key = `${from}.${sk}`
  if (dv.getUint32(0, true) !== MAGIC || from !== msg.from || seq === 0 || (flags & 1) !== (msg.route === 'b' ? 1 : 0)) {
    return violation(`replica ${id}.${k}: malformed message from ${msg.from} on '${msg.route}': magic ${dv.getUint32(0, true).toString(16)} sender ${from} seq ${seq} flags ${flags}`)
  }
  if ((flags & 2) !== 0 && (msg.signature === undefined || msg.signature.length !== SIG_BYTES)) {
    violation(`replica ${id}.${k}: signed broadcast ${key}#${seq} arrived without its signature`)
  }
  let salt = 0
  for (let i = 16; i < HEAD; i += 4) {
    const s = dv.getUint32(i, true)
    if (s !== 0) {
      salt = s
      break
    }
  }
  salt = (sk * 31 + salt) & 255
  for (let i = HEAD; i < p.length; i++) {
    if (p[i] !== ((i * 7 + salt) & 255)) {
      return violation(`replica ${id}.${k}: message ${key}#${seq} (${p.length} bytes) corrupted at byte ${i}`)
    }
  }
  received++
  let st = rx.get(key)
  if (st === undefined) {
    // A stream's first message is reported at once: a killed process then
    // never has an unreported stream, only up to REPORT_EVERY - 1
    // unreported messages right after what it reported.
    st = { first: seq, last: seq, count: 1, unreported: 1 }
    rx.set(key, st)
    if (seq > 1) out({ t: 'gap', key, a: 1, b: seq - 1 })
    dirty.add(key)
    return progress()
  } else {
    if (seq <= st.last) {
      return violation(`replica ${id}.${k}: from sender ${key} got seq ${seq} after seq ${st.last} (${seq === st.last ? 'duplicate' : 'out of order'})`)
    }
    if (seq > st.last + 1) out({ t: 'gap', key, a: st.last + 1, b: seq - 1 })
    st.last = seq
    st.count++
    st.unreported++
  }
  dirty.add(key)
  if (st.unreported >= REPORT_EVERY) progress()
}
replica.on('m', onMessage)
replica.on('b', onMessage)
replica.events.on('error', (err, info) => violation(`replica ${id}.${k}: handler for '${info.route}' threw: ${err?.stack ?? err}`))
replica.events.on('unrouted', (info) => violation(`replica ${id}.${k}: unrouted message ${JSON.stringify(info)}`))

function progress() {
  if (dirty.size === 0) return
  const s = []
  for (const key of dirty) {
    const st = rx.get(key)
    st.unreported = 0
    s.push([key, st.first, st.last, st.count])
  }
  dirty.clear()
  out({ t: 'rx', s })
}

// ---- connection events (counted by the run) ----------------------------
replica.events.on('peer-up', (p) => out({ t: 'up', p }))
replica.events.on('peer-down', (p, info) => out({ t: 'down', p, code: info.code }))
replica.events.on('reject', (info) => out({ t: 'reject', p: info.peer ?? 0, code: info.code }))

function sentLast() {
  return Object.fromEntries([...tx].map(([p, t]) => [p, t.ids.n]))
}
function health() {
  gc()
  const s = replica.stats()
  return {
    fds: fds(),
    rss: rssBytes(),
    heapUsed: process.memoryUsage().heapUsed,
    threads: threads(),
    receiveBytesAllocated: s.receiveBytesAllocated,
    miqDepth: s.miqDepth,
    peers: s.peers.map((ps) => ({ id: ps.id, connected: ps.connected, queuedBytes: ps.queuedBytes, receivePendingBytes: ps.receivePendingBytes, reconnects: ps.reconnects, duplicates: ps.duplicates })),
  }
}

// The baseline: once every link is up (bounded), before any traffic.
try {
  await replica.waitForPeers(peers, { timeoutMs: cfg.baselineWaitMs })
} catch {
  // partitioned or peers down at start: the baseline is taken anyway
}
gc()
const baseline = { fdsBefore, threadsBefore, fdsAfterStart, fds: fds(), rssBefore, rss: rssBytes(), threads: threads(), receiveBytesAllocated: replica.stats().receiveBytesAllocated }
out({ t: 'ready', port: replica.port, pid: process.pid, baseline })
trafficTimer = setTimeout(tick, 10)

const progressTimer = setInterval(() => {
  progress()
  out({ t: 'sent', last: sentLast(), queueFull, sendsFalse, received })
}, 100)

// ---- commands ------------------------------------------------------------
const rl = createInterface({ input: process.stdin })
let closing = false
// The run is gone (its end of the pipe closed): nothing to report to.
rl.on('close', () => {
  if (!closing) process.exit(4)
})
rl.on('line', async (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch {
    return
  }
  if (cmd.cmd === 'quiesce') {
    sending = false
    clearTimeout(trafficTimer)
    replica.flush()
    out({ t: 'stopped', last: sentLast() })
    // Wait (bounded) until every peer acknowledged everything.
    const end = Date.now() + cmd.timeoutMs
    for (;;) {
      const ps = replica.stats().peers
      if (ps.every((p) => p.queuedBytes === 0)) {
        progress()
        out({ t: 'drained' })
        break
      }
      if (Date.now() > end) {
        progress()
        out({ t: 'not-drained', peers: ps.map((p) => ({ id: p.id, connected: p.connected, queuedBytes: p.queuedBytes, queuedMsgs: p.queuedMsgs, unackedBytes: p.unackedBytes })) })
        break
      }
      await new Promise((r) => setTimeout(r, 20))
    }
  } else if (cmd.cmd === 'health') {
    progress()
    out({ t: 'health', health: health() })
  } else if (cmd.cmd === 'close') {
    closing = true
    sending = false
    clearTimeout(trafficTimer)
    clearInterval(progressTimer)
    rl.close()
    const result = await replica.close({ timeoutMs: cmd.timeoutMs })
    // What close() reports is the unacknowledged tail of each queue: find
    // the seq it starts at (its bytes must be exactly a suffix).
    const closeFrom = {}
    for (const [p, bytes] of Object.entries(result.undeliveredBytes)) {
      const t = tx.get(Number(p))
      const total = t.cum.n > 0 ? t.cum.a[t.cum.n - 1] : 0
      // bytes of seqs s..n
      const suffix = (s) => total - (s > 1 ? t.cum.a[s - 2] : 0)
      let s = t.cum.n + 1
      while (s > 1 && suffix(s - 1) <= bytes) s--
      closeFrom[p] = s
      if (suffix(s) !== bytes) {
        violation(`replica ${id}.${k}: close() reports ${bytes} bytes undelivered to ${p}, not the bytes of any tail of what was sent to it (nearest: seqs ${s}.. = ${suffix(s)} bytes)`)
      }
    }
    out({ t: 'closed', undeliveredBytes: result.undeliveredBytes, closeFrom, last: sentLast() })
    const streams = [...rx].map(([key, st]) => [key, st.first, st.last, st.count])
    out({ t: 'final', s: streams, after: { fds: fds(true), threads: threads() } })
    // (after the count: destroying stdin leaves a /dev/null descriptor in its place)
    process.stdin.destroy()
    // The process must now exit by itself (nothing of the replica left).
    const diag = setTimeout(() => {
      process.stderr.write(`still alive 3 s after close: ${JSON.stringify(process.getActiveResourcesInfo())}\n`)
    }, 3000)
    diag.unref()
  }
})
