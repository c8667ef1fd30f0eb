// The W2 closed loop, shared by every contender's client so that all of them
// are driven and measured the same way.
//
// `concurrency` workers each issue a call, await its reply, and issue the
// next one (C calls outstanding at all times). Replies that complete in the
// first `warmupMs` are not measured (JIT warm-up); replies that complete in
// the following `durationMs` are counted and their latency (issue -> reply
// seen by the awaiting worker) recorded in an HDR histogram in microseconds
// (3 significant digits). The loop stops at the end of the window or after
// `maxCalls` calls issued, whichever comes first, and prints one JSON line.
import { build } from 'hdr-histogram-js'

const HIGHEST_US = 60_000_000

export async function closedLoop({ call, size, concurrency, warmupMs, durationMs, maxCalls }) {
  const payload = Buffer.alloc(size) // a Buffer, which every contender takes as it is
  for (let i = 0; i < size; i++) payload[i] = (i * 7 + 1) & 0xff
  const h = build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 3, autoResize: false })
  const t0 = performance.now()
  const tStart = t0 + warmupMs
  const tEnd = tStart + durationMs
  let issued = 0
  let measured = 0
  let warm = 0
  let lastMeasured = tStart
  let stoppedBy = 'time'
  let cpu0 = null // process CPU time at the first measured reply
  const worker = async () => {
    for (;;) {
      if (issued >= maxCalls) {
        stoppedBy = 'count'
        return
      }
      issued++
      const s = performance.now()
      const reply = await call(payload)
      const e = performance.now()
      if (reply.length !== size || reply[0] !== payload[0] || reply[size - 1] !== payload[size - 1]) {
        throw new Error(`wrong reply: ${reply.length} bytes`)
      }
      if (e >= tEnd) return
      if (e >= tStart) {
        if (cpu0 === null) cpu0 = process.cpuUsage()
        const us = Math.round((e - s) * 1000)
        h.recordValue(us < 1 ? 1 : us > HIGHEST_US ? HIGHEST_US : us)
        measured++
        lastMeasured = e
      } else {
        warm++
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return loopResult({ h, measured, warm, stoppedBy, durationMs, window: lastMeasured - tStart, cpu0 })
}

// The JSON line of a closed loop (also bench/w2-raw.mjs's): rates over the
// window, or over the measured part of it when the call bound stopped it.
// cpu0: process.cpuUsage() at the first measured reply; clientCpuUs is the
// client process's CPU time (every thread, user + system) from then to now
// per measured call.
export function loopResult({ h, measured, warm, stoppedBy, durationMs, window, cpu0 }) {
  const seconds = (stoppedBy === 'time' ? durationMs : window) / 1000
  if (measured === 0) throw new Error('no call completed in the measured window')
  const cpu = cpu0 === null ? null : process.cpuUsage(cpu0)
  return {
    clientCpuUs: cpu === null ? null : (cpu.user + cpu.system) / measured,
    calls: measured,
    seconds,
    reqPerSec: measured / seconds,
    p50: h.getValueAtPercentile(50),
    p90: h.getValueAtPercentile(90),
    p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9),
    max: h.maxValue,
    mean: h.mean,
    warmupCalls: warm,
    stoppedBy,
  }
}

// A W2 server: exits on SIGTERM, listens on 127.0.0.1:port, says "ready <port>".
export function serve(server, port) {
  process.once('SIGTERM', () => process.exit(0))
  server.listen(port, '127.0.0.1', () => process.stdout.write(`ready ${server.address().port}\n`))
}

// A W2 client's connection to 127.0.0.1:port, Nagle off.
export async function connectTo(net, port) {
  const s = net.connect({ host: '127.0.0.1', port, noDelay: true })
  await new Promise((resolve, reject) => {
    s.once('connect', resolve)
    s.once('error', reject)
  })
  return s
}

// argv of a client role: <port> <concurrency> <size> <warmupMs> <durationMs> <maxCalls>
export function clientArgs(argv) {
  const [port, concurrency, size, warmupMs, durationMs, maxCalls] = argv.map(Number)
  for (const [k, v] of Object.entries({ port, concurrency, size, warmupMs, durationMs, maxCalls })) {
    if (!Number.isFinite(v) || v < 0) throw new Error(`bad ${k}: ${v}`)
  }
  return { port, concurrency, size, warmupMs, durationMs, maxCalls }
}

// Runs the loop, prints its JSON line and exits; exits with status 2 if the
// loop has not finished 30 s after its window should have ended.
export async function runClient(a, call) {
  const watchdog = setTimeout(() => {
    process.stderr.write(`w2 client: no result ${a.warmupMs + a.durationMs + 30_000} ms after start\n`)
    process.exit(2)
  }, a.warmupMs + a.durationMs + 30_000)
  const r = await closedLoop({ call, ...a })
  clearTimeout(watchdog)
  process.stdout.write(JSON.stringify(r) + '\n')
}
