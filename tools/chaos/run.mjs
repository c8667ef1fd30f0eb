#!/usr/bin/env node
// npm run chaos -- [--seed N] [--duration S] [--mode auto|netns|proxy]
//                  [--replicas N] [--rate MSGS_PER_S] [--auth mac|none] [--verbose]
//
// Five replicas (--replicas) in child processes stream numbered messages and
// broadcasts to each other (tools/chaos/replica.mjs) while a schedule drawn
// from the seed kills them (SIGKILL) and restarts them, freezes them
// (SIGSTOP/SIGCONT) and partitions the network. Then every fault is healed,
// the queues drain, the replicas report their health and close, and the
// invariant checker (tools/chaos/check.mjs) compares what each sender sent
// and gave up with what each receiver got.
//
// Network: as root with iproute2 (--mode auto, the default, or netns) every
// replica runs in a network namespace of its own (`ip netns exec`), every
// pair of replicas has a private link (tools/chaos/netns.mjs) and a
// partition sets links down. Otherwise (or --mode proxy) replicas talk
// through a loopback TCP proxy per directed link (tools/chaos/proxy.mjs)
// that blackholes.
//
// Exit status: 0 every invariant held; 1 a violation (the seed and the
// command that replays the schedule are printed); 2 the run could not be
// set up.
import { spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { createServer } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { generateKeyPair } from 'nexres-rpc'

import { check } from './check.mjs'
import { NetnsTopology, netnsUnavailable, removeStale } from './netns.mjs'
import { LinkProxy } from './proxy.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const replicaScript = join(here, 'replica.mjs')

// ---- options -----------------------------------------------------------
function parseArgs(argv) {
  const o = { seed: undefined, duration: 45, mode: 'auto', replicas: 5, rate: 200, auth: 'mac', verbose: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const val = () => {
      const v = argv[++i]
      if (v === undefined) usage(`${a} needs a value`)
      return v
    }
    const num = (v, lo, hi) => {
      const n = Number(v)
      if (!Number.isInteger(n) || n < lo || n > hi) usage(`${a}: expected an integer in [${lo}, ${hi}], got ${v}`)
      return n
    }
    if (a === '--seed') o.seed = num(val(), 0, 2 ** 32 - 1)
    else if (a === '--duration') o.duration = num(val(), 5, 3600)
    else if (a === '--mode') {
      o.mode = val()
      if (!['auto', 'netns', 'proxy'].includes(o.mode)) usage(`--mode: auto, netns or proxy, got ${o.mode}`)
    } else if (a === '--replicas') o.replicas = num(val(), 2, 8)
    else if (a === '--rate') o.rate = num(val(), 1, 100_000)
    else if (a === '--auth') {
      o.auth = val()
      if (!['mac', 'none'].includes(o.auth)) usage(`--auth: mac or none, got ${o.auth}`)
    } else if (a === '--verbose' || a === '-v') o.verbose = true
    else if (a === '--help' || a === '-h') usage()
    else usage(`unknown argument ${a}`)
  }
  if (o.seed === undefined) o.seed = process.env.NEXRES_CHAOS_SEED !== undefined ? num2(process.env.NEXRES_CHAOS_SEED) : randomInt(2 ** 32 - 1)
  return o
}
function num2(v) {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0 || n >= 2 ** 32) usage(`NEXRES_CHAOS_SEED: expected an integer in [0, 2^32), got ${v}`)
  return n
}
function usage(err) {
  const text = 'usage: npm run chaos -- [--seed N] [--duration S] [--mode auto|netns|proxy] [--replicas N] [--rate MSGS_PER_S] [--auth mac|none] [--verbose]'
  if (err) {
    process.stderr.write(`chaos: ${err}\n${text}\n`)
    process.exit(2)
  }
  process.stdout.write(text + '\n')
  process.exit(0)
}

const opts = parseArgs(process.argv.slice(2))
const ids = Array.from({ length: opts.replicas }, (_, i) => i + 1)
const durMs = opts.duration * 1000
const t0 = Date.now()
const since = () => ((Date.now() - t0) / 1000).toFixed(1)
const log = (s) => process.stdout.write(`[chaos ${since().padStart(5)}s] ${s}\n`)
const vlog = (s) => opts.verbose && log(s)

