// npm run bench:native: builds the native-only benchmarks with CMake (the
// one native build driver, as in CI: build-native/, Release) and runs them:
//   W1 ceiling  native/bench/w1_native.cpp: C++ on both ends of the engine,
//               64 B / 1 KiB / 64 KiB, two processes over loopback
//   crypto      native/bench/crypto_bench.cpp: MACs, AEAD and public-key ops
//   queues      native/bench/queue_bench.cpp: the MIQ and MOQ against
//               boost::lockfree::queue and moodycamel::ConcurrentQueue (when
//               their headers are installed: libboost-dev, libconcurrentqueue-dev)
// and writes the "Native benchmarks" section of docs/benchmarks.md (the
// other sections are left as they are). --no-write prints only.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { freePort, median, start, withProcs } from './procs.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const build = join(root, 'build-native')
const write = !process.argv.includes('--no-write')
const runs = 3

function sh(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' })
  if (r.status !== 0) {
    process.stderr.write(`bench:native: ${cmd} ${args.join(' ')} failed (cmake, a C++17 compiler, Asio and OpenSSL headers are needed: bash tools/setup.sh)\n`)
    process.exit(1)
  }
}
sh('cmake', ['-S', 'native', '-B', build, '-DCMAKE_BUILD_TYPE=Release'])
sh('cmake', ['--build', build, '-j', String(Math.max(2, os.cpus().length)), '--target', 'w1_native', 'crypto_bench', 'queue_bench'])

async function w1Once(count, size) {
  const [p1, p2] = [await freePort(), await freePort()]
  const bin = join(build, 'w1_native')
  return withProcs(async (procs) => {
    const recv = start(bin, ['recv', p2, p1, count, size])
    procs.push(recv)
    await recv.nextLine(20_000) // ready
    const send = start(bin, ['send', p2, p1, count, size])
    procs.push(send)
    return JSON.parse(await recv.nextLine(120_000))
  }, { reapMs: 10_000 })
}

const w1 = []
for (const [size, count] of [[64, 5_000_000], [1024, 1_000_000], [65536, 50_000]]) {
  const rates = []
  for (let i = 0; i < runs; i++) {
    const r = await w1Once(count, size)
    rates.push(r.messages / r.seconds)
    console.log(`W1 native ${size} B run ${i + 1}: ${(r.messages / r.seconds / 1e6).toFixed(2)} M msgs/s`)
  }
  w1.push({ size, count, rate: median(rates), rates })
}
const crypto = spawnSync(join(build, 'crypto_bench'), [], { cwd: root, encoding: 'utf8' }).stdout.trim()
console.log(crypto)
const queues = spawnSync(join(build, 'queue_bench'), ['4000000'], { cwd: root, encoding: 'utf8' })
  .stdout.trim()
  .split('\n')
  .map((l) => JSON.parse(l))
for (const q of queues) console.log(`queue ${q.queue}, ${q.producers} producer(s): ${(q.itemsPerSec / 1e6).toFixed(1)} M items/s`)

const fmt = (x) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`)
const label = (b) => (b >= 1024 ? `${b / 1024} KiB` : `${b} B`)
const section = `## Native benchmarks

Measured on ${new Date().toISOString().slice(0, 10)} by \`npm run bench:native\` (\`node bench/native.mjs\`): CMake builds
\`build-native/\` (Release), then each benchmark runs on this machine (${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown CPU'}).

**W1 ceiling** (\`native/bench/w1_native.cpp\`): the engine with C++ on both
ends, two processes over loopback, median of ${runs}:

| payload | msgs/s | payload throughput | runs |
| --- | ---: | ---: | --- |
${w1.map((r) => `| ${label(r.size)} × ${r.count.toLocaleString('en-US')} | ${fmt(r.rate)} | ${((r.rate * r.size) / 1e9).toFixed(2)} GB/s | ${r.rates.map(fmt).join(', ')} |`).join('\n')}

**Queues** (\`native/bench/queue_bench.cpp\`): P producer threads push 32-byte
items, one consumer pops them all; items/s, median of 5 rounds of 4,000,000
items. The MIQ is a bounded array queue (Vyukov); the MOQ is an intrusive
list with a heap node per push (it carries segments, each a batch of
frames, not single messages).

| queue | 1 producer | 2 producers |
| --- | ---: | ---: |
${[...new Set(queues.map((q) => q.queue))]
  .map((name) => {
    const at = (p) => queues.find((q) => q.queue === name && q.producers === p)
    return `| ${name} | ${fmt(at(1).itemsPerSec)} | ${fmt(at(2).itemsPerSec)} |`
  })
  .join('\n')}

**Crypto** (\`native/bench/crypto_bench.cpp\`, OpenSSL through EVP):

\`\`\`
${crypto}
\`\`\`
`
console.log('\n' + section)
if (write) {
  const path = join(root, 'docs', 'benchmarks.md')
  const doc = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n'
  const i = doc.indexOf('\n## Native benchmarks')
  let next = doc
  if (i < 0) next = doc.trimEnd() + '\n\n' + section
  else {
    const j = doc.indexOf('\n## ', i + 1)
    next = doc.slice(0, i + 1) + section + (j < 0 ? '' : doc.slice(j))
  }
  writeFileSync(path, next)
  console.log('wrote docs/benchmarks.md (Native benchmarks)')
}
