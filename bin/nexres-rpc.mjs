#!/usr/bin/env node
// nexres-rpc command line.
//
//   nexres-rpc demo [--replicas N] [--duration S] [--size BYTES] [--auth mac|none]
//   nexres-rpc keygen [--count N] [--json]
//
// `keygen` prints Ed25519 key pairs (generateKeyPair()): the public key goes
// into the cluster config, the private key to that replica only.
//
// `demo` starts a local cluster on 127.0.0.1, one replica per child process
// (this same script, run with the hidden `replica` role and its config as
// JSON in the NEXRES_DEMO_REPLICA environment variable, talking to the
// parent over IPC). Every replica broadcasts to the others in a loop that
// waits for 'drain' whenever broadcast() returns false, and a client in the
// parent keeps 32 echo calls outstanding against the replicas' client ports.
// With --auth mac (the default) the parent generates one key pair per
// replica: public keys go into the cluster config, each child gets its
// private key in its env JSON; every replica also sends a few signed
// broadcasts ({ sign: true }) and counts the signatures it receives.
// A progress line is redrawn in place on a TTY (plain lines, one a second,
// otherwise); a summary table is printed at the end.
//
// Phases (parent -> children over IPC, children answer):
//   start        child: Replica.start()           -> 'ready' { clientPort }
//                child: waitForPeers()             -> 'up'
//   'go'         child: broadcast loop, 'stats' every 100 ms
//   'stop'       child: stops sending, waits until its queues are
//                acknowledged                      -> 'stopped' { stats }
//   'close'      child: final stats, replica.close() -> 'closed' { stats },
//                then disconnects IPC and exits by itself (the parent waits
//                with a timeout and kills stragglers).
//
// Only the package's public API is used, imported by the package's own name
// (package.json self-reference resolves 'nexres-rpc' to dist/).
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { HEADER_BYTES } from 'nexres-rpc/wire'

const SCRIPT = fileURLToPath(import.meta.url)
const HOST = '127.0.0.1'
const MiB = 1024 * 1024

const ROUTE_MSG = 'demo.msg'
const ROUTE_ECHO = 'echo'

const DEFAULTS = { replicas: 4, duration: 5, size: 64, auth: 'mac', count: 1 }
const LIMITS = { replicas: [2, 16], duration: [1, 600], size: [0, MiB], count: [1, 1000] }
const AUTH_MODES = ['mac', 'none']

/** Client calls kept outstanding by the load generator (spread over the replicas). */
const OUTSTANDING = 32
/** Children report their counters this often. */
const REPORT_MS = 100
const TTY_REDRAW_MS = 250
const PLAIN_LINE_MS = 1000
/** Rates on the progress line are taken over this window. */
const RATE_WINDOW_MS = 1000
/** Replicas started (ports bound) and every link up, within this. */
const START_TIMEOUT_MS = 20_000
const PEERS_TIMEOUT_MS = 15_000
const CALL_TIMEOUT_MS = 10_000
/** After 'stop', a replica waits this long at most for its queues to be acknowledged. */
const DRAIN_TIMEOUT_MS = 5_000
/** After 'close', the parent waits this long for the children to exit before SIGKILL. */
const EXIT_TIMEOUT_MS = 10_000
/** While waiting for 'drain', look at the queues this often (see checkStall). */
const STALL_CHECK_MS = 1_000
/** Attempts at starting the cluster when a port picked as free was taken meanwhile. */
const START_ATTEMPTS = 3
/** With auth mac, each replica makes one of its broadcasts a signed one this often. */
const SIGN_EVERY_MS = 100
/** Largest payload of a signed broadcast (signed frames have a lower cap than --size). */
const MAX_SIGNED_PAYLOAD = 64 * 1024

const USAGE_TOP = `Usage: nexres-rpc <command> [options]

Commands:
  demo             start a local cluster, drive traffic through it, print a summary
  keygen           print Ed25519 key pairs for replicas (auth: 'mac')

  -v, --version    print the version of nexres-rpc

Run "nexres-rpc <command> --help" for a command's options (below).
`

const DEMO_USAGE = `Usage: nexres-rpc demo [options]

Starts a local cluster of replicas on ${HOST}, each in its own process, drives
traffic through it for a few seconds and prints a summary. Every replica
broadcasts messages to all the others (waiting for 'drain' when its queues
are full) while a client keeps ${OUTSTANDING} echo calls outstanding against the
replicas' client ports. With --auth mac, replicas authenticate each other
with freshly generated keys and also send a few signed broadcasts.

Options:
  --replicas N     replicas in the cluster, ${LIMITS.replicas[0]}..${LIMITS.replicas[1]} (default ${DEFAULTS.replicas})
  --duration S     seconds of traffic, ${LIMITS.duration[0]}..${LIMITS.duration[1]} (default ${DEFAULTS.duration})
  --size BYTES     payload size of messages and requests, ${LIMITS.size[0]}..${LIMITS.size[1]} (default ${DEFAULTS.size})
  --auth MODE      replica authentication: "mac" (default: Ed25519 keys, MAC'ed
                   frames, some signed broadcasts) or "none" (plain connections)
  -h, --help       show this help

Example:
  nexres-rpc demo --replicas 4 --duration 10 --size 1024
  nexres-rpc demo --auth none
`

