// npm run bench: W1 one-way stream, then W2 request/response, each contender
// side by side in one run, every run in fresh processes, contenders
// interleaved run by run. Prints tables and writes docs/benchmarks.md with
// the machine, the command and the medians.
//   W1: nexres-rpc (TS handler) against plain node:net, js-libp2p (TCP +
//       Noise + Yamux) and the native-only ceiling (C++ on both ends, same
//       core).
//   W2: 64-byte echo calls in a closed loop with C = 1 and C = 64 calls
//       outstanding: nexres-rpc Client/handle against plain node:net,
//       @grpc/grpc-js unary and js-libp2p.
//   node bench/run.mjs [--runs 3] [--only-w1 | --only-w2] [--no-write]
//                      [--only 64,1024,65536]            (W1 sizes)
//                      [--w1-contenders nexres,net,libp2p,native]
//                      [--w2-seconds 5] [--w2-warmup 1] [--w2-conc 1,64]
//                      [--w2-contenders nexres,net,grpc,libp2p]
//                      [--sections w1,w2,w3,w4] [--w3-variants 0,1,2,2:none] [--w3-seconds 5]
//                      [--w4-seconds 5]   (--sections also takes w5, w6)
//   W3: a CPU-heavy request handler (SHA-256 × 50) with workers 0, 1, 2.
//   W4: an honest peer's message latency while another peer floods.
//   W5: signed messages (auth 'mac', { sign: true }) from 1 and 3 peers, and an
//       honest signing peer's latency alone and while another floods.
//   W6: quorum calls to 4 replicas (f = 1, quorum 2) against single-replica calls.
// Sections not measured in a run are kept as they are in docs/benchmarks.md.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { freePort, median, start, withProcs } from './procs.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
// Every flag is one of these (with a value where it takes one): a typo or
// --help prints the usage instead of running for minutes and writing docs.
const VALUE_FLAGS = ['runs', 'only', 'w1-contenders', 'w2-seconds', 'w2-warmup', 'w2-conc', 'w2-contenders', 'sections', 'w3-variants', 'w3-seconds', 'w4-seconds']
const BOOL_FLAGS = ['only-w1', 'only-w2', 'no-write']
{
  const usage = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//   ') && /node bench|\[--/.test(l)).map((l) => l.slice(3)).join('\n')
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    const name = a.startsWith('--') ? a.slice(2) : undefined
    if (name !== undefined && BOOL_FLAGS.includes(name)) continue
    if (name !== undefined && VALUE_FLAGS.includes(name) && i + 1 < args.length) {
      i++
      continue
    }
    const why = a === '--help' || a === '-h' ? '' : `bench/run.mjs: unknown or incomplete argument ${JSON.stringify(a)}\n`
    process.stderr.write(`${why}usage:\n${usage}\n`)
    process.exit(why === '' ? 0 : 2)
  }
}
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : fallback
}
const runs = Number(opt('runs', '3'))
const only = opt('only', '')
  .split(',')
  .filter(Boolean)
  .map(Number)
const write = !args.includes('--no-write')
// Sections to measure (the others are kept as they are in docs/benchmarks.md):
// --sections w1,w2,w3,w4 (default all); --only-w1 / --only-w2 are shorthands.
const allSections = ['w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7']
let sections = opt('sections', allSections.join(',')).split(',').filter(Boolean)
if (args.includes('--only-w1')) sections = ['w1']
if (args.includes('--only-w2')) sections = ['w2']
if (args.includes('--only-w1') && args.includes('--only-w2')) throw new Error('--only-w1 and --only-w2 exclude each other')
for (const x of sections) if (!allSections.includes(x)) throw new Error(`--sections: unknown ${x}`)
const doW1 = sections.includes('w1')
const doW2 = sections.includes('w2')
const doW3 = sections.includes('w3')
const doW4 = sections.includes('w4')
const doW5 = sections.includes('w5')
const doW6 = sections.includes('w6')
const doW7 = sections.includes('w7')
const w3 = {
  // workers[:ordering]; 0 = handlers on the main thread
  variants: opt('w3-variants', '0,1,2,2:none').split(',').filter(Boolean),
  concurrency: 64,
  connections: 64,
  size: 64,
  warmupMs: 1000,
  durationMs: Math.round(1000 * Number(opt('w3-seconds', '5'))),
  maxCalls: 10_000_000,
}
const w4 = { intervalMs: 1, warmupMs: 1000, durationMs: Math.round(1000 * Number(opt('w4-seconds', '5'))) }
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs: a positive integer, got ${opt('runs')}`)
// The nexres-spin contender's server: ioSpinMicros (docs/API.md).
const W2_SPIN_MICROS = 100
const w2 = {
  size: 64,
  warmupMs: Math.round(1000 * Number(opt('w2-warmup', '1'))),
  durationMs: Math.round(1000 * Number(opt('w2-seconds', '5'))),
  concurrency: opt('w2-conc', '1,64').split(',').filter(Boolean).map(Number),
  // Safety bound on calls per run (far above what the window allows).
  maxCalls: 50_000_000,
  contenders: opt('w2-contenders', 'nexres,nexres-spin,nexres-seal,net,raw,grpc,libp2p').split(',').filter(Boolean),
}
for (const k of w2.contenders) if (!['nexres', 'nexres-spin', 'nexres-seal', 'net', 'raw', 'grpc', 'libp2p'].includes(k)) throw new Error(`--w2-contenders: unknown ${k}`)
if (w2.contenders.length === 0) throw new Error('--w2-contenders: none given')
// W1 contenders; native is skipped when it cannot be built.
const w1Contenders = opt('w1-contenders', 'nexres,nexres-batch,nexres-mac,nexres-seal,net,libp2p,native').split(',').filter(Boolean)
for (const k of w1Contenders) if (!['nexres', 'nexres-batch', 'nexres-mac', 'nexres-seal', 'net', 'libp2p', 'native'].includes(k)) throw new Error(`--w1-contenders: unknown ${k}`)
if (w1Contenders.length === 0) throw new Error('--w1-contenders: none given')
if (!(w2.durationMs > 0) || !(w2.warmupMs >= 0)) throw new Error('--w2-seconds > 0 and --w2-warmup >= 0')
if (w2.concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 10_000)) throw new Error('--w2-conc: integers in [1, 10000]')

// Each workload is preceded, on the same connection, by `warmup` untimed
// messages so JIT compilation is not what gets measured (same for everyone).
const workloads = [
  { size: 64, count: 4_000_000, warmup: 300_000 },
  { size: 1024, count: 500_000, warmup: 50_000 },
  { size: 65536, count: 20_000, warmup: 2_000 },
].filter((w) => only.length === 0 || only.includes(w.size))

const nativeBin = join(root, 'build-native', 'w1_native')
function ensureNative() {
  if (existsSync(nativeBin)) return true
  console.log('building the native benchmark (cmake)...')
  const a = spawnSync('cmake', ['-S', 'native', '-B', 'build-native', '-DCMAKE_BUILD_TYPE=Release'], { cwd: root, stdio: 'inherit' })
  if (a.status !== 0) return false
  const b = spawnSync('cmake', ['--build', 'build-native', '-j', '2', '--target', 'w1_native'], { cwd: root, stdio: 'inherit' })
  return b.status === 0 && existsSync(nativeBin)
}

const fmtRate = (x) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`)
const fmtBytes = (x) => (x >= 1e9 ? `${(x / 1e9).toFixed(2)} GB/s` : `${(x / 1e6).toFixed(0)} MB/s`)
const fmtUs = (x) => (x >= 10_000 ? x.toLocaleString('en-US', { maximumFractionDigits: 0 }) : String(Math.round(x)))
const label = (size) => (size >= 1024 ? `${size / 1024} KiB` : `${size} B`)
const today = new Date().toISOString().slice(0, 10)
const runsText = runs === 1 ? 'a single run' : `median of ${runs} runs`
const command = `node bench/run.mjs ${args.filter((a) => a !== '--no-write').join(' ')}`.trim()