// ---- seeded schedule ---------------------------------------------------
function mulberry32(a) {
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The faults, drawn from the seed alone: [{ at (ms from the start of the
 * chaos phase), type, ... }]. One replica (the witness) is never killed or
 * closed, at most two are down at once (killed, or closed with close() and
 * a short timeout, then started again); a SIGSTOP lasts 0.1-1.6 s or (30%) 2-6 s,
 * past the heartbeat timeout; partitions last 0.2-2.2 s or (35%) 2.8-5.8 s,
 * past peerDownDeadlineMs, so that queues are given up and reported.
 */
function makeSchedule(seed, directed) {
  const rng = mulberry32(seed)
  const pick = (xs) => xs[Math.floor(rng() * xs.length)]
  const witness = pick(ids)
  const deadUntil = new Map()
  const stoppedUntil = new Map()
  const ev = []
  const endAt = durMs - 2000
  let t = 1000
  for (;;) {
    t += 200 + Math.floor(rng() * 1000)
    if (t >= endAt) break
    const dead = (id) => (deadUntil.get(id) ?? 0) > t
    const stopped = (id) => (stoppedUntil.get(id) ?? 0) > t
    const r = rng()
    if (r < 0.4) {
      // kill -9 (or, one time in four, close() with a short timeout) and
      // start again later: a new incarnation, a new sender stream
      const cands = ids.filter((id) => id !== witness && !dead(id) && !stopped(id))
      if (ids.filter(dead).length >= 2 || cands.length === 0) continue
      const id = pick(cands)
      const down = 300 + Math.floor(rng() * 3500)
      if (rng() < 0.25) {
        const timeoutMs = pick([0, 100, 500, 1500])
        ev.push({ at: t, type: 'close', id, timeoutMs }, { at: t + timeoutMs + down, type: 'restart', id })
        deadUntil.set(id, t + timeoutMs + down)
      } else {
        ev.push({ at: t, type: 'kill', id }, { at: t + down, type: 'restart', id })
        deadUntil.set(id, t + down)
      }
    } else if (r < 0.6) {
      const cands = ids.filter((id) => !dead(id) && !stopped(id))
      if (cands.length === 0) continue
      const id = pick(cands)
      const dur = rng() < 0.3 ? 2000 + Math.floor(rng() * 4000) : 100 + Math.floor(rng() * 1500)
      ev.push({ at: t, type: 'stop', id }, { at: t + dur, type: 'cont', id })
      stoppedUntil.set(id, t + dur)
    } else {
      const kinds = directed ? ['isolate', 'split', 'pair', 'oneway', 'flap'] : ['isolate', 'split', 'pair', 'flap']
      const kind = pick(kinds)
      const dur = rng() < 0.35 ? 2800 + Math.floor(rng() * 3000) : 200 + Math.floor(rng() * 2000)
      const how = rng() < 0.5 ? 'resume' : 'reset'
      let links = []
      const both = (i, j) => [[i, j], [j, i]]
      if (kind === 'isolate') {
        const i = pick(ids)
        for (const j of ids) if (j !== i) links.push(...both(i, j))
      } else if (kind === 'split') {
        const side = new Set(ids.filter(() => rng() < 0.5))
        if (side.size === 0 || side.size === ids.length) side.clear(), side.add(pick(ids))
        for (const i of side) for (const j of ids) if (!side.has(j)) links.push(...both(i, j))
      } else if (kind === 'pair' || kind === 'oneway' || kind === 'flap') {
        const i = pick(ids)
        const j = pick(ids.filter((x) => x !== i))
        links = kind === 'oneway' ? [[i, j]] : both(i, j)
      }
      if (kind === 'flap') {
        // a link that goes down and up a few times within a second
        let u = t
        const n = 3 + Math.floor(rng() * 4)
        for (let f = 0; f < n; f++) {
          const d = 30 + Math.floor(rng() * 200)
          ev.push({ at: u, type: 'cut', links, kind }, { at: u + d, type: 'heal', links, how: rng() < 0.5 ? 'resume' : 'reset' })
          u += d + 20 + Math.floor(rng() * 100)
        }
      } else {
        ev.push({ at: t, type: 'cut', links, kind }, { at: t + dur, type: 'heal', links, how })
      }
    }
  }
  ev.sort((a, b) => a.at - b.at)
  return { witness, events: ev.filter((e) => e.at < durMs) }
}

// ---- state ----------------------------------------------------------------
const violations = []
const violate = (what) => {
  violations.push(`[${since()}s] ${what}`)
  log(`VIOLATION ${what}`)
}
const counts = { kill: 0, close: 0, restart: 0, closeReports: 0, closeBytes: 0, stop: 0, cont: 0, cut: 0, heal: 0, undeliveredEvents: 0, undeliveredMessages: 0, gaps: 0 }
const downCodes = {}
const rejectCodes = {}
const incarnations = Object.fromEntries(ids.map((id) => [id, []]))
const senders = {}
const receivers = {}
/** Current incarnation record per replica id. */
const current = new Map()
const allIncs = []
let phase = 'setup'

let topo
const proxies = new Map() // 'i>j' -> LinkProxy
let cleanedUp = false

// ---- child processes --------------------------------------------------------
const keys = Object.fromEntries(ids.map((id) => [id, opts.auth === 'mac' ? generateKeyPair() : undefined]))
const realPorts = new Map()
let clusterOf

const replicaOptions = (id) => ({
  auth: opts.auth,
  ...(opts.auth === 'mac' ? { privateKey: keys[id].privateKey } : {}),
  ...(topo ? { listenHost: '0.0.0.0' } : {}),
  heartbeatIntervalMs: 250,
  heartbeatTimeoutMs: 1500,
  handshakeTimeoutMs: 2000,
  peerDownDeadlineMs: 2500,
  reconnect: { minMs: 20, maxMs: 400 },
  highWaterMark: 512 * 1024,
  maxQueueBytes: 16 * 1024 * 1024,
  receiveChunkBytes: 256 * 1024,
  maxChunksPerConnection: 8,
  closeTimeoutMs: 3000,
})

function spawnReplica(id) {
  const k = incarnations[id].length + 1
  incarnations[id].push(k)
  const key = `${id}.${k}`
  const env = {
    ...process.env,
    NEXRES_CHAOS: JSON.stringify({
      id,
      k,
      cluster: clusterOf(id),
      options: replicaOptions(id),
      seed: (opts.seed ^ Math.imul(id, 0x9e3779b1) ^ Math.imul(k, 0x85ebca6b)) >>> 0,
      rate: opts.rate,
      baselineWaitMs: phase === 'setup' ? 15_000 : 1000,
    }),
  }
  const nodeArgs = ['--expose-gc', replicaScript]
  const [cmd, args] = topo ? [topo.exec(id)[0], [...topo.exec(id)[1], process.execPath, ...nodeArgs]] : [process.execPath, nodeArgs]
  // A process group of its own: a Ctrl-C in a terminal reaches only this
  // run, which then cleans up in order. (A child whose run is gone sees its
  // stdin close and exits.)
  const proc = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true })
  const inc = {
    id,
    k,
    key,
    proc,
    stopped: false,
    expectedExit: false,
    exited: false,
    exit: undefined,
    err: '',
    seen: new Map(), // line type -> last message of that type
    waiters: new Set(),
  }
  senders[key] = { id, k, graceful: false, sentLast: null, sentProgress: {}, undelivered: {}, closeFrom: {} }
  receivers[key] = { id, k, killed: false, complete: false, streams: {}, gaps: {} }
  current.set(id, inc)
  allIncs.push(inc)
  let partial = ''
  proc.stdout.setEncoding('utf8')
  proc.stdout.on('data', (d) => {
    partial += d
    const parts = partial.split('\n')
    partial = parts.pop()
    for (const line of parts) onLine(inc, line)
  })
  proc.stderr.setEncoding('utf8')
  proc.stderr.on('data', (d) => {
    inc.err = (inc.err + d).slice(-8000)
  })
  proc.stdin.on('error', () => {})
  // 'close': the process is gone and everything it wrote has been read.
  proc.on('close', (code, signal) => {
    inc.exited = true
    inc.exit = { code, signal }
    if (!inc.expectedExit) {
      violate(`replica ${key} exited by itself (code ${code}, signal ${signal}) during ${phase}; stderr: ${inc.err.slice(-3000) || '(empty)'}`)
      receivers[key].killed = true
    } else if (inc.closing && (code !== 0 || signal !== null)) {
      violate(`replica ${key} exited with code ${code}, signal ${signal} after close(); stderr: ${inc.err.slice(-3000) || '(empty)'}`)
    }
    wake(inc)
  })
  proc.on('error', (err) => {
    violate(`replica ${key} could not be started: ${err.message}`)
  })
  vlog(`started replica ${key} (pid ${proc.pid})`)
  return inc
}

