// npm run bench: W1 one-way stream, nexres-rpc (TS handler) against plain
// node:net and against the native-only ceiling (C++ on both ends, same core),
// side by side in one run, each run in fresh processes. Prints a table and
// writes docs/benchmarks.md with the machine, the command and the median.
//   node bench/run.mjs [--runs 3] [--only 64,1024,65536] [--no-write]
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
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

// Each workload is preceded, on the same connection, by `warmup` untimed
// messages so JIT compilation is not what gets measured (same for everyone).
const workloads = [
  { size: 64, count: 1_000_000, warmup: 300_000 },
  { size: 1024, count: 200_000, warmup: 50_000 },
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

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

function start(cmd, argv) {
  const child = spawn(cmd, argv, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const lines = []
  const waiters = []
  child.stdout.on('data', (d) => {
    out += d
    let i
    while ((i = out.indexOf('\n')) >= 0) {
      lines.push(out.slice(0, i))
      out = out.slice(i + 1)
      waiters.splice(0).forEach((w) => w())
    }
  })
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
  const nextLine = async (ms) => {
    const end = Date.now() + ms
    while (lines.length === 0) {
      if (Date.now() > end) throw new Error(`${cmd} ${argv.join(' ')}: no output within ${ms} ms`)
      await Promise.race([new Promise((r) => waiters.push(r)), new Promise((r) => setTimeout(r, 100)), exited])
    }
    return lines.shift()
  }
  return { child, nextLine, exited }
}

async function once(kind, { size, count, warmup }) {
  const p1 = await freePort()
  const p2 = await freePort()
  let recv, send
  if (kind === 'nexres') {
    recv = start(process.execPath, ['bench/w1-nexres.mjs', 'recv', p1, p2, count, size, 2, warmup])
    await recv.nextLine(20_000)
    send = start(process.execPath, ['bench/w1-nexres.mjs', 'send', p1, p2, count, size, 2, warmup])
  } else if (kind === 'net') {
    recv = start(process.execPath, ['bench/w1-net.mjs', 'recv', p1, count, size, warmup])
    await recv.nextLine(20_000)
    send = start(process.execPath, ['bench/w1-net.mjs', 'send', p1, count, size, warmup])
  } else {
    recv = start(nativeBin, ['recv', p1, p2, count, size, 2, warmup])
    await recv.nextLine(20_000)
    send = start(nativeBin, ['send', p1, p2, count, size, 2, warmup])
  }
  try {
    const line = await recv.nextLine(180_000)
    const r = JSON.parse(line)
    if (r.messages !== count) throw new Error(`${kind}: ${r.messages} of ${count} messages`)
    return { msgsPerSec: r.messages / r.seconds, bytesPerSec: r.bytes / r.seconds }
  } finally {
    const killer = setTimeout(() => {
      recv.child.kill('SIGKILL')
      send.child.kill('SIGKILL')
    }, 30_000)
    await Promise.all([recv.exited, send.exited])
    clearTimeout(killer)
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const fmtRate = (x) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`)
const fmtBytes = (x) => (x >= 1e9 ? `${(x / 1e9).toFixed(2)} GB/s` : `${(x / 1e6).toFixed(0)} MB/s`)
const label = (size) => (size >= 1024 ? `${size / 1024} KiB` : `${size} B`)

const haveNative = ensureNative()
const kinds = ['nexres', 'net', ...(haveNative ? ['native'] : [])]
const names = { nexres: 'nexres-rpc (TS handler)', net: 'node:net, length-prefixed', native: 'native-only ceiling (C++ both ends)' }
const results = []
for (const w of workloads) {
  const per = {}
  for (const k of kinds) per[k] = []
  // Interleave contenders run by run so drift on a shared machine hits all.
  for (let i = 0; i < runs; i++) {
    for (const k of kinds) {
      const r = await once(k, w)
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
lines.push('')
lines.push('| workload | nexres-rpc / node:net | nexres-rpc / native ceiling |')
lines.push('| --- | ---: | ---: |')
for (const r of results) {
  const n = r.stats.nexres.msgsPerSec
  const vsNet = (n / r.stats.net.msgsPerSec).toFixed(2)
  const vsNative = r.stats.native ? `${((100 * n) / r.stats.native.msgsPerSec).toFixed(0)} %` : 'n/a'
  lines.push(`| W1 ${label(r.size)} | ${vsNet}× | ${vsNative} |`)
}
const table = lines.join('\n')
console.log('\n' + table)

if (write) {
  const cpu = os.cpus()
  const doc = `# Benchmarks

Measured by \`npm run bench\` (\`node bench/run.mjs --runs ${runs}\`), which
runs every contender in fresh processes, interleaved run by run, and reports
the median of ${runs} runs. Regenerate this file with the same command.

- date: ${new Date().toISOString().slice(0, 10)}
- machine: ${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}
- Node.js ${process.version}; sender and receiver are two processes on the same machine, over loopback

## W1: one-way stream

One long connection from a sender to a receiver; the receiver counts every
message in a handler that reads its payload; the rate is taken from the
first to the last measured message at the receiver. Before the measured
messages, the same connection carries an untimed warm-up (300,000 / 50,000 /
2,000 messages for 64 B / 1 KiB / 64 KiB) so that what is measured is
steady state, not JIT compilation; every contender gets the same warm-up.

- **nexres-rpc**: \`Replica.send\` in a loop (waiting for \`'drain'\` when it
  returns false) → replica handler \`(msg) => msg.payload\`, \`ioThreads: 2\`.
- **node:net**: the same workload written well on plain sockets: 4-byte
  length prefix, frames coalesced into one write per 1 MiB, write
  backpressure respected, the receiver parsing in place and calling a handler
  with a zero-copy view per message (\`bench/w1-net.mjs\`).
- **native-only ceiling**: \`native/bench/w1_native.cpp\`, C++ on both ends
  over the same engine, no JavaScript.

${table}
`
  writeFileSync(join(root, 'docs', 'benchmarks.md'), doc)
  console.log('\nwrote docs/benchmarks.md')
}