// The versions of the js-libp2p packages used, for the doc.
function libp2pVersions() {
  const pkgs = ['libp2p', '@libp2p/tcp', '@chainsafe/libp2p-noise', '@chainsafe/libp2p-yamux']
  return pkgs
    .map((p) => {
      try {
        return `${p} ${JSON.parse(readFileSync(join(root, 'node_modules', p, 'package.json'), 'utf8')).version}`
      } catch {
        return `${p} (not installed)`
      }
    })
    .join(', ')
}

// ---------------------------------------------------------------- W1

async function onceW1(kind, { size, count, warmup }) {
  const p1 = await freePort()
  const p2 = await freePort()
  return withProcs(async (procs) => {
    let recv, send
    if (kind === 'nexres' || kind === 'nexres-batch' || kind === 'nexres-mac' || kind === 'nexres-seal') {
      const auth = kind === 'nexres-mac' ? 'mac' : kind === 'nexres-seal' ? 'seal' : 'none'
      const extra = kind === 'nexres-batch' ? [auth, 'batch'] : [auth]
      procs.push((recv = start(process.execPath, ['bench/w1-nexres.mjs', 'recv', p1, p2, count, size, 2, warmup, ...extra])))
      await recv.nextLine(20_000)
      procs.push((send = start(process.execPath, ['bench/w1-nexres.mjs', 'send', p1, p2, count, size, 2, warmup, ...extra])))
    } else if (kind === 'net') {
      procs.push((recv = start(process.execPath, ['bench/w1-net.mjs', 'recv', p1, count, size, warmup])))
      await recv.nextLine(20_000)
      procs.push((send = start(process.execPath, ['bench/w1-net.mjs', 'send', p1, count, size, warmup])))
    } else if (kind === 'libp2p') {
      // The receiver listens on 127.0.0.1, port 0, and says where: the sender
      // dials that multiaddr, /p2p/<peer id> included.
      procs.push((recv = start(process.execPath, ['bench/w1-libp2p.mjs', 'recv', count, size, warmup])))
      const ready = await recv.nextLine(20_000)
      const m = /^ready (\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+)$/.exec(ready)
      if (m === null) throw new Error(`w1-libp2p recv: unexpected "${ready}"`)
      procs.push((send = start(process.execPath, ['bench/w1-libp2p.mjs', 'send', m[1], count, size, warmup])))
    } else if (kind === 'native') {
      procs.push((recv = start(nativeBin, ['recv', p1, p2, count, size, 2, warmup])))
      await recv.nextLine(20_000)
      procs.push((send = start(nativeBin, ['send', p1, p2, count, size, 2, warmup])))
    } else {
      throw new Error(`W1: unknown contender ${kind}`)
    }
    const line = await recv.nextLine(180_000)
    const r = JSON.parse(line)
    if (r.messages !== count) throw new Error(`${kind}: ${r.messages} of ${count} messages`)
    return { msgsPerSec: r.messages / r.seconds, bytesPerSec: r.bytes / r.seconds }
  }, { reapMs: 30_000 })
}