const KEYGEN_USAGE = `Usage: nexres-rpc keygen [options]

Prints new Ed25519 key pairs (base64url), one per replica. The public key goes
into the cluster config every replica shares (cluster.replicas[i].publicKey);
the private key goes to that replica only (Replica.start({ privateKey })).

Options:
  --count N        key pairs to print, ${LIMITS.count[0]}..${LIMITS.count[1]} (default ${DEFAULTS.count})
  --json           print a JSON array of { publicKey, privateKey }
  -h, --help       show this help

Example:
  nexres-rpc keygen --count 4 --json > keys.json
`

class UsageError extends Error {
  constructor(message, command) {
    super(message)
    this.command = command
  }
}

/** What each option takes, for error messages. */
const VALUES = {
  replicas: `an integer from ${LIMITS.replicas[0]} to ${LIMITS.replicas[1]}`,
  duration: `a number of seconds from ${LIMITS.duration[0]} to ${LIMITS.duration[1]}`,
  size: `an integer from ${LIMITS.size[0]} to ${LIMITS.size[1]}`,
  auth: '"mac" or "none"',
  count: `an integer from ${LIMITS.count[0]} to ${LIMITS.count[1]}`,
}

// ---------------------------------------------------------------------------
// Command line

const COMMANDS = '"demo" or "keygen"'

function parseCommandLine(argv) {
  const [command, ...rest] = argv
  if (command === undefined) throw new UsageError(`missing command (${COMMANDS})`)
  if (command === '-h' || command === '--help' || command === 'help') return { command: 'help', usage: `${USAGE_TOP}\n${DEMO_USAGE}\n${KEYGEN_USAGE}` }
  if (command === '-v' || command === '--version') return { command: 'version' }
  if (command === 'replica') return { command: 'replica' }
  if (command === 'demo') return parseDemo(rest)
  if (command === 'keygen') return parseKeygen(rest)
  throw new UsageError(`unknown command "${command}" (${COMMANDS})`)
}

/** parseArgs, with its errors turned into UsageErrors naming the option. */
function parseOptions(command, args, options) {
  try {
    return parseArgs({ args, strict: true, allowPositionals: false, options }).values
  } catch (err) {
    const quoted = /'([^']+)'/.exec(String(err?.message))?.[1]
    if (err?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${quoted ?? ''}`, command)
    if (err?.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unexpected argument "${quoted ?? ''}" (${command} takes only options)`, command)
    if (err?.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      // A missing value, or one starting with "-" (taken for an option).
      const name = /--([a-z]+)/.exec(String(err.message))?.[1]
      if (name !== undefined && VALUES[name] !== undefined) throw new UsageError(`--${name} needs a value: ${VALUES[name]}`, command)
    }
    throw new UsageError(String(err?.message ?? err), command)
  }
}

function parseDemo(args) {
  const values = parseOptions('demo', args, {
    replicas: { type: 'string' },
    duration: { type: 'string' },
    size: { type: 'string' },
    auth: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help) return { command: 'help', usage: DEMO_USAGE }
  const opts = {
    replicas: integerOption('replicas', values.replicas, 'demo'),
    duration: numberOption('duration', values.duration, 'demo'),
    size: integerOption('size', values.size, 'demo'),
    auth: values.auth ?? DEFAULTS.auth,
  }
  if (!AUTH_MODES.includes(opts.auth)) throw new UsageError(`--auth must be ${VALUES.auth} (got ${JSON.stringify(opts.auth)})`, 'demo')
  return { command: 'demo', opts }
}

function parseKeygen(args) {
  const values = parseOptions('keygen', args, {
    count: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help) return { command: 'help', usage: KEYGEN_USAGE }
  return { command: 'keygen', opts: { count: integerOption('count', values.count, 'keygen'), json: values.json === true } }
}

function integerOption(name, raw, command) {
  const [min, max] = LIMITS[name]
  if (raw === undefined) return DEFAULTS[name]
  const v = /^\d+$/.test(raw) ? Number(raw) : NaN
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(`--${name} must be ${VALUES[name]} (got ${JSON.stringify(raw)})`, command)
  }
  return v
}

function numberOption(name, raw, command) {
  const [min, max] = LIMITS[name]
  if (raw === undefined) return DEFAULTS[name]
  const v = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN
  if (!Number.isFinite(v) || v < min || v > max) {
    throw new UsageError(`--${name} must be ${VALUES[name]} (got ${JSON.stringify(raw)})`, command)
  }
  return v
}

// ---------------------------------------------------------------------------
// keygen

async function keygen(opts) {
  let nexres
  try {
    nexres = await import('nexres-rpc')
  } catch (err) {
    process.stderr.write(`nexres-rpc: cannot load the library: ${err?.message ?? err}\n`)
    return 1
  }
  const pairs = Array.from({ length: opts.count }, () => nexres.generateKeyPair())
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(pairs, null, 2)}\n`)
    return 0
  }
  const lines = [
    `# ${opts.count === 1 ? 'An Ed25519 key pair' : `${opts.count} Ed25519 key pairs`} for replicas with auth: 'mac' (base64url), one pair per replica.`,
    '# publicKey:  into the cluster config every replica shares: cluster.replicas[i].publicKey',
    '# privateKey: to that replica only: Replica.start({ id, cluster, privateKey }); keep it secret',
  ]
  pairs.forEach((p, i) => {
    lines.push('', `key pair ${i + 1}`, `  publicKey:  ${p.publicKey}`, `  privateKey: ${p.privateKey}`)
  })
  process.stdout.write(`${lines.join('\n')}\n`)
  return 0
}