function wake(inc) {
  for (const w of [...inc.waiters]) w()
}

/** Resolves with the first `type` line of `inc` (already seen or future); rejects on exit or after `ms`. */
function waitFor(inc, type, ms) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer)
      inc.waiters.delete(check)
    }
    const check = () => {
      if (inc.seen.has(type)) {
        done()
        resolve(inc.seen.get(type))
      } else if (inc.exited) {
        done()
        reject(new Error(`replica ${inc.key} exited (code ${inc.exit.code}, signal ${inc.exit.signal}) before '${type}'; stderr: ${inc.err.slice(-2000)}`))
      }
    }
    const timer = setTimeout(() => {
      done()
      reject(new Error(`replica ${inc.key}: no '${type}' within ${ms} ms; stderr: ${inc.err.slice(-2000)}`))
    }, ms)
    inc.waiters.add(check)
    check()
  })
}

function send(inc, cmd) {
  if (!inc.exited) inc.proc.stdin.write(JSON.stringify(cmd) + '\n')
}

let delivered = 0
function onLine(inc, line) {
  let m
  try {
    m = JSON.parse(line)
  } catch {
    inc.err = (inc.err + `[stdout] ${line}\n`).slice(-8000)
    return
  }
  const s = senders[inc.key]
  const r = receivers[inc.key]
  switch (m.t) {
    case 'violation':
      violate(m.what)
      break
    case 'rx':
      for (const [skey, first, last, count] of m.s) {
        const prev = r.streams[skey]
        delivered += count - (prev?.count ?? 0)
        r.streams[skey] = { first, last, count }
      }
      break
    case 'gap':
      ;(r.gaps[m.key] ??= []).push([m.a, m.b])
      counts.gaps++
      vlog(`replica ${inc.key}: gap ${m.a}..${m.b} in stream ${m.key}`)
      break
    case 'undelivered':
      if (m.from <= m.to) (s.undelivered[m.peer] ??= []).push([m.from, m.to])
      counts.undeliveredEvents++
      counts.undeliveredMessages += m.info.messages
      vlog(`replica ${inc.key}: 'undelivered' to ${m.peer}: seqs ${m.from}..${m.to} (${m.info.messages} messages)`)
      break
    case 'sent':
      s.sentProgress = m.last
      break
    case 'stopped':
      s.sentLast = m.last
      break
    case 'closed':
      s.closeFrom = m.closeFrom
      for (const b of Object.values(m.undeliveredBytes)) {
        counts.closeReports++
        counts.closeBytes += b
      }
      s.undeliveredAtClose = m.undeliveredBytes
      s.sentLast = m.last
      s.graceful = true
      break
    case 'final':
      for (const [skey, first, last, count] of m.s) r.streams[skey] = { first, last, count }
      r.complete = true
      break
    case 'down':
      downCodes[m.code] = (downCodes[m.code] ?? 0) + 1
      break
    case 'reject':
      rejectCodes[m.code] = (rejectCodes[m.code] ?? 0) + 1
      break
    case 'ready':
      vlog(`replica ${inc.key} ready (port ${m.port}, ${m.baseline.fds.sockets} sockets)`)
      break
  }
  inc.seen.set(m.t, m)
  wake(inc)
}

