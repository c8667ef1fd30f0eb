// The `nexres-rpc demo` and `nexres-rpc keygen` commands (lib/cli/, run through the bin/nexres-rpc.mjs shim),
// run as a user would: a child process with piped (non-TTY) output. A short
// demo run must start a cluster (authenticated with fresh keys by default,
// or with --auth none), move messages, signed broadcasts and requests, print
// progress lines and a summary, close everything and exit 0 in bounded time;
// keygen's keys must start real replicas; bad options must fail fast with a
// message naming the option.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import t from 'tap'

import { type ClusterConfig, Replica, verifySigned } from 'nexres-rpc'

import { type Tap, freePorts, until } from './helpers.js'

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

/** The summary's note lines (anything that did not go as it should). */
const notes = (stdout: string): string[] => stdout.split('\n').filter((l) => l.startsWith('note'))

/** Per-replica rows of the summary table: id, msgs in, msgs out. */
function replicaRows(stdout: string): { id: number; msgsIn: number; msgsOut: number }[] {
  return [...stdout.matchAll(/^\s*(\d+)\s+([\d,]+)\s+([\d,]+)\s+[\d.]+ [kMG]?B\s+[\d.]+ [kMG]?B\s+[\d,]+\s+[\d,]+\s*$/gm)].map((m) => ({
    id: Number(m[1]),
    msgsIn: num(m[2]!),
    msgsOut: num(m[3]!),
  }))
}

t.test('demo --replicas 3 --duration 2 --size 64 (auth mac by default): progress, a summary with traffic and signatures, exit 0', async (t) => {
  const r = await run(['demo', '--replicas', '3', '--duration', '2', '--size', '64'], 60_000)
  const info = { stdout: r.stdout, stderr: r.stderr }
  t.match(r.stdout, /^nexres-rpc demo: 3 replicas on 127\.0\.0\.1, 2 s of traffic, 64-byte payloads, auth mac$/m, 'auth mac is the default', info)
  t.match(r.stdout, /^cluster up in \d+ ms: 3 processes, 6 authenticated links/m, 'the links are authenticated', info)
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
  const auth = /^auth\s+mac: Ed25519 replica identities, MAC'ed frames; ([\d,]+) signed broadcasts sent, ([\d,]+) signatures verified on receipt$/m.exec(r.stdout)
  t.ok(auth, 'the summary says auth mac ran, with signed broadcasts', info)
  if (auth) {
    t.ok(num(auth[1]!) > 0, `signed broadcasts were sent (${auth[1]})`)
    t.equal(num(auth[2]!), 2 * num(auth[1]!), 'every signed broadcast arrived at both peers with its signature')
  }
  t.notMatch(r.stdout, /signatures received|verifySigned\(\) rejected/, 'no signature mismatch noted', info)
  t.notMatch(r.stdout, /undelivered at close|were killed|exited with an error|still had unacknowledged|calls failed/, 'closed cleanly', info)
})

t.test('--auth none, without hdr-histogram-js: plain links, latencies from the fallback recorder (2 replicas, empty payloads)', async (t) => {
  const r = await run(['demo', '--replicas', '2', '--duration', '1', '--size', '0', '--auth', 'none'], 60_000, { NEXRES_DEMO_NO_HDR: '1' })
  const info = { stdout: r.stdout, stderr: r.stderr }
  t.same({ code: r.code, signal: r.signal, timedOut: r.timedOut }, { code: 0, signal: null, timedOut: false }, 'exit code 0', info)
  t.match(r.stdout, /^nexres-rpc demo: 2 replicas .*, auth none$/m, 'the first line says auth none', info)
  t.match(r.stdout, /^cluster up in \d+ ms: 2 processes, 2 links,/m, 'links not called authenticated', info)
  t.match(r.stdout, /^auth\s+none: replica connections not authenticated/m, 'the summary says auth none ran', info)
  t.notMatch(r.stdout, /signed broadcasts|signatures/, 'no signed broadcasts without keys', info)
  t.match(r.stdout, /^latency\s+p50 [\d.]+ ms\s+p99 [\d.]+ ms\s+max [\d.]+ ms\s+\(sorted sample, hdr-histogram-js not available\)$/m, 'fallback latency line', info)
  const rows = replicaRows(r.stdout)
  t.same(rows.map((x) => x.id), [1, 2], 'one summary row per replica', info)
  for (const row of rows) t.ok(row.msgsIn > 0, `replica ${row.id} received empty messages`)
  const requests = /^requests\s+([\d,]+) echo calls/m.exec(r.stdout)
  t.ok(requests && num(requests[1]!) > 0, 'echo calls with empty payloads made', info)
})