async function runW1() {
  const haveNative = w1Contenders.includes('native') && ensureNative()
  const kinds = ['nexres', 'nexres-batch', 'nexres-mac', 'nexres-seal', 'net', 'libp2p', 'native'].filter((k) => w1Contenders.includes(k) && (k !== 'native' || haveNative))
  if (kinds.length === 0) throw new Error('W1: no contender left to run')
  const names = {
    nexres: "nexres-rpc (TS handler), auth 'none'",
    'nexres-batch': "nexres-rpc (sendMany of 64 + onBatch handler), auth 'none'",
    'nexres-mac': "nexres-rpc (TS handler), auth 'mac'",
    'nexres-seal': "nexres-rpc (TS handler), auth 'seal' (encrypted)",
    net: 'node:net, length-prefixed',
    libp2p: 'js-libp2p (TCP + Noise + Yamux), one stream',
    native: 'native-only ceiling (C++ both ends)',
  }
  const results = []
  for (const w of workloads) {
    const per = {}
    for (const k of kinds) per[k] = []
    // Interleave contenders run by run so drift on a shared machine hits all.
    for (let i = 0; i < runs; i++) {
      for (const k of kinds) {
        const r = await onceW1(k, w)
        per[k].push(r)
        console.log(`W1 ${label(w.size)} ${k} run ${i + 1}: ${fmtRate(r.msgsPerSec)} msgs/s, ${fmtBytes(r.bytesPerSec)}`)
      }
    }
    const row = { ...w, stats: {} }
    for (const k of kinds) {
      row.stats[k] = {
        msgsPerSec: median(per[k].map((r) => r.msgsPerSec)),
        bytesPerSec: median(per[k].map((r) => r.bytesPerSec)),
        all: per[k].map((r) => r.msgsPerSec),
      }
    }
    results.push(row)
  }

  const lines = []
  lines.push('| workload | contender | msgs/s (median) | payload throughput | runs (msgs/s) |')
  lines.push('| --- | --- | ---: | ---: | --- |')
  for (const r of results) {
    for (const k of kinds) {
      const s = r.stats[k]
      lines.push(
        `| W1 ${label(r.size)} × ${r.count.toLocaleString('en-US')} | ${names[k]} | ${fmtRate(s.msgsPerSec)} | ${fmtBytes(s.bytesPerSec)} | ${s.all.map(fmtRate).join(', ')} |`,
      )
    }
  }
  // nexres-rpc's msgs/s ÷ each other contender's, and as a share of the
  // native ceiling.
  const vs = kinds.filter((k) => k !== 'nexres' && k !== 'nexres-batch' && k !== 'native' && k !== 'nexres-mac' && k !== 'nexres-seal')
  if (kinds.includes('nexres') && (vs.length > 0 || haveNative)) {
    const short = { net: 'node:net', libp2p: 'js-libp2p' }
    // The per-message handler, and (when measured) the onBatch handler.
    const bases = ['nexres', 'nexres-batch'].filter((k) => kinds.includes(k))
    const baseName = { nexres: 'nexres-rpc', 'nexres-batch': 'nexres-rpc sendMany + onBatch' }
    const heads = bases.flatMap((b) => [...vs.map((k) => `${baseName[b]} / ${short[k]}`), ...(haveNative ? [`${baseName[b]} / native ceiling`] : [])])
    lines.push('')
    lines.push(`| workload | ${heads.join(' | ')} |`)
    lines.push(`| --- | ${heads.map(() => '---:').join(' | ')} |`)
    for (const r of results) {
      const cells = bases.flatMap((b) => {
        const n = r.stats[b].msgsPerSec
        const c = vs.map((k) => `${(n / r.stats[k].msgsPerSec).toFixed(2)}×`)
        if (haveNative) c.push(`${((100 * n) / r.stats.native.msgsPerSec).toFixed(0)} %`)
        return c
      })
      lines.push(`| W1 ${label(r.size)} | ${cells.join(' | ')} |`)
    }
  }
  // What authentication and encryption cost, and both against the secure
  // (encrypted) contender.
  const secured = ['nexres-mac', 'nexres-seal'].filter((k) => kinds.includes(k))
  if (kinds.includes('nexres') && secured.length > 0) {
    const mode = { 'nexres-mac': "'mac'", 'nexres-seal': "'seal'" }
    const heads = [
      ...secured.map((k) => `auth ${mode[k]} / 'none' (throughput kept)`),
      ...(kinds.includes('libp2p') ? secured.map((k) => `nexres-rpc ${mode[k]} / js-libp2p`) : []),
    ]
    lines.push('')
    lines.push(`| workload | ${heads.join(' | ')} |`)
    lines.push(`| --- | ${heads.map(() => '---:').join(' | ')} |`)
    for (const r of results) {
      const cells = secured.map((k) => `${((100 * r.stats[k].msgsPerSec) / r.stats.nexres.msgsPerSec).toFixed(0)} %`)
      if (kinds.includes('libp2p')) for (const k of secured) cells.push(`${(r.stats[k].msgsPerSec / r.stats.libp2p.msgsPerSec).toFixed(1)}×`)
      lines.push(`| W1 ${label(r.size)} | ${cells.join(' | ')} |`)
    }
  }
  const table = lines.join('\n')
  console.log('\n' + table + '\n')

  return `## W1: one-way stream

Measured on ${today}, ${runsText} (\`${command}\`).

One long connection from a sender to a receiver; the receiver counts every
message in a handler that reads its payload; the rate is taken from the
first to the last measured message at the receiver. Before the measured
messages, the same connection carries an untimed warm-up (300,000 / 50,000 /
2,000 messages for 64 B / 1 KiB / 64 KiB) so that what is measured is
steady state, not JIT compilation; every contender gets the same warm-up.

- **nexres-rpc**: \`Replica.send\` in a loop (waiting for \`'drain'\` when it
  returns false) → replica handler \`(msg) => msg.payload\`, \`ioThreads: 2\`;
  with \`auth: 'none'\`, with \`auth: 'mac'\` (Ed25519 handshake, every batch
  of frames tagged with AES-256-GCM on the io threads) and with \`auth:
  'seal'\` (the same, every batch encrypted with AES-256-GCM, decrypted in
  place by the receiver; see docs/SECURITY.md). js-libp2p encrypts too
  (Noise): the like-for-like comparison is 'seal' against it.
- **nexres-rpc sendMany + onBatch**: the batched API at both ends:
  \`Replica.sendMany\` of 64 messages per call, and a receiver counting in an
  \`onBatch\` handler (no object per message); \`auth: 'none'\`.
- **node:net**: the same workload written well on plain sockets: 4-byte
  length prefix, frames coalesced into one write per 1 MiB, write
  backpressure respected, the receiver parsing in place and calling a handler
  with a zero-copy view per message (\`bench/w1-net.mjs\`).
- **js-libp2p** (\`bench/w1-libp2p.mjs\`, ${libp2pVersions()}): two
  libp2p nodes with the TCP transport, Noise and Yamux (default options,
  listening on 127.0.0.1 only), one stream of a custom protocol; messages
  framed with a varint length prefix (it-length-prefixed), the sender
  batching frames into one buffer per 64 KiB handed to \`stream.send\`
  (awaiting \`stream.onDrain()\` when it returns false), the receiver
  decoding the stream's \`'message'\` events with @libp2p/utils'
  \`LengthPrefixedDecoder\` and calling a handler per message.
- **native-only ceiling**: \`native/bench/w1_native.cpp\`, C++ on both ends
  over the same engine, no JavaScript.

${table}
`
}

// ---------------------------------------------------------------- W2

// CPU time (user + system, every thread) of process `pid` in µs, and when
// it was read (performance.now() ms); null when /proc cannot say.
let ticks = 0
function clockTicks() {
  if (ticks === 0) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
    const n = Number(r.stdout?.trim())
    ticks = Number.isInteger(n) && n > 0 ? n : 100 // Linux's USER_HZ when getconf is missing
  }
  return ticks
}

function processCpu(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime (fields 14 and 15) in clock ticks (CLK_TCK a second).
    return { us: ((Number(f[11]) + Number(f[12])) * 1e6) / clockTicks(), at: performance.now() }
  } catch {
    return null
  }
}