// ---- network ----------------------------------------------------------------
const cutCount = new Map() // link key -> how many active cuts hold it
function linkKey(i, j) {
  return topo ? (i < j ? `${i}-${j}` : `${j}-${i}`) : `${i}>${j}`
}
function cut(links) {
  const done = new Set()
  for (const [i, j] of links) {
    const key = linkKey(i, j)
    if (done.has(key)) continue
    done.add(key)
    const n = cutCount.get(key) ?? 0
    cutCount.set(key, n + 1)
    if (n > 0) continue
    if (topo) topo.link(i, j, false)
    else proxies.get(key).blackhole()
  }
}
function heal(links, how) {
  const done = new Set()
  for (const [i, j] of links) {
    const key = linkKey(i, j)
    if (done.has(key)) continue
    done.add(key)
    const n = cutCount.get(key) ?? 0
    if (n === 0) continue
    cutCount.set(key, n - 1)
    if (n > 1) continue
    if (topo) topo.link(i, j, true)
    else proxies.get(key).heal(how)
  }
}
function healAll() {
  for (const [key, n] of cutCount) {
    if (n === 0) continue
    cutCount.set(key, 0)
    if (topo) {
      const [i, j] = key.split('-').map(Number)
      topo.link(i, j, true)
    } else proxies.get(key).heal('resume')
  }
}