// ---------------------------------------------------------------------------
// Formatting

const count = (n) => Math.round(n).toLocaleString('en-US')

function rate(r) {
  if (!Number.isFinite(r)) return '-'
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)} M`
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)} k`
  return r.toFixed(0)
}

function bytes(b) {
  if (b >= 1e9) return `${(b / 1e9).toFixed(2)} GB`
  if (b >= 1e6) return `${(b / 1e6).toFixed(1)} MB`
  if (b >= 1e3) return `${(b / 1e3).toFixed(1)} kB`
  return `${b} B`
}

/** Microseconds as milliseconds. */
function ms(us) {
  if (us === undefined || !Number.isFinite(us)) return '-'
  const m = us / 1000
  return m >= 100 ? `${m.toFixed(0)} ms` : m >= 10 ? `${m.toFixed(1)} ms` : `${m.toFixed(2)} ms`
}

function table(header, rows) {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)))
  return all.map((r) => r.map((c, i) => String(c).padStart(widths[i])).join('  ')).join('\n')
}

// ---------------------------------------------------------------------------
// Latency recording

// hdr-histogram-js is a devDependency: present in a clone, absent when the
// package is installed from npm. So it is a soft requirement: if it cannot
// be imported, latencies go into a preallocated Float64Array instead, and
// percentiles come from the sorted array. That array has a fixed capacity
// (the demo may run for 10 minutes); past it, reservoir sampling keeps a
// uniform sample of every value seen, so percentiles stay unbiased
// estimates, while the count and the max stay exact.
// NEXRES_DEMO_NO_HDR=1 forces the fallback (used by the tests).
async function latencyRecorders() {
  if (process.env.NEXRES_DEMO_NO_HDR !== '1') {
    try {
      const mod = await import('hdr-histogram-js')
      const build = mod.build ?? mod.default?.build
      if (typeof build === 'function') {
        const make = () => hdrRecorder(build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false }))
        return { kind: 'hdr-histogram-js', total: make(), window: make() }
      }
    } catch {
      // not installed: fall back below
    }
  }
  return { kind: 'sorted sample, hdr-histogram-js not available', total: arrayRecorder(1 << 20), window: arrayRecorder(1 << 16) }
}

/** Values in microseconds (integers >= 1). */
function hdrRecorder(h) {
  return {
    record: (us) => h.recordValue(Math.min(Math.max(1, Math.round(us)), 3_600_000_000)),
    count: () => h.totalCount,
    // The histogram answers with the top of a value's bucket: never above the max.
    percentile: (p) => (h.totalCount === 0 ? undefined : Math.min(h.getValueAtPercentile(p), h.maxValue)),
    max: () => (h.totalCount === 0 ? undefined : h.maxValue),
    reset: () => h.reset(),
  }
}

function arrayRecorder(capacity) {
  const values = new Float64Array(capacity)
  let stored = 0
  let seen = 0
  let max = 0
  return {
    record(us) {
      seen++
      if (us > max) max = us
      if (stored < capacity) values[stored++] = us
      else {
        const j = Math.floor(Math.random() * seen)
        if (j < capacity) values[j] = us
      }
    },
    count: () => seen,
    percentile(p) {
      if (stored === 0) return undefined
      const sorted = values.slice(0, stored).sort() // typed arrays sort numerically
      return sorted[Math.min(stored - 1, Math.max(0, Math.ceil((p / 100) * stored) - 1))]
    },
    max: () => (seen === 0 ? undefined : max),
    reset() {
      stored = 0
      seen = 0
      max = 0
    },
  }
}

// ---------------------------------------------------------------------------
// Output: a progress line redrawn in place on a TTY, plain lines otherwise

function makeOutput(onBroken) {
  const stdout = process.stdout
  const tty = Boolean(stdout.isTTY)
  let current = '' // progress line on screen (TTY only)
  // stdout closed under us (`nexres-rpc demo | head`): stop writing, stop the demo.
  let broken = false
  stdout.on('error', () => {
    if (broken) return
    broken = true
    onBroken()
  })
  const out = {
    write(s) {
      if (!broken) stdout.write(s)
    },
  }
  const fit = (s) => {
    const cols = stdout.columns || 80
    return s.length >= cols ? s.slice(0, cols - 1) : s
  }
  return {
    tty,
    /** A permanent line on stdout. */
    line(text) {
      if (tty && current) out.write('\r\x1b[K')
      out.write(`${text}\n`)
      if (tty && current) out.write(fit(current))
    },
    /** A line on stderr, without garbling the progress line. */
    warn(text) {
      if (tty && current) out.write('\r\x1b[K')
      process.stderr.write(`${text}\n`)
      if (tty && current) out.write(fit(current))
    },
    /** The progress line: redrawn in place on a TTY, printed as a line otherwise. */
    progress(text) {
      if (tty) {
        current = text
        out.write(`\r\x1b[K${fit(text)}`)
      } else {
        out.write(`${text}\n`)
      }
    },
    /** Leaves the last progress line on screen and moves past it. */
    endProgress() {
      if (tty && current) out.write('\n')
      current = ''
    },
  }
}

// ---------------------------------------------------------------------------
// The demo (parent)