async function onceW2(kind, concurrency) {
  return withProcs(async (procs) => {
    // nexres-rpc's server also needs a replica port (its client port is 0 = any).
    // nexres-seal: the same server, a client with seal: true (PROTOCOL.md §6b).
    // nexres-spin: the same server with ioSpinMicros (its io threads poll
    // that long after their last event before they sleep).
    const script = kind === 'nexres-seal' || kind === 'nexres-spin' ? 'nexres' : kind
    const spin = kind === 'nexres-spin' ? [String(W2_SPIN_MICROS)] : []
    const server = start(process.execPath, [`bench/w2-${script}.mjs`, 'server', script === 'nexres' ? await freePort() : 0, ...spin])
    procs.push(server)
    const ready = await server.nextLine(20_000)
    // libp2p's server also says its peer id, which its client dials.
    const m = kind === 'libp2p' ? /^ready (\d+) (\w+)$/.exec(ready) : /^ready (\d+)$/.exec(ready)
    if (m === null) throw new Error(`w2-${kind} server: unexpected "${ready}"`)
    const client = start(process.execPath, [
      `bench/w2-${script}.mjs`,
      kind === 'nexres-seal' ? 'client-seal' : 'client',
      m[1],
      concurrency,
      w2.size,
      w2.warmupMs,
      w2.durationMs,
      w2.maxCalls,
      ...(kind === 'libp2p' ? [m[2], 'pipelined'] : []),
    ])
    procs.push(client)
    // The server process's CPU time (every thread) over the client's
    // measured window, sampled from /proc when the warm-up ends and when the
    // client reports (Linux; null elsewhere).
    let cpu0 = null
    const sampler = setTimeout(() => (cpu0 = processCpu(server.child.pid)), w2.warmupMs)
    const r = JSON.parse(await client.nextLine(w2.warmupMs + w2.durationMs + 60_000))
    clearTimeout(sampler)
    const cpu1 = processCpu(server.child.pid)
    r.serverCpuUs = cpu0 !== null && cpu1 !== null ? (cpu1.us - cpu0.us) / (r.reqPerSec * ((cpu1.at - cpu0.at) / 1000)) : null
    if (r.stoppedBy !== 'time') console.warn(`W2 ${kind} C=${concurrency}: stopped at ${w2.maxCalls} calls before the end of the window`)
    return r
  }, { reapMs: 10_000, term: true })
}

async function runW2() {
  let countBound = false
  const kinds = w2.contenders
  const names = {
    nexres: 'nexres-rpc (Client.call → TS handler)',
    'nexres-spin': `nexres-rpc, server with ioSpinMicros: ${W2_SPIN_MICROS}`,
    'nexres-seal': 'nexres-rpc, encrypted client connection (seal: true)',
    net: 'node:net, length-prefixed + id',
    raw: 'raw node:net loop (no promise per call, one write per read)',
    grpc: '@grpc/grpc-js unary',
    libp2p: 'js-libp2p (TCP + Noise + Yamux), one stream, pipelined',
  }
  const results = []
  for (const c of w2.concurrency) {
    const per = {}
    for (const k of kinds) per[k] = []
    for (let i = 0; i < runs; i++) {
      for (const k of kinds) {
        const r = await onceW2(k, c)
        per[k].push(r)
        if (r.stoppedBy !== 'time') countBound = true
        console.log(`W2 C=${c} ${k} run ${i + 1}: ${fmtRate(r.reqPerSec)} req/s, p50 ${r.p50} µs, p99 ${r.p99} µs (${r.calls} calls)`)
      }
    }
    const row = { concurrency: c, stats: {} }
    for (const k of kinds) {
      row.stats[k] = {
        reqPerSec: median(per[k].map((r) => r.reqPerSec)),
        p50: median(per[k].map((r) => r.p50)),
        p99: median(per[k].map((r) => r.p99)),
        all: per[k],
      }
    }
    results.push(row)
  }

  const lines = []
  lines.push('| contender | C | req/s (median) | p50 µs | p99 µs | CPU µs per call: client / server | runs: req/s (p50 / p99 µs) |')
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | --- |')
  const cpuCell = (xs) => (xs.every((x) => typeof x === 'number') ? median(xs).toFixed(2) : '–')
  for (const r of results) {
    for (const k of kinds) {
      const s = r.stats[k]
      const all = s.all.map((x) => `${fmtRate(x.reqPerSec)} (${fmtUs(x.p50)} / ${fmtUs(x.p99)})`).join(', ')
      const cpu = `${cpuCell(s.all.map((x) => x.clientCpuUs))} / ${cpuCell(s.all.map((x) => x.serverCpuUs))}`
      lines.push(`| ${names[k]} | ${r.concurrency} | ${fmtRate(s.reqPerSec)} | ${fmtUs(s.p50)} | ${fmtUs(s.p99)} | ${cpu} | ${all} |`)
    }
  }
  const ours = ['nexres', 'nexres-spin'].filter((k) => kinds.includes(k))
  const others = kinds.filter((k) => !k.startsWith('nexres'))
  if (ours.length > 0 && others.length > 0) {
    const short = { net: 'node:net', raw: 'raw net loop', grpc: 'grpc-js', libp2p: 'js-libp2p' }
    const server = { nexres: 'default', 'nexres-spin': `ioSpinMicros: ${W2_SPIN_MICROS}` }
    lines.push('')
    lines.push(
      `| workload | nexres-rpc server | ${others.map((k) => `req/s ÷ ${short[k]}`).join(' | ')} | ${others.map((k) => `p50 ÷ ${short[k]}`).join(' | ')} | ${others.map((k) => `p99 ÷ ${short[k]}`).join(' | ')} |`,
    )
    lines.push(`| --- | --- | ${others.map(() => '---:').join(' | ')} | ${others.map(() => '---:').join(' | ')} | ${others.map(() => '---:').join(' | ')} |`)
    for (const r of results) {
      for (const o of ours) {
        const n = r.stats[o]
        const ratio = (f) => others.map((k) => `${f(n, r.stats[k]).toFixed(2)}×`).join(' | ')
        lines.push(
          `| W2 C = ${r.concurrency} | ${server[o]} | ${ratio((a, b) => a.reqPerSec / b.reqPerSec)} | ${ratio((a, b) => a.p50 / b.p50)} | ${ratio((a, b) => a.p99 / b.p99)} |`,
        )
      }
    }
  }
  if (kinds.includes('nexres') && kinds.includes('nexres-seal')) {
    lines.push('')
    lines.push('| workload | req/s: sealed ÷ plain client connection | p99: sealed ÷ plain |')
    lines.push('| --- | ---: | ---: |')
    for (const r of results) {
      const a = r.stats['nexres-seal']
      const b = r.stats.nexres
      lines.push(`| W2 C = ${r.concurrency} | ${(a.reqPerSec / b.reqPerSec).toFixed(2)}× | ${(a.p99 / b.p99).toFixed(2)}× |`)
    }
  }
  // Runs far apart (e.g. a busy machine, or CPUs waking from idle in a VM)
  // make a median of few runs fragile: say so next to the table.
  const spread = []
  for (const r of results) {
    for (const k of kinds) {
      const xs = r.stats[k].all.map((x) => x.reqPerSec)
      const f = Math.max(...xs) / Math.min(...xs)
      if (f >= 1.5) spread.push(`${names[k]} at C = ${r.concurrency} (${f.toFixed(1)}×)`)
    }
  }
  if (spread.length > 0) {
    lines.push('')
    lines.push(`Runs far apart (fastest ÷ slowest req/s): ${spread.join('; ')}; these medians are fragile, see every run.`)
  }
  const table = lines.join('\n')
  console.log('\n' + table + '\n')

  const cs = w2.concurrency.join(' and ')
  return `## W2: request/response

Measured on ${today}, ${runsText} (\`${command}\`).

Echo calls of ${w2.size}-byte requests answered with the same ${w2.size} bytes,
in a closed loop: one client process, one connection to one server process,
and C workers in the client (C = ${cs}), each issuing its next call as soon as
the reply to its previous one arrives, so that C calls are
outstanding. Every run starts a fresh server process and a fresh client
process. Replies that complete in the first ${w2.warmupMs / 1000} s are an untimed warm-up;
every reply that completes in the following ${w2.durationMs / 1000} s is counted (req/s =
replies / ${w2.durationMs / 1000} s) and its latency, from just before the call is issued to the
awaiting worker resuming with the reply, is recorded in an HDR histogram
(hdr-histogram-js, 1 µs units, 3 significant digits). Every reply is
checked. A run also stops after ${w2.maxCalls.toLocaleString('en-US')} calls (${countBound ? 'reached in some runs, whose rate is then taken over their shorter window' : 'not reached in these runs'}). The
loop and the measurement are the same code for every contender
(\`bench/w2-loop.mjs\`), and each contender's call returns a promise.
The p50 and p99 columns are the medians over the runs of each run's
percentile. The CPU columns are what each process spent per measured call
over the window (user + system time of every thread; the client's from
\`process.cpuUsage()\`, the server's sampled from /proc), the medians over
the runs: with both processes on the same 2 vCPUs, a call's rate is bounded
by their sum and, in a closed loop, by the turns the two sides take. In the ratio table, a req/s ratio above 1 means nexres-rpc
answers more calls per second, a p99 ratio below 1 means its tail latency is
lower.

- **nexres-rpc** (\`bench/w2-nexres.mjs\`): \`Client.call('echo', payload)\`
  against the client port of a one-replica cluster (default options:
  \`ioThreads: 2\`), answered by the TypeScript handler
  \`replica.handle('echo', (req) => req)\`. Once more with the client
  connecting with \`seal: true\` (PROTOCOL.md §6b: X25519 session keys,
  every batch both ways encrypted with AES-256-GCM; no client key), the
  like-for-like comparison with the encrypted contenders (js-libp2p's
  Noise).
  Once more with the server's \`ioSpinMicros: ${W2_SPIN_MICROS}\` (its io threads
  poll that long after their last event before they sleep; the client
  unchanged): what a latency-bound deployment with cores to spare gets.
- **node:net** (\`bench/w2-net.mjs\`): the same calls written well on plain
  sockets: frames of a 4-byte length and a 4-byte request id, both sides
  staging frames and writing once per tick, parsing in place with
  zero-copy views, the client matching replies to calls by id in a \`Map\`;
  the server's handler is \`(req) => req\`.
- **raw node:net loop** (\`bench/w2-raw.mjs\`), the yardstick of what a
  request loop on Node's sockets can do when nothing is spent per call: the
  same frames; the server echoes every complete request of a read in one
  write; the client keeps C call slots (start times in a typed array), issues
  a slot's next call as soon as its reply is parsed and writes the calls of
  one read at once, with no promise, closure or timer per call (so it is not
  driven by \`bench/w2-loop.mjs\`, but measures the same window, warm-up and
  latency).
- **@grpc/grpc-js** (\`bench/w2-grpc.mjs\`): one unary method of a generic
  service defined without .proto files (\`makeGenericClientConstructor\` /
  \`server.addService\` with identity serializers on Buffers), insecure
  credentials on 127.0.0.1, one channel, the callback API wrapped in a
  promise; the server's handler is \`(call, cb) => cb(null, call.request)\`.
- **js-libp2p** (\`bench/w2-libp2p.mjs\`, ${libp2pVersions()}): two
  libp2p nodes with the TCP transport, Noise and Yamux (default options),
  one stream of a custom echo protocol carrying every call, frames with a
  varint length prefix (it-length-prefixed): the client stages the requests
  issued in a tick and sends them as one buffer per tick (\`stream.send\`),
  the server decodes each \`'message'\` event with @libp2p/utils'
  \`LengthPrefixedDecoder\` and answers its requests with one send; the
  client matches replies to calls in order (a stream is ordered), no ids.
  The server's handler is \`(req) => req\`. (One stream per call slot, the
  other way to multiplex calls, is much slower: every reply then is its own
  Yamux frame, Noise message and socket writes;
  \`node bench/w2-libp2p.mjs client ... streams\` measures it.)

${table}
`
}