t.test('--byzantine 1 (4 replicas, auth none): replica 4 lies on every call; quorum calls outvote it, no wrong answer accepted', async (t) => {
  const r = await run(['demo', '--replicas', '4', '--duration', '1', '--size', '16', '--auth', 'none', '--byzantine', '1'], 60_000, { NEXRES_DEMO_NO_HDR: '1' })
  const info = { stdout: r.stdout, stderr: r.stderr }
  t.same({ code: r.code, signal: r.signal }, { code: 0, signal: null }, 'exit code 0', info)
  t.match(r.stdout, /^nexres-rpc demo: 4 replicas on 127\.0\.0\.1, 1 s of traffic, 16-byte payloads, auth none, 1 lying$/m, info)
  const byz = /^byzantine\s+replica 4 answered every call wrong; quorum calls \(f = 1, 2 equal replies\) outvoted ([\d,]+) lies seen; ([\d,]+) wrong answers accepted$/m.exec(r.stdout)
  t.ok(byz, 'a byzantine line in the summary', info)
  if (byz) {
    t.ok(num(byz[1]!) > 0, `lies were seen and outvoted (${byz[1]})`)
    t.equal(num(byz[2]!), 0, 'no wrong answer accepted')
  }
  const requests = /^requests\s+([\d,]+) echo calls/m.exec(r.stdout)
  t.ok(requests && num(requests[1]!) > 0, 'quorum calls completed', info)
  t.notMatch(r.stdout, /calls failed/, 'no call failed', info)
})

t.test('--clusters 2 (2 replicas each, auth mac): every replica linked to the other cluster, cross-cluster broadcasts all delivered with their cluster', async (t) => {
  const r = await run(['demo', '--clusters', '2', '--replicas', '2', '--duration', '1', '--size', '32'], 60_000, { NEXRES_DEMO_NO_HDR: '1' })
  const info = { stdout: r.stdout, stderr: r.stderr }
  t.same({ code: r.code, signal: r.signal }, { code: 0, signal: null }, 'exit code 0', info)
  t.match(r.stdout, /^nexres-rpc demo: 2 clusters of 2 replicas on 127\.0\.0\.1, 1 s of traffic, 32-byte payloads, auth mac$/m, info)
  t.match(r.stdout, /^clusters up in \d+ ms: 4 processes in 2 clusters \(epoch 0\), 4 authenticated links within them and 8 to the other clusters, replica ports \d+ \d+ \| \d+ \d+$/m, info)
  t.match(r.stdout, /links up 12\/12/, 'the progress line counts the remote links', info)
  t.match(r.stdout, /^ {3}c1\/1 /m, 'the table names replicas by cluster', info)
  const cross = /^clusters\s+2 clusters \(epoch 0\): ([\d,]+) broadcasts to other clusters \(broadcastTo\), ([\d,]+) of their ([\d,]+) copies delivered/m.exec(r.stdout)
  t.ok(cross, 'a clusters line in the summary', info)
  if (cross) {
    t.ok(num(cross[1]!) > 0, `cross-cluster broadcasts sent (${cross[1]})`)
    t.equal(num(cross[2]!), num(cross[3]!), 'every copy delivered')
  }
  t.same(notes(r.stdout), [], 'no notes (nothing lost, no failures)', info)
})