async function freePorts(n) {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => resolve(s))
    })),
  )
  const ports = servers.map((s) => s.address().port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

async function setupNetwork() {
  let mode = opts.mode
  if (mode !== 'proxy') {
    const why = netnsUnavailable()
    if (why === undefined) {
      removeStale()
      try {
        topo = new NetnsTopology(ids)
        topo.setup()
        await topo.probe(ids[0], ids[1])
      } catch (err) {
        topo?.teardown()
        topo = undefined
        if (mode === 'netns') throw err
        log(`network namespaces unavailable (${err.message}); using the loopback proxies`)
      }
    } else if (mode === 'netns') {
      throw new Error(`--mode netns: ${why}`)
    } else {
      log(`network namespaces unavailable (${why}); using the loopback proxies`)
    }
  }
  if (topo) {
    const port = 7100
    clusterOf = (i) => ({
      id: 'chaos',
      replicas: ids.map((j) => ({
        id: j,
        host: j === i ? topo.addressOn(ids.find((x) => x !== i), i) : topo.addressOn(i, j),
        port,
        ...(opts.auth === 'mac' ? { publicKey: keys[j].publicKey } : {}),
      })),
    })
    return 'netns'
  }
  const ports = await freePorts(ids.length)
  ids.forEach((id, n) => realPorts.set(id, ports[n]))
  for (const i of ids) {
    for (const j of ids) {
      if (i === j) continue
      const p = new LinkProxy(i, j, realPorts.get(j))
      await p.listen()
      proxies.set(`${i}>${j}`, p)
    }
  }
  clusterOf = (i) => ({
    id: 'chaos',
    replicas: ids.map((j) => ({
      id: j,
      host: '127.0.0.1',
      port: j === i ? realPorts.get(j) : proxies.get(`${i}>${j}`).port,
      ...(opts.auth === 'mac' ? { publicKey: keys[j].publicKey } : {}),
    })),
  })
  return 'proxy'
}

// ---- cleanup (every path) ---------------------------------------------------
function killAllSync() {
  for (const inc of allIncs) {
    if (inc.exited) continue
    inc.expectedExit = true
    try {
      inc.proc.kill('SIGKILL')
    } catch {
      // gone
    }
  }
}
async function cleanup() {
  if (cleanedUp) return
  cleanedUp = true
  killAllSync()
  // Wait (bounded) for the children to be gone before the namespaces go.
  const end = Date.now() + 5000
  while (allIncs.some((i) => !i.exited) && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
  await Promise.all([...proxies.values()].map((p) => p.close()))
  topo?.teardown()
}
process.on('exit', () => {
  killAllSync()
  topo?.teardown()
})
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`)
    void cleanup().finally(() => process.exit(130))
  })
}

const replay = (mode) =>
  `npm run chaos -- --seed ${opts.seed} --duration ${opts.duration} --mode ${mode}` +
  (opts.replicas !== 5 ? ` --replicas ${opts.replicas}` : '') +
  (opts.rate !== 200 ? ` --rate ${opts.rate}` : '') +
  (opts.auth !== 'mac' ? ` --auth ${opts.auth}` : '')

// ---- the run -------------------------------------------------------------------
const timers = new Set()
function at(ms, fn) {
  const t = setTimeout(() => {
    timers.delete(t)
    fn()
  }, ms)
  timers.add(t)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const pendingCloses = []
const restarting = new Map()

/** Starts the next incarnation of `id` once the current one is gone. */
function restart(id) {
  if (restarting.has(id)) return restarting.get(id)
  const p = (async () => {
    const old = current.get(id)
    const end = Date.now() + 15_000
    while (!old.exited && Date.now() < end) await sleep(20)
    if (!old.exited) {
      violate(`replica ${old.key} still running 15 s after ${old.closing ? 'close()' : 'SIGKILL'}`)
      old.expectedExit = true
      old.proc.kill('SIGKILL')
      const end2 = Date.now() + 5000
      while (!old.exited && Date.now() < end2) await sleep(20)
    }
    if (!cleanedUp) spawnReplica(id)
  })().finally(() => restarting.delete(id))
  restarting.set(id, p)
  return p
}

/**
 * Asks `inc` to close (close({ timeoutMs })), then checks that it reports,
 * exits by itself with code 0 and released what Replica.start took.
 */
async function closeAndCheck(inc, timeoutMs) {
  inc.expectedExit = true
  inc.closing = true
  send(inc, { cmd: 'close', timeoutMs })
  const f = await waitFor(inc, 'final', timeoutMs + 15_000)
  const end = Date.now() + 5000
  while (!inc.exited && Date.now() < end) await sleep(20)
  if (!inc.exited) violate(`replica ${inc.key} did not exit within 5 s of close() (something still holds its event loop); stderr: ${inc.err.slice(-2000)}`)
  const after = f.after
  const base = inc.seen.get('ready').baseline
  // (stdio pipes are sockets too: counted before Replica.start)
  if (after.fds.all > base.fdsBefore.all || after.fds.sockets > base.fdsBefore.sockets) {
    const was = new Set(base.fdsBefore.list)
    violate(
      `replica ${inc.key}: ${after.fds.all} descriptors (${after.fds.sockets} sockets) open after close(), ` +
        `${base.fdsBefore.all} (${base.fdsBefore.sockets}) before Replica.start; new: ${after.fds.list.filter((x) => !was.has(x)).join(' ')}`,
    )
  }
  if (after.threads > base.threadsBefore) violate(`replica ${inc.key}: ${after.threads} threads after close(), ${base.threadsBefore} before Replica.start`)
}

function apply(e) {
  if (phase !== 'chaos') return
  counts[e.type]++
  const inc = e.id !== undefined ? current.get(e.id) : undefined
  switch (e.type) {
    case 'kill':
      vlog(`kill -9 replica ${inc.key}`)
      inc.expectedExit = true
      receivers[inc.key].killed = true
      inc.proc.kill('SIGKILL')
      break
    case 'close':
      vlog(`close() replica ${inc.key} (timeout ${e.timeoutMs} ms)`)
      pendingCloses.push(closeAndCheck(inc, e.timeoutMs).catch((err) => violate(`close: ${err.message}`)))
      break
    case 'restart':
      vlog(`restart replica ${e.id}`)
      void restart(e.id)
      break
    case 'stop':
      vlog(`SIGSTOP replica ${inc.key}`)
      inc.stopped = true
      inc.proc.kill('SIGSTOP')
      break
    case 'cont':
      vlog(`SIGCONT replica ${inc.key}`)
      inc.stopped = false
      inc.proc.kill('SIGCONT')
      break
    case 'cut':
      vlog(`partition (${e.kind}): ${e.links.map(([i, j]) => `${i}${topo ? '-' : '>'}${j}`).join(' ')}`)
      cut(e.links)
      break
    case 'heal':
      vlog(`heal (${e.how}): ${e.links.map(([i, j]) => `${i}${topo ? '-' : '>'}${j}`).join(' ')}`)
      heal(e.links, e.how)
      break
  }
}

async function main() {
  // A run that does not end on its own is a failure too.
  const watchdog = setTimeout(() => {
    violate(`the run did not finish within ${opts.duration + 150} s (stuck in ${phase})`)
    void finish()
  }, (opts.duration + 150) * 1000)
  watchdog.unref()

  let mode
  try {
    mode = await setupNetwork()
  } catch (err) {
    log(`setup failed: ${err.message}`)
    await cleanup()
    process.exit(2)
  }
  const sched = makeSchedule(opts.seed, mode === 'proxy')
  log(`seed ${opts.seed}, ${opts.duration} s, ${ids.length} replicas ${mode === 'netns' ? 'in network namespaces (links cut with ip link set down)' : 'behind loopback proxies (links blackholed)'}, auth ${opts.auth}, ~${opts.rate} msgs/s each; witness (never killed): ${sched.witness}; ${sched.events.length} fault events`)
  log(`replay: ${replay(mode)}`)

  for (const id of ids) spawnReplica(id)
  try {
    await Promise.all(ids.map((id) => waitFor(current.get(id), 'ready', 30_000)))
  } catch (err) {
    violate(`start: ${err.message}`)
    return finish(mode)
  }
  log('all replicas up; chaos starts')
  phase = 'chaos'
  const chaosStart = Date.now()
  for (const e of sched.events) at(e.at, () => apply(e))
  const ticker = setInterval(() => {
    log(`kills ${counts.kill}, closes ${counts.close}, SIGSTOPs ${counts.stop}, cuts ${counts.cut} | delivered ${delivered}, gaps ${counts.gaps}, given up ${counts.undeliveredMessages} (${counts.undeliveredEvents} events) | peer-down ${JSON.stringify(downCodes)}`)
  }, 5000)
  await new Promise((r) => setTimeout(r, Math.max(0, durMs - (Date.now() - chaosStart))))
  clearInterval(ticker)

  // ---- heal everything, let the queues drain -----------------------------
  phase = 'recovery'
  for (const t of timers) clearTimeout(t)
  timers.clear()
  healAll()
  for (const inc of current.values()) {
    if (inc.stopped) {
      inc.stopped = false
      inc.proc.kill('SIGCONT')
    }
  }
  await Promise.allSettled(pendingCloses)
  await Promise.all(ids.map((id) => restarting.get(id) ?? (current.get(id).exited || current.get(id).closing ? restart(id) : undefined)))
  log('faults healed, every replica running; waiting for the queues to drain')
  try {
    await Promise.all(ids.map((id) => waitFor(current.get(id), 'ready', 30_000)))
  } catch (err) {
    violate(`recovery: ${err.message}`)
    return finish(mode)
  }
  phase = 'drain'
  const finals = ids.map((id) => current.get(id))
  for (const inc of finals) send(inc, { cmd: 'quiesce', timeoutMs: 30_000 })
  const drained = await Promise.allSettled(finals.map((inc) => Promise.race([waitFor(inc, 'drained', 35_000), waitFor(inc, 'not-drained', 35_000)])))
  drained.forEach((d, n) => {
    const inc = finals[n]
    if (d.status === 'rejected') violate(`drain: ${d.reason.message}`)
    else if (d.value.t === 'not-drained') {
      violate(`replica ${inc.key}: queues not acknowledged within 30 s after every fault was healed: ${JSON.stringify(d.value.peers.filter((p) => p.queuedBytes > 0))}`)
    }
  })

  // ---- health of the survivors ---------------------------------------------
  phase = 'health'
  for (const inc of finals) send(inc, { cmd: 'health' })
  const healths = await Promise.allSettled(finals.map((inc) => waitFor(inc, 'health', 10_000)))
  healths.forEach((h, n) => {
    const inc = finals[n]
    if (h.status === 'rejected') return violate(`health: ${h.reason.message}`)
    checkHealth(inc, inc.seen.get('ready').baseline, h.value.health)
  })

  // ---- close ------------------------------------------------------------------
  phase = 'close'
  const closed = await Promise.allSettled(finals.map((inc) => closeAndCheck(inc, 3000)))
  closed.forEach((c) => c.status === 'rejected' && violate(`close: ${c.reason.message}`))
  return finish(mode)
}

// Bounded: the survivors hold about what they held once their links were up.
const RSS_SLACK = 96 * 1024 * 1024
function checkHealth(inc, base, h) {
  const n = ids.length - 1
  // one listening socket, one link to each peer, one connection from each
  // (plus the stdio pipes, which are sockets, counted before Replica.start)
  const maxSockets = base.fdsBefore.sockets + 1 + 2 * n + 2
  if (h.fds.sockets > maxSockets) violate(`replica ${inc.key}: ${h.fds.sockets} sockets open once drained (at most ${maxSockets} expected: ${base.fdsBefore.sockets} stdio, 1 listening, ${n} out, ${n} in, 2 closing)`)
  const otherNow = h.fds.all - h.fds.sockets
  const otherBase = base.fds.all - base.fds.sockets
  if (otherNow > otherBase + 4) violate(`replica ${inc.key}: ${otherNow} non-socket descriptors once drained, ${otherBase} at start`)
  if (h.rss > base.rss + RSS_SLACK) {
    violate(`replica ${inc.key}: resident memory ${(h.rss / 2 ** 20).toFixed(0)} MiB once drained, ${(base.rss / 2 ** 20).toFixed(0)} MiB at start (bound: +${RSS_SLACK / 2 ** 20} MiB)`)
  }
  // Receive buffers: no more than the live links may hold at once (chunks
  // of dead connections must have come back to the pool).
  const opt = replicaOptions(inc.id)
  const maxReceive = n * opt.maxChunksPerConnection * opt.receiveChunkBytes
  if (h.receiveBytesAllocated > maxReceive) {
    violate(`replica ${inc.key}: ${h.receiveBytesAllocated} bytes of receive buffers allocated once drained (live links hold at most ${maxReceive})`)
  }
  if (h.miqDepth !== 0) violate(`replica ${inc.key}: ${h.miqDepth} runs still in the input queue once drained`)
  for (const p of h.peers) {
    if (p.receivePendingBytes !== 0) violate(`replica ${inc.key}: ${p.receivePendingBytes} bytes from ${p.id} read and never handled`)
  }
  vlog(`health ${inc.key}: sockets ${h.fds.sockets}, fds ${h.fds.all} (start ${base.fds.all}), rss ${(h.rss / 2 ** 20).toFixed(0)} MiB (start ${(base.rss / 2 ** 20).toFixed(0)}), receive buffers ${(h.receiveBytesAllocated / 2 ** 20).toFixed(1)} MiB (start ${(base.receiveBytesAllocated / 2 ** 20).toFixed(1)}), threads ${h.threads}`)
}

let finishing = false
async function finish(mode) {
  if (finishing) return
  finishing = true
  phase = 'check'
  // replica.mjs reports each stream at least every 32 messages: a killed
  // process handled at most 31 past its last report
  const found = check({ incarnations, senders, receivers, tolerance: 31 })
  for (const v of found) violate(v)
  await cleanup()
  const sent = Object.values(senders).reduce((n, s) => n + Object.values(s.sentLast ?? s.sentProgress ?? {}).reduce((a, b) => a + b, 0), 0)
  log(`faults: ${counts.kill} kills, ${counts.close} closes (${counts.restart} restarts), ${counts.stop} SIGSTOPs, ${counts.cut} link cuts; ${Object.values(incarnations).reduce((n, ks) => n + ks.length, 0)} processes`)
  log(`traffic: ~${sent} messages sent (per destination), ${delivered} delivered, ${counts.gaps} gaps, ${counts.undeliveredMessages} given up in ${counts.undeliveredEvents} 'undelivered' events, ${counts.closeBytes} bytes reported by close() (${counts.closeReports} peers)`)
  log(`peer-down ${JSON.stringify(downCodes)}; rejects ${JSON.stringify(rejectCodes)}`)
  if (violations.length === 0) {
    log(`PASS: every invariant held (seed ${opts.seed})`)
    process.exit(0)
  }
  process.stdout.write(`\nchaos: FAILED with ${violations.length} violation(s), seed ${opts.seed}:\n`)
  for (const v of violations.slice(0, 40)) process.stdout.write(`  - ${v}\n`)
  if (violations.length > 40) process.stdout.write(`  ... ${violations.length - 40} more\n`)
  process.stdout.write(`replay: ${replay(mode ?? (topo ? 'netns' : 'proxy'))}\n`)
  process.exit(1)
}

main().catch(async (err) => {
  violate(`harness error: ${err?.stack ?? err}`)
  await finish()
})