// ---------------------------------------------------------------- W3

async function onceW3(variant) {
  const [workers, ordering = 'peer'] = variant.split(':')
  return withProcs(async (procs) => {
    const server = start(process.execPath, ['bench/w3-workers.mjs', 'server', await freePort(), workers, ordering])
    procs.push(server)
    const m = /^ready (\d+)$/.exec(await server.nextLine(30_000))
    if (m === null) throw new Error('w3 server: no ready line')
    const client = start(process.execPath, [
      'bench/w3-workers.mjs', 'client', m[1], w3.concurrency, w3.size, w3.warmupMs, w3.durationMs, w3.maxCalls, w3.connections,
    ])
    procs.push(client)
    return JSON.parse(await client.nextLine(w3.warmupMs + w3.durationMs + 60_000))
  }, { reapMs: 10_000, term: true })
}

async function runW3() {
  const per = {}
  for (const w of w3.variants) per[w] = []
  for (let i = 0; i < runs; i++) {
    for (const w of w3.variants) {
      const r = await onceW3(w)
      per[w].push(r)
      console.log(`W3 ${w} run ${i + 1}: ${fmtRate(r.reqPerSec)} req/s, p50 ${r.p50} µs, p99 ${r.p99} µs`)
    }
  }
  const base = per['1'] ? median(per['1'].map((r) => r.reqPerSec)) : undefined
  const lines = []
  lines.push('| handlers | req/s (median) | vs workers: 1 | p50 µs | p99 µs | runs: req/s |')
  lines.push('| --- | ---: | ---: | ---: | ---: | --- |')
  for (const w of w3.variants) {
    const rate = median(per[w].map((r) => r.reqPerSec))
    const [n, o] = w.split(':')
    const name = n === '0' ? 'main thread (workers: 0)' : `workers: ${n}${o ? `, ordering: '${o}'` : ''}`
    lines.push(
      `| ${name} | ${fmtRate(rate)} | ${base ? `${(rate / base).toFixed(2)}×` : ''} | ${fmtUs(median(per[w].map((r) => r.p50)))} | ${fmtUs(median(per[w].map((r) => r.p99)))} | ${per[w].map((r) => fmtRate(r.reqPerSec)).join(', ')} |`,
    )
  }
  const table = lines.join('\n')
  console.log('\n' + table + '\n')
  return `## W3: CPU-heavy handlers on worker threads

Measured on ${today}, ${runsText} (\`${command}\`).

A request handler that computes SHA-256 of the ${w3.size}-byte request 50 times
over (\`createHash\` each time, as users write it) and replies with the
request, served by a one-replica cluster with its handlers on the main thread
(\`workers: 0\`) or in \`workers: N\` worker threads loading
\`bench/w3-handlers.mjs\` (with the default \`ordering: 'peer'\` the requests of
one connection are handled in order, one worker at a time; \`'none'\` spreads
them freely). The W2 closed loop drives it with C = ${w3.concurrency} calls outstanding
spread over ${w3.connections} client connections of one client process (calls go to the
connections in turn); ${w3.warmupMs / 1000} s warm-up, ${w3.durationMs / 1000} s measured.
Everything shares the machine's ${os.cpus().length} vCPUs: the client process, the
replica's io threads, V8's garbage collector threads (the handler allocates
a Hash object and a Buffer per round) and the handler threads.

${table}
`
}