async function freePorts(n) {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, HOST, () => resolve(s))
    })),
  )
  const ports = servers.map((s) => s.address().port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

class DemoError extends Error {
  constructor(message, code) {
    super(message)
    this.code = code
  }
}

async function demo(opts) {
  const bus = new EventEmitter()
  bus.setMaxListeners(0)
  let interrupted = false
  let children = []
  const out = makeOutput(() => {
    interrupted = true
    bus.emit('change')
  })

  // Ctrl-C reaches the whole process group; the children ignore it and the
  // parent stops them in order. A second Ctrl-C kills them.
  const onSigint = () => {
    if (interrupted) {
      for (const c of children) if (!c.exit) c.proc.kill('SIGKILL')
      process.exit(130)
    }
    interrupted = true
    out.warn('interrupted: stopping the cluster (Ctrl-C again to kill it)')
    bus.emit('change')
  }
  process.on('SIGINT', onSigint)

  let nexres
  try {
    nexres = await import('nexres-rpc')
  } catch (err) {
    process.off('SIGINT', onSigint)
    process.stderr.write(`nexres-rpc: cannot load the library: ${err?.message ?? err}\n`)
    return 1
  }
  const latency = await latencyRecorders()

  const frame = HEADER_BYTES + opts.size
  // A smaller high-water mark than the 16 MiB default keeps the memory of a
  // 16-replica demo modest; the cap leaves room for the one broadcast that
  // may go past the mark before the loop waits for 'drain'. Past 4 replicas,
  // one io thread each (16 processes x 2 threads gains nothing on a laptop).
  const highWaterMark = Math.max(4 * MiB, 4 * frame)
  const replicaConfig = {
    size: opts.size,
    highWaterMark,
    maxQueueBytes: 4 * highWaterMark,
    ioThreads: opts.replicas <= 4 ? 2 : 1,
    auth: opts.auth,
  }

  out.line(`nexres-rpc demo: ${opts.replicas} replicas on ${HOST}, ${opts.duration} s of traffic, ${count(opts.size)}-byte payloads, auth ${opts.auth}`)

  const clients = []
  const load = { running: false, requests: 0, errors: 0, mismatches: 0, lastError: '', endedAt: 0 }
  let code = 0
  try {
    // -- start: pick ports, spawn the replicas, wait until they are bound ---
    let cluster
    const t0 = performance.now()
    for (let attempt = 1; ; attempt++) {
      const ports = await freePorts(opts.replicas)
      // auth mac: one key pair per replica; the public keys go into the
      // cluster config every replica gets, each private key to its replica only.
      const keys = ports.map(() => (opts.auth === 'mac' ? nexres.generateKeyPair() : undefined))
      cluster = {
        id: `demo-${randomBytes(4).toString('hex')}`,
        replicas: ports.map((port, i) => ({ id: i + 1, host: HOST, port, clientPort: 0, ...(keys[i] ? { publicKey: keys[i].publicKey } : {}) })),
      }
      children = cluster.replicas.map((r, i) => spawnReplica(r.id, cluster, { ...replicaConfig, privateKey: keys[i]?.privateKey }, bus, out))
      try {
        await waitAll(children, 'ready', START_TIMEOUT_MS, 'start', bus, () => interrupted)
        break
      } catch (err) {
        const portTaken = children.some((c) => c.failureCode === 'LISTEN_FAILED')
        if (!portTaken || attempt >= START_ATTEMPTS || interrupted) throw err
        out.warn(`a port picked as free was taken meanwhile (${err.message}); retrying with new ports`)
        await stopChildren(children, 3000)
      }
    }
    await waitAll(children, 'up', PEERS_TIMEOUT_MS, 'connect to every peer', bus, () => interrupted)
    const links = opts.replicas * (opts.replicas - 1)
    out.line(`cluster up in ${(performance.now() - t0).toFixed(0)} ms: ${opts.replicas} processes, ${links} ${opts.auth === 'mac' ? 'authenticated ' : ''}links, replica ports ${cluster.replicas.map((r) => r.port).join(' ')}`)

    // -- clients: one per replica, OUTSTANDING calls spread over them -------
    for (const c of children) {
      clients.push(await nexres.Client.connect({ host: HOST, port: c.got.ready.clientPort, clusterId: cluster.id, timeoutMs: CALL_TIMEOUT_MS }))
    }
    const request = randomBytes(opts.size)

    // -- traffic ----------------------------------------------------------
    const tGo = performance.now()
    for (const c of children) send(c, { t: 'go' })
    load.running = true
    const workers = Array.from({ length: OUTSTANDING }, (_, i) => callLoop(clients[i % clients.length], request, opts.size, load, latency))

    const totals = () => {
      let msgs = 0
      let up = 0
      for (const c of children) {
        msgs += c.latest?.msgsIn ?? 0
        up += c.latest?.up ?? 0
      }
      return { msgs, up }
    }
    const samples = [{ t: tGo, msgs: 0, reqs: 0 }]
    let lastTick = tGo
    const tick = () => {
      const now = performance.now()
      lastTick = now
      const { msgs, up } = totals()
      samples.push({ t: now, msgs, reqs: load.requests })
      while (samples.length > 2 && samples[1].t <= now - RATE_WINDOW_MS) samples.shift()
      const base = samples[0]
      const secs = Math.max(1e-3, (now - base.t) / 1000)
      // p99 of the calls completed since the last line (the recent latency).
      const p99 = latency.window.percentile(99)
      latency.window.reset()
      const elapsed = Math.min((now - tGo) / 1000, opts.duration)
      out.progress(
        `[${elapsed.toFixed(1).padStart(5)}s/${opts.duration}s] msgs/s ${rate((msgs - base.msgs) / secs).padStart(8)}` +
          `  req/s ${rate((load.requests - base.reqs) / secs).padStart(7)}  p99 ${ms(p99).padStart(8)}  links up ${up}/${links}`,
      )
    }
    const ticker = setInterval(tick, out.tty ? TTY_REDRAW_MS : PLAIN_LINE_MS)
    await new Promise((resolve) => {
      const timer = setTimeout(done, opts.duration * 1000)
      function done() {
        clearTimeout(timer)
        bus.off('change', check)
        resolve()
      }
      function check() {
        if (interrupted || children.some((c) => c.failure)) done()
      }
      bus.on('change', check)
    })
    clearInterval(ticker)
    // A last line for the end of the run (unless a plain line was just printed).
    if (out.tty || performance.now() - lastTick > PLAIN_LINE_MS / 2) tick()
    out.endProgress()
    const failed = children.find((c) => c.failure)
    if (failed) throw new DemoError(`replica ${failed.id} ${failed.failure}`)

    // -- stop: calls first, then the broadcasts (children drain their queues)
    load.running = false
    await Promise.all(workers)
    const tLoad = (load.endedAt || performance.now()) - tGo
    for (const c of children) send(c, { t: 'stop' })
    await waitAll(children, 'stopped', DRAIN_TIMEOUT_MS + 5000, 'stop', bus, () => false)
    const tTraffic = performance.now() - tGo
    for (const cl of clients.splice(0)) await cl.close()

    // -- close: children close their replicas and exit by themselves ------
    const killed = await stopChildren(children, EXIT_TIMEOUT_MS)
    printSummary(out, opts, children, latency, load, tTraffic, tLoad, killed)
    if (killed.length > 0) code = 1
    else if (interrupted) code = 130
    else if (totals().msgs === 0 || load.requests === 0) {
      out.warn('nexres-rpc demo: no traffic went through the cluster')
      code = 1
    }
  } catch (err) {
    out.endProgress()
    load.running = false
    if (err instanceof DemoError && err.code === 'INTERRUPTED') {
      code = 130
    } else {
      process.stderr.write(`nexres-rpc demo: ${err?.message ?? err}\n`)
      code = 1
    }
  } finally {
    for (const cl of clients) await cl.close().catch(() => {})
    const left = children.filter((c) => !c.exit)
    if (left.length > 0) await stopChildren(left, 5000)
    process.off('SIGINT', onSigint)
  }
  return code
}

function send(c, msg) {
  if (c.proc.connected) c.proc.send(msg, () => {})
}

function spawnReplica(id, cluster, config, bus, out) {
  const proc = spawn(process.execPath, [SCRIPT, 'replica'], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...process.env, NEXRES_DEMO_REPLICA: JSON.stringify({ id, cluster, ...config }) },
  })
  const c = { id, proc, got: {}, latest: undefined, failure: undefined, failureCode: undefined, exit: undefined }
  // 'close' (not 'exit'): it comes after the IPC channel and the pipes are
  // closed, so every message the child sent has been seen by then.
  c.exited = new Promise((resolve) => proc.once('close', resolve))
  proc.on('message', (m) => {
    if (m === null || typeof m !== 'object') return
    if (m.s) c.latest = m.s
    if (m.t === 'fatal') {
      c.failure = m.message
      c.failureCode = m.code
    } else if (m.t !== 'stats') {
      c.got[m.t] = m
    }
    bus.emit('change')
  })
  proc.on('error', (err) => {
    c.failure ??= `could not be started: ${err.message}`
    bus.emit('change')
  })
  proc.on('close', (code, signal) => {
    c.exit = { code, signal }
    if (!c.got.closed && !c.failure) c.failure = `exited unexpectedly (${signal ?? `code ${code}`})`
    bus.emit('change')
  })
  // Anything a replica prints goes to stderr, prefixed with its id.
  for (const stream of [proc.stdout, proc.stderr]) {
    stream.setEncoding('utf8')
    let partial = ''
    stream.on('data', (d) => {
      partial += d
      const lines = partial.split('\n')
      partial = lines.pop()
      for (const l of lines) out.warn(`[replica ${id}] ${l}`)
    })
  }
  return c
}

