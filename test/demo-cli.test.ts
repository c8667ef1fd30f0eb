// The `nexres-rpc demo` command (bin/nexres-rpc.mjs), run as a user would:
// a child process with piped (non-TTY) output. A short run must start a
// cluster, move messages and requests, print progress lines and a summary,
// close everything and exit 0 in bounded time; bad options must fail fast
// with a message naming the option.
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import t from 'tap'

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'nexres-rpc.mjs')

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
  timedOut: boolean
}

/** Runs the CLI; SIGKILLs it after `timeoutMs` (its replicas close when it goes away). */
function run(args: string[], timeoutMs: number, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const start = Date.now()
    const proc = spawn(process.execPath, [bin, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => {
      timedOut = true
      proc.kill('SIGKILL')
    }, timeoutMs)
    proc.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    proc.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - start, timedOut })
    })
  })
}

const num = (s: string): number => Number(s.replace(/,/g, ''))

/** Per-replica rows of the summary table: id, msgs in, msgs out. */
function replicaRows(stdout: string): { id: number; msgsIn: number; msgsOut: number }[] {
  return [...stdout.matchAll(/^\s*(\d+)\s+([\d,]+)\s+([\d,]+)\s+[\d.]+ [kMG]?B\s+[\d.]+ [kMG]?B\s+[\d,]+\s+[\d,]+\s*$/gm)].map((m) => ({
    id: Number(m[1]),
    msgsIn: num(m[2]!),
    msgsOut: num(m[3]!),
  }))
}

t.test('demo --replicas 3 --duration 2 --size 64: progress, a summary with traffic, exit 0', async (t) => {
  const r = await run(['demo', '--replicas', '3', '--duration', '2', '--size', '64'], 60_000)
  const info = { stdout: r.stdout, stderr: r.stderr }
  t.notOk(r.timedOut, 'finished before the 60 s kill', info)
  t.same({ code: r.code, signal: r.signal }, { code: 0, signal: null }, 'exit code 0', info)
  t.ok(r.ms < 45_000, `finished in bounded time (${r.ms} ms)`)
  t.notMatch(r.stdout, /\r|\x1b\[/, 'no in-place redraws when stdout is not a TTY')
  t.notMatch(r.stderr, /nexres-rpc demo:/, 'no error reported', info)

  const progress = r.stdout.split('\n').filter((l) => /^\[\s*[\d.]+s\/2s\] msgs\/s .+ req\/s .+ p99 .+ links up \d+\/6$/.test(l))
  t.ok(progress.length >= 1 && progress.length <= 4, `progress lines, about one a second (${progress.length})`, info)

  const rows = replicaRows(r.stdout)
  t.same(rows.map((x) => x.id), [1, 2, 3], 'one summary row per replica', info)
  for (const row of rows) t.ok(row.msgsIn > 0 && row.msgsOut > 0, `replica ${row.id} received and sent messages (${row.msgsIn} in, ${row.msgsOut} out)`)

  const total = /^\s*total\s+([\d,]+)\s+([\d,]+)/m.exec(r.stdout)
  t.ok(total, 'a total row', info)
  const delivered = /^messages\s+([\d,]+) delivered in [\d.]+ s: [\d.]+ [kM]? ?msgs\/s/m.exec(r.stdout)
  t.ok(delivered && num(delivered[1]!) > 0, 'messages delivered, with msgs/s', info)
  if (total && delivered) t.equal(num(delivered[1]!), num(total[1]!), 'the messages line agrees with the table')
  const requests = /^requests\s+([\d,]+) echo calls in [\d.]+ s: [\d.]+ [kM]? ?req\/s/m.exec(r.stdout)
  t.ok(requests && num(requests[1]!) > 0, 'echo calls made, with req/s', info)
  t.match(r.stdout, /^latency\s+p50 [\d.]+ ms\s+p99 [\d.]+ ms\s+max [\d.]+ ms\s+\(hdr-histogram-js\)$/m, 'p50/p99/max latency from hdr-histogram-js')
  t.notMatch(r.stdout, /undelivered at close|were killed|exited with an error|still had unacknowledged|calls failed/, 'closed cleanly', info)
})

t.test('without hdr-histogram-js the latencies come from the fallback recorder (2 replicas, empty payloads)', async (t) => {
  const r = await run(['demo', '--replicas', '2', '--duration', '1', '--size', '0'], 60_000, { NEXRES_DEMO_NO_HDR: '1' })
  const info = { stdout: r.stdout, stderr: r.stderr }
  t.same({ code: r.code, signal: r.signal, timedOut: r.timedOut }, { code: 0, signal: null, timedOut: false }, 'exit code 0', info)
  t.match(r.stdout, /^latency\s+p50 [\d.]+ ms\s+p99 [\d.]+ ms\s+max [\d.]+ ms\s+\(sorted sample, hdr-histogram-js not available\)$/m, 'fallback latency line', info)
  const rows = replicaRows(r.stdout)
  t.same(rows.map((x) => x.id), [1, 2], 'one summary row per replica', info)
  for (const row of rows) t.ok(row.msgsIn > 0, `replica ${row.id} received empty messages`)
  const requests = /^requests\s+([\d,]+) echo calls/m.exec(r.stdout)
  t.ok(requests && num(requests[1]!) > 0, 'echo calls with empty payloads made', info)
})

t.test('bad options exit non-zero, naming the option', async (t) => {
  const cases: [string[], RegExp][] = [
    [['demo', '--replicas', '1'], /--replicas must be an integer from 2 to 16 \(got "1"\)/],
    [['demo', '--replicas', '17'], /--replicas must be an integer from 2 to 16/],
    [['demo', '--replicas', 'four'], /--replicas must be an integer/],
    [['demo', '--duration', '0'], /--duration must be a number of seconds from 1 to 600/],
    [['demo', '--duration', '601'], /--duration must be/],
    [['demo', '--size', '1048577'], /--size must be an integer from 0 to 1048576/],
    [['demo', '--size', '-5'], /--size needs a value/],
    [['demo', '--replicas'], /--replicas needs a value/],
    [['demo', '--auth', 'mac'], /--auth "mac" is not available: "none" is the only mode for now\. Auth modes come with peer authentication/],
    [['demo', '--bogus'], /unknown option --bogus/],
    [['demo', 'extra'], /unexpected argument "extra"/],
    [['frob'], /unknown command "frob"/],
    [[], /missing command/],
  ]
  const runs = await Promise.all(cases.map(([args]) => run(args, 20_000)))
  cases.forEach(([args, re], i) => {
    const r = runs[i]!
    const label = args.join(' ') || '(no arguments)'
    t.equal(r.code, 2, `${label}: exit code 2`, { stderr: r.stderr })
    t.match(r.stderr, re, `${label}: the message names the option`)
    t.equal(r.stdout, '', `${label}: nothing on stdout (no cluster started)`)
    t.ok(r.ms < 15_000, `${label}: fails fast (${r.ms} ms)`)
  })
})

t.test('--help prints the options and exits 0', async (t) => {
  for (const args of [['--help'], ['demo', '--help'], ['demo', '-h']]) {
    const r = await run(args, 20_000)
    t.equal(r.code, 0, `${args.join(' ')}: exit code 0`)
    for (const opt of ['--replicas N', '--duration S', '--size BYTES', '--auth MODE']) t.match(r.stdout, opt, `${args.join(' ')}: lists ${opt}`)
  }
})