// ---------------------------------------------------------------- W4

async function onceW4(flood) {
  const ports = [await freePort(), await freePort(), await freePort()]
  return withProcs(async (procs) => {
    const recv = start(process.execPath, ['bench/w4-flood.mjs', 'recv', ...ports])
    procs.push(recv)
    await recv.nextLine(20_000)
    if (flood) procs.push(start(process.execPath, ['bench/w4-flood.mjs', 'flood', ...ports, w4.warmupMs + w4.durationMs + 5000]))
    procs.push(start(process.execPath, ['bench/w4-flood.mjs', 'honest', ...ports, w4.intervalMs, w4.warmupMs, w4.durationMs]))
    return JSON.parse(await recv.nextLine(w4.warmupMs + w4.durationMs + 60_000))
  }, { reapMs: 15_000 })
}

async function runW4() {
  const per = { quiet: [], flood: [] }
  for (let i = 0; i < runs; i++) {
    for (const k of ['quiet', 'flood']) {
      const r = await onceW4(k === 'flood')
      per[k].push(r)
      console.log(`W4 ${k} run ${i + 1}: honest p50 ${r.p50} µs, p99 ${r.p99} µs, max ${r.max} µs; flood ${fmtBytes(r.floodBytesPerSec)}`)
    }
  }
  const lines = []
  lines.push('| other peer | honest messages | p50 µs | p99 µs | p99.9 µs | max µs | flood received | runs: p99 µs |')
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
  for (const k of ['quiet', 'flood']) {
    const xs = per[k]
    const m = (f) => median(xs.map(f))
    lines.push(
      `| ${k === 'quiet' ? 'idle' : 'flooding 1 KiB messages'} | ${fmtUs(m((r) => r.honest))} | ${fmtUs(m((r) => r.p50))} | ${fmtUs(m((r) => r.p99))} | ${fmtUs(m((r) => r.p999))} | ${fmtUs(m((r) => r.max))} | ${k === 'quiet' ? '–' : fmtBytes(m((r) => r.floodBytesPerSec))} | ${xs.map((r) => fmtUs(r.p99)).join(', ')} |`,
    )
  }
  const table = lines.join('\n')
  console.log('\n' + table + '\n')
  return `## W4: an honest peer while another floods

Measured on ${today}, ${runsText} (\`${command}\`).

Three replicas in three processes (\`bench/w4-flood.mjs\`): replica 3 sends
replica 1 a 64-byte message every ${w4.intervalMs} ms (paced by the clock, stamped with
the send time from the machine-wide monotonic clock), replica 1's handler
records how long each took to arrive; replica 2 is either idle or floods
replica 1 with 1 KiB messages as fast as replica 1 takes them. Every honest
message must arrive (the count is checked); latencies over the ${w4.durationMs / 1000} s after a
${w4.warmupMs / 1000} s warm-up. Replica 1 serves its sources round robin (a flooding peer
gets 1 MiB per batch while others wait; beyond its receive buffers its
socket is not read). On ${os.cpus().length} vCPUs the flooder's process and the receiver's
JavaScript thread already take both cores, so the honest sender and the io
threads wait for the CPU too: that scheduling delay is in these figures.

${table}
`
}


// ---------------------------------------------------------------- W7

const w7 = { intervalMs: 2, warmupMs: 1000, durationMs: 4000, loops: 48 }

async function onceW7(mode) {
  const ports = [await freePort(), await freePort(), await freePort()]
  return withProcs(async (procs) => {
    const recv = start(process.execPath, ['bench/w7-handshakes.mjs', 'recv', ...ports, mode === 'flood-no-budget' ? 'off' : 'on'])
    procs.push(recv)
    await recv.nextLine(20_000)
    let attack
    if (mode !== 'quiet') {
      attack = start(process.execPath, ['bench/w7-handshakes.mjs', 'attack', ports[0], w7.loops, w7.warmupMs + w7.durationMs + 2000])
      procs.push(attack)
    }
    procs.push(start(process.execPath, ['bench/w7-handshakes.mjs', 'honest', ...ports, w7.intervalMs, w7.warmupMs, w7.durationMs]))
    const r = JSON.parse(await recv.nextLine(w7.warmupMs + w7.durationMs + 60_000))
    const a = attack ? JSON.parse(await attack.nextLine(60_000)) : undefined
    return { ...r, attack: a }
  }, { reapMs: 15_000 })
}