/** Resolves once every child has sent a message of this type; rejects on a failure, a timeout or an interrupt. */
function waitAll(children, type, timeoutMs, what, bus, isInterrupted) {
  return new Promise((resolve, reject) => {
    const finish = () => {
      clearTimeout(timer)
      bus.off('change', check)
    }
    function check() {
      const failed = children.find((c) => c.failure)
      if (failed) {
        finish()
        reject(new DemoError(`replica ${failed.id} ${failed.failure}`, failed.failureCode))
      } else if (children.every((c) => c.got[type])) {
        finish()
        resolve()
      } else if (isInterrupted()) {
        finish()
        reject(new DemoError('interrupted', 'INTERRUPTED'))
      }
    }
    const timer = setTimeout(() => {
      finish()
      const missing = children.filter((c) => !c.got[type]).map((c) => c.id)
      reject(new DemoError(`replica${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not ${what} within ${timeoutMs / 1000} s`))
    }, timeoutMs)
    bus.on('change', check)
    check()
  })
}

/** Asks every child to close, waits for them to exit, kills the stragglers; returns the ids killed. */
async function stopChildren(children, timeoutMs) {
  for (const c of children) send(c, { t: 'close' })
  let timer
  const timeout = new Promise((r) => (timer = setTimeout(r, timeoutMs)))
  await Promise.race([Promise.all(children.map((c) => c.exited)), timeout])
  clearTimeout(timer)
  const killed = []
  for (const c of children) {
    if (c.exit) continue
    killed.push(c.id)
    c.proc.kill('SIGKILL')
  }
  await Promise.all(children.map((c) => c.exited))
  return killed
}