t.test('replicas closed 300 ms apart: the summary describes the run, not the shutdown (the later ones see the first go as a peer-down and a reconnect)', async (t) => {
  const r = await run(['demo', '--clusters', '2', '--replicas', '2', '--duration', '1', '--size', '32'], 60_000, { NEXRES_DEMO_NO_HDR: '1', NEXRES_DEMO_CLOSE_GAP_MS: '300' })
  const info = { stdout: r.stdout, stderr: r.stderr }
  t.same({ code: r.code, signal: r.signal }, { code: 0, signal: null }, 'exit code 0', info)
  t.same(notes(r.stdout), [], 'no notes: no peer-down counted', info)
  const total = /^\s*total\s+([\d,]+)\s+([\d,]+)\s+[\d.]+ [kMG]?B\s+[\d.]+ [kMG]?B\s+([\d,]+)\s+([\d,]+)\s*$/m.exec(r.stdout)
  t.ok(total, 'a total row', info)
  if (total) {
    t.ok(num(total[1]!) > 0, `messages went through (${total[1]})`)
    t.equal(num(total[1]!), num(total[2]!), 'every message sent was received')
    t.equal(num(total[3]!), 0, 'no reconnect counted', info)
  }
  t.notMatch(r.stdout, /undelivered at close|were killed|exited with an error/, 'closed cleanly', info)
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
    [['demo', '--auth', 'tls'], /--auth must be "seal", "mac" or "none" \(got "tls"\)/],
    [['demo', '--replicas', '3', '--byzantine', '1'], /--byzantine 1 needs at least 4 replicas \(3f \+ 1\), got --replicas 3/],
    [['demo', '--byzantine', 'x'], /--byzantine must be an integer from 0 to 5/],
    [['demo', '--clusters', '5'], /--clusters must be an integer from 1 to 4/],
    [['demo', '--clusters', '3', '--replicas', '6'], /--clusters must be .*clusters × replicas at most 16 \(got --clusters 3 --replicas 6\)/],
    [['demo', '--clusters', '2', '--byzantine', '1'], /--byzantine works with one cluster/],
    [['demo', '--auth'], /--auth needs a value: "seal", "mac" or "none"/],
    [['keygen', '--count', '0'], /--count must be an integer from 1 to 1000 \(got "0"\)/],
    [['keygen', '--count', 'two'], /--count must be an integer/],
    [['keygen', '--count'], /--count needs a value/],
    [['keygen', '--bogus'], /unknown option --bogus/],
    [['keygen', 'extra'], /unexpected argument "extra" \(keygen takes only options\)/],
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
  const demoOpts = ['--replicas N', '--duration S', '--size BYTES', '--auth MODE']
  const keygenOpts = ['--count N', '--json']
  const cases: [string[], string[]][] = [
    [['--help'], ['keygen', ...demoOpts, ...keygenOpts]],
    [['demo', '--help'], demoOpts],
    [['demo', '-h'], demoOpts],
    [['keygen', '--help'], [...keygenOpts, 'cluster.replicas[i].publicKey', 'privateKey']],
  ]
  for (const [args, expected] of cases) {
    const r = await run(args, 20_000)
    t.equal(r.code, 0, `${args.join(' ')}: exit code 0`)
    for (const opt of expected) t.match(r.stdout, opt, `${args.join(' ')}: lists ${opt}`)
  }
  const r = await run(['demo', '--help'], 20_000)
  t.match(r.stdout, /"mac" \(default/, 'demo --help gives mac as the default auth')
  t.notMatch(r.stdout, /only mode for now/, 'no "only none for now" left')
})

t.test('--version prints the package version and exits 0', async (t) => {
  const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  for (const flag of ['--version', '-v']) {
    const r = await run([flag], 20_000)
    t.equal(r.code, 0, `${flag}: exit code 0`)
    t.equal(r.stdout, `${version}\n`, `${flag}: prints ${version}`)
  }
})

const B64URL_KEY = /^[A-Za-z0-9_-]{43}$/
/** Starts one replica per key pair on 127.0.0.1 with auth 'mac'; closed at teardown. */
async function startKeyed(t: Tap, pairs: { publicKey: string; privateKey: string }[], id: string): Promise<{ cluster: ClusterConfig; replicas: Replica[] }> {
  const ports = await freePorts(pairs.length)
  const cluster: ClusterConfig = {
    id,
    replicas: ports.map((port, i) => ({ id: i + 1, host: '127.0.0.1', port, publicKey: pairs[i]!.publicKey })),
  }
  const replicas: Replica[] = []
  t.teardown(() => Promise.all(replicas.map((r) => r.close({ timeoutMs: 0 }))))
  for (let i = 0; i < pairs.length; i++) {
    replicas.push(await Replica.start({ id: i + 1, cluster, auth: 'mac', privateKey: pairs[i]!.privateKey, heartbeatIntervalMs: 0 }))
  }
  await Promise.all(replicas.map((r) => r.waitForPeers(undefined, { timeoutMs: 10_000 })))
  return { cluster, replicas }
}

t.test('keygen --count 3 --json: three distinct key pairs that start an authenticated cluster', async (t) => {
  const r = await run(['keygen', '--count', '3', '--json'], 20_000)
  t.equal(r.code, 0, 'exit code 0', { stderr: r.stderr })
  t.equal(r.stderr, '', 'nothing on stderr')
  const pairs = JSON.parse(r.stdout) as { publicKey: string; privateKey: string }[]
  t.equal(pairs.length, 3, 'three pairs')
  for (const p of pairs) {
    t.same(Object.keys(p).sort(), ['privateKey', 'publicKey'], 'publicKey and privateKey only')
    t.match(p.publicKey, B64URL_KEY, 'public key: 32 bytes base64url')
    t.match(p.privateKey, B64URL_KEY, 'private key: 32 bytes base64url')
  }
  t.equal(new Set(pairs.flatMap((p) => [p.publicKey, p.privateKey])).size, 6, 'all keys distinct')

  const { cluster, replicas } = await startKeyed(t, pairs, 'keygen-json')
  const [r1, r2, r3] = replicas as [Replica, Replica, Replica]
  const got: { to: number; from: number; text: string; verified: boolean }[] = []
  for (const rr of [r2, r3]) {
    rr.on('proof', (msg) => {
      const signature = msg.signature
      const verified = signature !== undefined && verifySigned(cluster, { from: msg.from, route: 'proof', id: msg.id, incarnation: msg.incarnation!, payload: msg.payload, signature })
      got.push({ to: rr.id, from: msg.from, text: msg.text(), verified })
    })
  }
  r1.broadcast('proof', 'signed with a keygen key', { sign: true })
  await until(() => got.length === 2, 10_000, 'the signed broadcast at both peers')
  t.same(
    got.sort((a, b) => a.to - b.to),
    [
      { to: 2, from: 1, text: 'signed with a keygen key', verified: true },
      { to: 3, from: 1, text: 'signed with a keygen key', verified: true },
    ],
    'a signed broadcast arrives with a signature verifySigned() accepts',
  )
})

t.test('keygen (text): one pair by default, with notes on where each key goes, usable as is', async (t) => {
  const r = await run(['keygen'], 20_000)
  t.equal(r.code, 0, 'exit code 0', { stderr: r.stderr })
  t.match(r.stdout, /publicKey: .*cluster\.replicas\[i\]\.publicKey/, 'says the public key goes into the cluster config')
  t.match(r.stdout, /privateKey: .*that replica only.*privateKey/, 'says the private key goes to its replica only')
  const pub = [...r.stdout.matchAll(/^\s+publicKey:\s+(\S+)$/gm)].map((m) => m[1]!)
  const priv = [...r.stdout.matchAll(/^\s+privateKey:\s+(\S+)$/gm)].map((m) => m[1]!)
  t.equal(pub.length, 1, 'one public key')
  t.equal(priv.length, 1, 'one private key')
  t.match(pub[0]!, B64URL_KEY)
  t.match(priv[0]!, B64URL_KEY)

  // Two runs, two pairs: a 2-replica cluster from keys copied out of the text.
  const r2 = await run(['keygen'], 20_000)
  const pub2 = /^\s+publicKey:\s+(\S+)$/m.exec(r2.stdout)?.[1]
  const priv2 = /^\s+privateKey:\s+(\S+)$/m.exec(r2.stdout)?.[1]
  t.ok(pub2 && priv2, 'second pair parsed', { stdout: r2.stdout })
  const { replicas } = await startKeyed(t, [{ publicKey: pub[0]!, privateKey: priv[0]! }, { publicKey: pub2!, privateKey: priv2! }], 'keygen-text')
  let seen = 0
  replicas[1]!.on('hi', (msg) => {
    if (msg.from === 1 && msg.text() === 'hi') seen++
  })
  replicas[0]!.send(2, 'hi', 'hi')
  await until(() => seen === 1, 10_000, 'a message over the authenticated link')
  t.equal(seen, 1, 'replicas started with the text keys talk to each other')
})