async function runW7() {
  const modes = ['quiet', 'flood', 'flood-no-budget']
  const per = Object.fromEntries(modes.map((m) => [m, []]))
  for (let i = 0; i < runs; i++) {
    for (const m of modes) {
      const r = await onceW7(m)
      per[m].push(r)
      const a = r.attack ? `; ${fmtRate(r.attack.attempts / r.attack.seconds)} attempts/s, ${fmtRate(r.attack.welcomes / r.attack.seconds)} key exchanges/s` : ''
      console.log(`W7 ${m} run ${i + 1}: honest p50 ${r.p50} µs, p99 ${r.p99} µs, max ${r.max} µs${a}`)
    }
  }
  const names = {
    quiet: 'no flood',
    flood: `${w7.loops} loops of handshakes from one address, budget on (defaults)`,
    'flood-no-budget': `the same flood, budget off (handshakesPerSecond*: 0)`,
  }
  const lines = []
  lines.push('| replica port | honest p50 µs | honest p99 µs | max µs | attempts/s | key exchanges/s done | runs: p99 µs |')
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | --- |')
  for (const m of modes) {
    const xs = per[m]
    const med = (f) => median(xs.map(f))
    const att = m === 'quiet' ? '–' : fmtRate(med((r) => r.attack.attempts / r.attack.seconds))
    const kex = m === 'quiet' ? '–' : fmtRate(med((r) => r.attack.welcomes / r.attack.seconds))
    lines.push(`| ${names[m]} | ${fmtUs(med((r) => r.p50))} | ${fmtUs(med((r) => r.p99))} | ${fmtUs(med((r) => r.max))} | ${att} | ${kex} | ${xs.map((r) => fmtUs(r.p99)).join(', ')} |`)
  }
  const q = median(per.quiet.map((r) => r.p99))
  const f = median(per.flood.map((r) => r.p99))
  const g = median(per['flood-no-budget'].map((r) => r.p99))
  const table = lines.join('\n')
  console.log('\n' + table + '\n')
  return `## W7: an established link while strangers flood the replica port with handshakes

Measured on ${today}, ${runsText} (\`${command}\`).

Replica 1 (\`auth: 'mac'\`) and replica 2 in two processes
(\`bench/w7-handshakes.mjs\`); replica 2 sends replica 1 a 64-byte message every
${w7.intervalMs} ms over their established link, stamped with the send time, and replica 1
records how long each took (${w7.durationMs / 1000} s after a ${w7.warmupMs / 1000} s warm-up). A third process runs
${w7.loops} loops from 127.0.0.1, each connecting, sending a HELLO that claims replica 3
with a fresh nonce and X25519 key (it passes every check before key
exchange, so without a budget each costs replica 1 an X25519 key and an
Ed25519 signature) and closing when answered. With the handshake budget
(\`handshakesPerSecondPerAddress\` 100, \`handshakesPerSecond\` 2000, the
defaults) all but ~100 a second are refused \`RATE_LIMITED\` before any
public-key operation; the attacker's own process shares the 2 cores.

${table}

Honest p99 during the flood ÷ quiet: ${(f / q).toFixed(2)}× with the budget, ${(g / q).toFixed(2)}× without it.
`
}

// ---------------------------------------------------------------- W5

async function onceW5({ floods, honest, count, size, warmup, honestMs }) {
  const n = 1 + floods + (honest ? 1 : 0)
  const ports = []
  for (let i = 0; i < n; i++) ports.push(await freePort())
  const floodIds = Array.from({ length: floods }, (_, i) => i + 2)
  const honestId = honest ? floods + 2 : 0
  const base = { ports, auth: 'mac', count, size, warmup, floods: floodIds, honest: honestId, honestMs }
  return withProcs(async (procs) => {
    const recv = start(process.execPath, ['bench/w5-signed.mjs', JSON.stringify({ ...base, role: 'recv', id: 1 })])
    procs.push(recv)
    await recv.nextLine(20_000)
    for (const id of floodIds) procs.push(start(process.execPath, ['bench/w5-signed.mjs', JSON.stringify({ ...base, role: 'flood', id })]))
    if (honestId !== 0) procs.push(start(process.execPath, ['bench/w5-signed.mjs', JSON.stringify({ ...base, role: 'honest', id: honestId })]))
    const r = JSON.parse(await recv.nextLine(180_000))
    if (r.messages !== floods * count) throw new Error(`W5: ${r.messages} of ${floods * count}`)
    return r
  }, { reapMs: 30_000 })
}

async function runW5() {
  const size = 64
  const cases = [
    { name: '1 signing peer', floods: 1, honest: false, count: 30_000, warmup: 3_000 },
    { name: '3 signing peers', floods: 3, honest: false, count: 10_000, warmup: 1_000 },
    { name: 'honest peer alone (quiet)', floods: 0, honest: true, count: 0, warmup: 0, honestMs: 2_000 },
    { name: 'honest peer while another floods signed messages', floods: 1, honest: true, count: 60_000, warmup: 0, honestMs: 2_000 },
  ]
  const rows = []
  for (const c of cases) {
    const all = []
    for (let i = 0; i < runs; i++) {
      const r = await onceW5({ ...c, size })
      all.push(r)
      const rate = r.messages > 0 ? `${fmtRate(r.messages / r.seconds)} verified msgs/s` : ''
      const lat = c.honest ? ` honest p50 ${r.p50.toFixed(2)} ms p99 ${r.p99.toFixed(2)} ms` : ''
      console.log(`W5 ${c.name} run ${i + 1}: ${rate}${lat}`)
    }
    rows.push({
      ...c,
      rate: c.floods > 0 ? median(all.map((r) => r.messages / r.seconds)) : 0,
      rates: all.map((r) => r.messages / r.seconds),
      p50: median(all.map((r) => r.p50)),
      p99: median(all.map((r) => r.p99)),
    })
  }
  const lines = []
  lines.push('| case | verified msgs/s at the receiver (median) | runs | honest p50 | honest p99 |')
  lines.push('| --- | ---: | --- | ---: | ---: |')
  for (const r of rows) {
    lines.push(
      `| ${r.name} | ${r.floods > 0 ? fmtRate(r.rate) : '–'} | ${r.floods > 0 ? r.rates.map(fmtRate).join(', ') : '–'} | ${r.honest ? `${r.p50.toFixed(2)} ms` : '–'} | ${r.honest ? `${r.p99.toFixed(2)} ms` : '–'} |`,
    )
  }
  const quiet = rows.find((r) => r.honest && r.floods === 0)
  const loud = rows.find((r) => r.honest && r.floods > 0)
  const ratio = quiet && loud && quiet.p99 > 0 ? loud.p99 / quiet.p99 : 0
  const table = lines.join('\n')
  console.log('\n' + table + '\n')
  return `## W5: signed messages

Measured on ${today}, ${runsText} (\`${command}\`).

Replicas in separate processes with \`auth: 'mac'\`; replica 1 receives. A
signing peer sends ${size}-byte messages with \`send(1, route, payload, { sign:
true })\` as fast as \`'drain'\` allows (each signed on the sender's
JavaScript thread); the receiver's handler counts only messages whose
\`msg.signature\` is there, i.e. verified. Signatures are checked in the
receiver's verification pool (one thread per core), off the io threads, one
job at a time from each peer in turn; a connection has at most 128 frames
there and is not read further until answers come back. Rates are taken from
the end of every signing peer's warm-up to the last message. The honest peer
sends one signed 16-byte message every 2 ms for 2 s; its latency is from
its send time to the receiver's handler, alone and while another peer
floods signed messages.

One Ed25519 verification costs about 70–90 µs on one core here
(\`build-native/crypto_bench\`: ~13.8 k/s per core); the machine has 2 cores,
which the signing peers' processes share with the receiver.

${table}

Honest p99 under the flood ÷ quiet: ${ratio > 0 ? `${ratio.toFixed(2)}×` : 'n/a'}.
`
}

// ---------------------------------------------------------------- W6