async function callLoop(client, request, size, load, latency) {
  while (load.running) {
    const start = performance.now()
    try {
      const reply = await client.call(ROUTE_ECHO, request)
      const now = performance.now()
      const us = (now - start) * 1000
      latency.total.record(us)
      latency.window.record(us)
      load.requests++
      load.endedAt = now
      if (reply.length !== size) load.mismatches++
    } catch (err) {
      load.errors++
      load.lastError = `${err?.code ?? 'ERROR'}: ${err?.message ?? err}`
      if (load.running) await new Promise((r) => setTimeout(r, 50))
    }
  }
}

function printSummary(out, opts, children, latency, load, tTraffic, tLoad, killed) {
  const keys = ['msgsIn', 'msgsOut', 'bytesIn', 'bytesOut', 'reconnects', 'rejects']
  const sum = Object.fromEntries([...keys, 'handled', 'startReconnects', 'drainWaits', 'drainStalls', 'queueFull', 'peerDowns', 'handlerErrors', 'unrouted', 'duplicates', 'signedSent', 'signedIn', 'proofsChecked', 'proofsFailed'].map((k) => [k, 0]))
  const rows = children.map((c) => {
    const s = c.got.closed?.s ?? c.got.stopped?.s ?? c.latest ?? {}
    for (const k of Object.keys(sum)) sum[k] += s[k] ?? 0
    // Reconnects while the cluster was starting (connection attempts to a
    // peer not listening yet) are left out of the table, and noted below.
    const reconnects = (s.reconnects ?? 0) - (s.startReconnects ?? 0)
    return [c.id, count(s.msgsIn ?? 0), count(s.msgsOut ?? 0), bytes(s.bytesIn ?? 0), bytes(s.bytesOut ?? 0), count(reconnects), count(s.rejects ?? 0)]
  })
  rows.push(['total', count(sum.msgsIn), count(sum.msgsOut), bytes(sum.bytesIn), bytes(sum.bytesOut), count(sum.reconnects - sum.startReconnects), count(sum.rejects)])
  const secs = tTraffic / 1000
  const loadSecs = tLoad / 1000
  out.line('')
  out.line(table(['replica', 'msgs in', 'msgs out', 'bytes in', 'bytes out', 'reconnects', 'rejects'], rows))
  out.line('')
  out.line(`${'messages'.padEnd(13)}${count(sum.msgsIn)} delivered in ${secs.toFixed(2)} s: ${rate(sum.msgsIn / secs)} msgs/s, ${bytes(sum.bytesIn / secs)}/s (${count(opts.size)}-byte payloads, every replica broadcasting)`)
  out.line(`${'requests'.padEnd(13)}${count(load.requests)} echo calls in ${loadSecs.toFixed(2)} s: ${rate(load.requests / loadSecs)} req/s (${OUTSTANDING} outstanding over ${children.length} client connections)`)
  out.line(`${'latency'.padEnd(13)}p50 ${ms(latency.total.percentile(50))}  p99 ${ms(latency.total.percentile(99))}  max ${ms(latency.total.max())}  (${latency.kind})`)
  out.line(`${'backpressure'.padEnd(13)}the broadcast loops waited for 'drain' ${count(sum.drainWaits)} times (high-water mark ${bytes(children[0]?.got.ready?.highWaterMark ?? 0)} per peer)`)
  if (opts.auth === 'mac') {
    out.line(`${'auth'.padEnd(13)}mac: Ed25519 replica identities, MAC'ed frames; ${count(sum.signedSent)} signed broadcasts sent, ${count(sum.signedIn)} signatures verified on receipt`)
  } else {
    out.line(`${'auth'.padEnd(13)}none: replica connections not authenticated (run with --auth mac, the default, for keys and MACs)`)
  }
  const notes = []
  if (sum.startReconnects > 0) notes.push(`reconnects: ${count(sum.startReconnects)} more while the cluster was starting (a peer not listening yet), not counted above`)
  if (opts.auth === 'mac' && sum.signedIn !== sum.signedSent * (children.length - 1)) {
    notes.push(`${count(sum.signedSent)} signed broadcasts to ${children.length - 1} peers each, but ${count(sum.signedIn)} signatures received`)
  }
  if (sum.proofsFailed > 0) notes.push(`verifySigned() rejected ${count(sum.proofsFailed)} of ${count(sum.proofsChecked)} received signatures`)
  if (sum.handled !== sum.msgsIn) notes.push(`handlers saw ${count(sum.handled)} messages, the engine counted ${count(sum.msgsIn)} in`)
  if (sum.duplicates > 0) notes.push(`${count(sum.duplicates)} resent duplicates dropped`)
  if (sum.peerDowns > 0) notes.push(`${count(sum.peerDowns)} peer-down events during the run`)
  if (sum.drainStalls > 0) notes.push(`${count(sum.drainStalls)} times a replica waited for 'drain' with its queues already below half the high-water mark (resumed without the event)`)
  if (sum.queueFull > 0) notes.push(`${count(sum.queueFull)} broadcasts refused with QUEUE_FULL`)
  if (sum.handlerErrors > 0 || sum.unrouted > 0) notes.push(`${count(sum.handlerErrors)} handler errors, ${count(sum.unrouted)} unrouted messages`)
  if (load.errors > 0) notes.push(`${count(load.errors)} calls failed (last: ${load.lastError})`)
  if (load.mismatches > 0) notes.push(`${count(load.mismatches)} echo replies of the wrong size`)
  const undelivered = children.flatMap((c) => Object.entries(c.got.closed?.undelivered ?? {}).map(([peer, b]) => `${c.id}->${peer} ${bytes(b)}`))
  if (undelivered.length > 0) notes.push(`undelivered at close: ${undelivered.join(', ')}`)
  const undrained = children.filter((c) => c.got.stopped && !c.got.stopped.drained).map((c) => c.id)
  if (undrained.length > 0) notes.push(`replicas ${undrained.join(', ')} still had unacknowledged messages ${DRAIN_TIMEOUT_MS / 1000} s after the traffic stopped`)
  if (killed.length > 0) notes.push(`replicas ${killed.join(', ')} did not exit within ${EXIT_TIMEOUT_MS / 1000} s of closing and were killed`)
  const unclean = children.filter((c) => !killed.includes(c.id) && c.exit && (c.exit.code !== 0 || c.exit.signal)).map((c) => `${c.id} (${c.exit.signal ?? `code ${c.exit.code}`})`)
  if (unclean.length > 0) notes.push(`replicas exited with an error: ${unclean.join(', ')}`)
  for (const n of notes) out.line(`${'note'.padEnd(13)}${n}`)
}