// Four replica processes (each serving 'echo' on its client port), then one
// client process: calls to one replica, or quorum calls to all four.
async function onceW6(mode, concurrency) {
  return withProcs(async (procs) => {
    const ports = []
    for (let i = 0; i < 4; i++) {
      const server = start(process.execPath, ['bench/w2-nexres.mjs', 'server', await freePort()])
      procs.push(server)
      const m = /^ready (\d+)$/.exec(await server.nextLine(20_000))
      if (m === null) throw new Error('w6 server: no ready line')
      ports.push(m[1])
    }
    const quorum = mode.startsWith('quorum')
    const role = (quorum ? 'quorum' : 'client') + (mode.endsWith('-key') ? '-key' : '')
    const client = start(process.execPath, [
      'bench/w2-nexres.mjs', role, quorum ? ports.join(',') : ports[0],
      concurrency, w2.size, w2.warmupMs, w2.durationMs, w2.maxCalls,
    ])
    procs.push(client)
    return JSON.parse(await client.nextLine(w2.warmupMs + w2.durationMs + 60_000))
  }, { reapMs: 10_000, term: true })
}

const W6_MODES = ['single', 'quorum', 'single-key', 'quorum-key']

async function runW6() {
  const rows = []
  for (const c of w2.concurrency) {
    const per = Object.fromEntries(W6_MODES.map((m) => [m, []]))
    for (let i = 0; i < runs; i++) {
      for (const mode of W6_MODES) {
        const r = await onceW6(mode, c)
        per[mode].push(r)
        console.log(`W6 C=${c} ${mode} run ${i + 1}: ${fmtRate(r.reqPerSec)} req/s, p50 ${r.p50} µs, p99 ${r.p99} µs`)
      }
    }
    const med = (k, f) => median(per[k].map(f))
    const row = (k) => ({ rate: med(k, (r) => r.reqPerSec), p50: med(k, (r) => r.p50), p99: med(k, (r) => r.p99) })
    rows.push({ c, single: row('single'), quorum: row('quorum'), singleKey: row('single-key'), quorumKey: row('quorum-key') })
  }
  const lines = ['| C | client | single replica: req/s | p50 µs | p99 µs | quorum of 2 of 4 (f = 1): req/s | p50 µs | p99 µs | quorum ÷ single: req/s | p50 |', '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for (const r of rows) {
    for (const [what, single, quorum] of [['no key', r.single, r.quorum], ['key (§6a)', r.singleKey, r.quorumKey]]) {
      lines.push(`| ${r.c} | ${what} | ${fmtRate(single.rate)} | ${single.p50} | ${single.p99} | ${fmtRate(quorum.rate)} | ${quorum.p50} | ${quorum.p99} | ${(quorum.rate / single.rate).toFixed(2)}× | ${(quorum.p50 / single.p50).toFixed(2)}× |`)
    }
  }
  const keyCost = rows.map((r) => `C = ${r.c}: single ${(r.singleKey.rate / r.single.rate).toFixed(2)}×, quorum ${(r.quorumKey.rate / r.quorum.rate).toFixed(2)}×`).join('; ')
  const table = lines.join('\n')
  console.log('\n' + table + '\n')
  return `## W6: quorum calls

Measured on ${today}, ${runsText} (\`${command}\`).

${w2.size}-byte echo calls in the W2 closed loop (C calls outstanding), ${w2.durationMs / 1000} s after ${w2.warmupMs / 1000} s of warm-up. Four
replicas, each its own process serving \`handle('echo', (req) => req)\`;
one client process calls either one replica (\`Client.connect({ host, port })\`)
or all four with \`Client.connect({ replicas, f: 1 })\` and \`call(route,
payload, { quorum: 2 })\` (\`to: 'all'\`: each call goes to four replicas and
resolves on the second equal reply). Four server processes share the
machine's cores with the client in both modes. "key" rows: the same client
with \`privateKey\` (PROTOCOL.md §6a: the key proved in each handshake, every
batch MAC'd both ways). Goals (issue 12): quorum req/s at C = 64 ≥ 0.5×
single, quorum p50 ≤ 1.5× single.

${table}

With a key ÷ without, req/s: ${keyCost}.
`
}

// ---------------------------------------------------------------- doc

const docPath = join(root, 'docs', 'benchmarks.md')
const previous = existsSync(docPath) ? readFileSync(docPath, 'utf8') : ''

// An earlier section to keep as it is; older files had the date and the
// number of runs in the header only, so that goes into the section.
function keptSection(prefix) {
  const i = previous.indexOf(`\n## ${prefix}`)
  if (i < 0) return `## ${prefix}\n\nNot measured yet: \`node bench/run.mjs --sections ${prefix.toLowerCase()}\`.\n`
  const j = previous.indexOf('\n## ', i + 1)
  let text = previous.slice(i + 1, j < 0 ? undefined : j).trimEnd() + '\n'
  if (!/^Measured on /m.test(text)) {
    const date = /^- date: (\S+)/m.exec(previous)?.[1] ?? 'an earlier date'
    const n = /--runs (\d+)/.exec(previous)?.[1]
    const nl = text.indexOf('\n')
    text = `${text.slice(0, nl)}\n\nMeasured on ${date}${n ? `, median of ${n} runs (\`node bench/run.mjs --runs ${n}\`)` : ''}.${text.slice(nl)}`
  }
  return text
}

const w1Section = doW1 ? await runW1() : keptSection('W1')
const w2Section = doW2 ? await runW2() : keptSection('W2')
const w3Section = doW3 ? await runW3() : keptSection('W3')
const w4Section = doW4 ? await runW4() : keptSection('W4')
const w5Section = doW5 ? await runW5() : keptSection('W5')
const w6Section = doW6 ? await runW6() : keptSection('W6')
const w7Section = doW7 ? await runW7() : keptSection('W7')
// Sections written by hand (not "## W<n>": before/after comparisons of
// issues) are kept as they are, after the generated ones.
const handWritten = []
for (const m of previous.matchAll(/\n## (?!W\d)[^\n]*/g)) {
  const j = previous.indexOf('\n## ', m.index + 1)
  handWritten.push(previous.slice(m.index + 1, j < 0 ? undefined : j).trimEnd() + '\n')
}

if (write) {
  const cpu = os.cpus()
  const doc = `# Benchmarks

Measured by \`npm run bench\` (\`node bench/run.mjs\`), which runs every
contender in fresh processes, interleaved run by run, and reports the median
of the runs (\`--runs N\`, default 3). Regenerate this file with the same
command; \`--sections w1,w3\` (or \`--only-w1\`, \`--only-w2\`) re-measures some
workloads and keeps the other sections as they are.

- machine: ${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}
- Node.js ${process.version}; the two ends are two processes on the same machine, over loopback (127.0.0.1)

${w1Section}
${w2Section}
${w3Section}
${w4Section}
${w5Section}
${w6Section}
${w7Section}${handWritten.length > 0 ? '\n' + handWritten.join('\n') : ''}`
  writeFileSync(docPath, doc)
  console.log('wrote docs/benchmarks.md')
}