// ---------------------------------------------------------------------------
// The replica role (child process)

async function replicaRole() {
  const raw = process.env.NEXRES_DEMO_REPLICA
  if (typeof process.send !== 'function' || !raw) {
    process.stderr.write('nexres-rpc: "replica" is an internal role of "nexres-rpc demo"; run "nexres-rpc demo" instead\n')
    return 2
  }
  const cfg = JSON.parse(raw)
  const id = cfg.id
  const report = (msg) => {
    if (process.connected) process.send(msg, () => {})
  }
  // Ctrl-C reaches the whole process group: the parent coordinates the stop.
  process.on('SIGINT', () => {})

  // Listen to the parent from the start: a 'close' may come before the
  // replica is up, and losing the parent (IPC closed) closes the replica.
  let replica
  let closeWanted = false
  let closing = false
  let running = false
  let waiting = false
  let pumpScheduled = false
  let reportTimer
  let stallTimer
  let signTimer
  let signDue = false
  const n = { handled: 0, handledBytes: 0, broadcasts: 0, drainWaits: 0, drainStalls: 0, queueFull: 0, peerDowns: 0, startReconnects: 0, signedSent: 0, signedIn: 0, proofsChecked: 0, proofsFailed: 0 }
  let touched = 0

  const snapshot = () => {
    const st = replica.stats()
    const s = { ...n, msgsIn: 0, bytesIn: 0, msgsOut: 0, bytesOut: 0, queuedBytes: 0, reconnects: 0, duplicates: 0, up: 0 }
    for (const p of st.peers) {
      s.msgsIn += p.msgsIn
      s.bytesIn += p.bytesIn
      s.msgsOut += p.msgsOut
      s.bytesOut += p.bytesOut
      s.queuedBytes += p.queuedBytes
      s.reconnects += p.reconnects
      s.duplicates += p.duplicates
      if (p.connected) s.up++
    }
    // The replica's own count: per-peer rejects are a subset of it.
    s.rejects = st.rejects
    s.handlerErrors = st.handlerErrors
    s.unrouted = st.unrouted
    return s
  }

  const close = async () => {
    closeWanted = true
    if (closing || replica === undefined) return
    closing = true
    running = false
    clearInterval(reportTimer)
    clearInterval(signTimer)
    clearTimeout(stallTimer)
    const s = snapshot()
    let undelivered = {}
    try {
      undelivered = (await replica.close({ timeoutMs: 1000 })).undeliveredBytes
    } catch (err) {
      process.stderr.write(`close failed: ${err?.message ?? err}\n`)
      process.exitCode = 1
    }
    process.off('message', onMessage)
    if (process.connected) process.send({ t: 'closed', s, undelivered }, () => process.connected && process.disconnect())
  }

  // Bounded, backpressure-respecting broadcast loop: a burst of broadcasts
  // per turn of the event loop (so handlers, timers and IPC still run), and
  // as soon as broadcast() returns false, nothing more until 'drain'.
  const payload = randomBytes(cfg.size)
  // auth mac: now and then (SIGN_EVERY_MS) the next broadcast is a signed
  // one, on the same route, through the same backpressure.
  const signedPayload = payload.subarray(0, MAX_SIGNED_PAYLOAD)
  const burst = Math.max(1, Math.min(1024, Math.floor((256 * 1024) / (HEADER_BYTES + cfg.size))))
  const schedule = () => {
    if (pumpScheduled) return
    pumpScheduled = true
    setImmediate(pump)
  }
  const waitForDrain = () => {
    waiting = true
    n.drainWaits++
    clearTimeout(stallTimer)
    stallTimer = setTimeout(checkStall, STALL_CHECK_MS)
  }
  // Waiting for 'drain' may take a while on a loaded machine; but if every
  // queue is already at or below half the mark (where 'drain' fires), the
  // event was missed: count it, so it shows in the summary, and go on.
  const checkStall = () => {
    if (!waiting || !running) return
    const half = cfg.highWaterMark / 2
    if (replica.stats().peers.every((p) => p.queuedBytes <= half)) {
      n.drainStalls++
      waiting = false
      schedule()
    } else {
      stallTimer = setTimeout(checkStall, STALL_CHECK_MS)
    }
  }
  const pump = () => {
    pumpScheduled = false
    if (!running || waiting) return
    for (let i = 0; i < burst; i++) {
      let below
      const sign = signDue
      try {
        below = sign ? replica.broadcast(ROUTE_MSG, signedPayload, { sign: true }) : replica.broadcast(ROUTE_MSG, payload)
      } catch (err) {
        if (err?.code === 'QUEUE_FULL') {
          n.queueFull++
          waitForDrain()
          return
        }
        report({ t: 'fatal', message: `broadcast failed: ${err?.code ?? ''} ${err?.message ?? err}` })
        running = false
        return
      }
      n.broadcasts++
      if (sign) {
        signDue = false
        n.signedSent++
      }
      if (!below) {
        waitForDrain()
        return
      }
    }
    schedule()
  }

  const onMessage = async (m) => {
    if (m?.t === 'close') return close()
    if (replica === undefined || closing) return
    if (m?.t === 'go') {
      n.startReconnects = snapshot().reconnects
      running = true
      if (cfg.auth === 'mac') {
        signDue = true
        signTimer = setInterval(() => (signDue = true), SIGN_EVERY_MS)
      }
      schedule()
    } else if (m?.t === 'stop') {
      running = false
      waiting = false
      clearInterval(signTimer)
      signDue = false
      clearTimeout(stallTimer)
      const deadline = Date.now() + DRAIN_TIMEOUT_MS
      let s = snapshot()
      while (s.queuedBytes > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10))
        if (closing) return
        s = snapshot()
      }
      report({ t: 'stopped', s, drained: s.queuedBytes === 0 })
    }
  }
  process.on('message', onMessage)
  process.on('disconnect', () => void close())

  let nexres
  try {
    nexres = await import('nexres-rpc')
    replica = await nexres.Replica.start({
      id,
      cluster: cfg.cluster,
      auth: cfg.auth,
      privateKey: cfg.privateKey, // auth mac: this replica's key, from the parent
      ioThreads: cfg.ioThreads,
      highWaterMark: cfg.highWaterMark,
      maxQueueBytes: cfg.maxQueueBytes,
    })
  } catch (err) {
    report({ t: 'fatal', code: err?.code, message: `failed to start: ${err?.code ? `${err.code} ` : ''}${err?.message ?? err}` })
    process.off('message', onMessage)
    if (process.connected) process.disconnect()
    return 1
  }
  replica.on(ROUTE_MSG, (msg) => {
    n.handled++
    n.handledBytes += msg.size
    if (msg.size > 0) touched ^= msg.payload[msg.size - 1] // read the payload, as a real handler would
    const signature = msg.signature
    if (signature !== undefined) {
      // Already verified by the engine against the sender's public key. Check
      // a few again the way a replica would check a forwarded proof.
      n.signedIn++
      if (n.proofsChecked < 3) {
        n.proofsChecked++
        if (!nexres.verifySigned(cfg.cluster, { from: msg.from, route: ROUTE_MSG, payload: msg.payload, signature })) n.proofsFailed++
      }
    }
  })
  replica.handle(ROUTE_ECHO, (req) => req)
  replica.events.on('drain', () => {
    if (!waiting) return
    waiting = false
    clearTimeout(stallTimer)
    schedule()
  })
  replica.events.on('peer-down', () => n.peerDowns++)
  replica.events.on('error', (err, where) => process.stderr.write(`handler for ${where.route} threw: ${err?.message ?? err}\n`))
  report({ t: 'ready', clientPort: replica.clientPort, highWaterMark: cfg.highWaterMark })
  reportTimer = setInterval(() => report({ t: 'stats', s: snapshot(), touched }), REPORT_MS)
  if (closeWanted) return void close()
  try {
    await replica.waitForPeers(undefined, { timeoutMs: PEERS_TIMEOUT_MS })
    report({ t: 'up' })
  } catch (err) {
    if (!closing) report({ t: 'fatal', code: err?.code, message: `could not connect to every peer: ${err?.message ?? err}` })
  }
  return 0
}

// ---------------------------------------------------------------------------

async function main() {
  let cmd
  try {
    cmd = parseCommandLine(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    const help = err.command ? `nexres-rpc ${err.command} --help` : 'nexres-rpc --help'
    process.stderr.write(`nexres-rpc: ${err.message}\nRun "${help}" for the options.\n`)
    return 2
  }
  if (cmd.command === 'help') {
    process.stdout.write(cmd.usage)
    return 0
  }
  if (cmd.command === 'version') {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
    process.stdout.write(`${pkg.version}\n`)
    return 0
  }
  if (cmd.command === 'replica') return replicaRole()
  if (cmd.command === 'keygen') return keygen(cmd.opts)
  return demo(cmd.opts)
}

process.exitCode = await main()
if (process.argv[2] !== 'replica') {
  // Everything is closed by now and the process ends by itself; should
  // something still hold the event loop, do not hang.
  setTimeout(() => {
    process.stderr.write('nexres-rpc: something still holds the event loop; exiting\n')
    process.exit(process.exitCode)
  }, 3000).unref()
}
