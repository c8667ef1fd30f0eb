// W2 yardstick: a raw node:net request/response loop with no promise and no
// closure per request (issue 16's "raw net loop"). Frames as in
// bench/w2-net.mjs (u32 length, u32 id, payload). The server answers every
// request of a read in one write; the client keeps C calls outstanding as
// slots (id -> start time in a Float64Array), issues the next call of a slot
// as soon as its reply is parsed, and writes all the calls issued while
// handling one read in one write. Same window, warm-up and HDR recording as
// the closed loop of w2-loop.mjs; the JSON line has the same fields.
//   node bench/w2-raw.mjs server <port>                 -> prints "ready <port>"
//   node bench/w2-raw.mjs client <port> <C> <size> <warmupMs> <durationMs> <maxCalls>
import net from 'node:net'

import { build } from 'hdr-histogram-js'

import { clientArgs, connectTo, loopResult, serve } from './w2-loop.mjs'

const HDR = 8
const HIGHEST_US = 60_000_000

// Parses complete frames of `buf` from `p`; for each, f(id, start, length)
// of its payload. Returns where the first incomplete frame starts.
function frames(buf, f) {
  let p = 0
  const end = buf.length
  while (end - p >= HDR) {
    const len = buf.readUInt32LE(p)
    if (end - p - HDR < len) break
    f(buf.readUInt32LE(p + 4), p + HDR, len)
    p += HDR + len
  }
  return p
}

const [role, ...rest] = process.argv.slice(2)

if (role === 'server') {
  const server = net.createServer((s) => {
    s.setNoDelay(true)
    let leftover = null
    s.on('data', (chunk) => {
      const buf = leftover === null ? chunk : Buffer.concat([leftover, chunk])
      leftover = null
      // The echo of every complete request: the same bytes, one write.
      const done = frames(buf, () => {})
      if (done > 0) s.write(buf.subarray(0, done))
      if (done < buf.length) leftover = Buffer.from(buf.subarray(done))
    })
    s.on('error', () => {})
  })
  serve(server, Number(rest[0]))
} else if (role === 'client') {
  const a = clientArgs(rest)
  const s = await connectTo(net, a.port)
  const size = a.size
  const payload = Buffer.alloc(size)
  for (let i = 0; i < size; i++) payload[i] = (i * 7 + 1) & 0xff
  const h = build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 3, autoResize: false })
  const started = new Float64Array(a.concurrency) // slot -> issue time (ms)
  let out = Buffer.allocUnsafe(a.concurrency * (HDR + size))
  let pos = 0
  let issued = 0
  let measured = 0
  let warm = 0
  let lastMeasured = 0
  let stoppedBy = 'time'
  let cpu0 = null
  let open = a.concurrency
  const t0 = performance.now()
  const tStart = t0 + a.warmupMs
  const tEnd = tStart + a.durationMs
  const issue = (slot, now) => {
    if (issued >= a.maxCalls) {
      stoppedBy = 'count'
      open--
      return
    }
    if (now >= tEnd) {
      open--
      return
    }
    issued++
    started[slot] = now
    out.writeUInt32LE(size, pos)
    out.writeUInt32LE(slot, pos + 4)
    payload.copy(out, pos + HDR)
    pos += HDR + size
  }
  const flush = () => {
    if (pos === 0) return
    s.write(out.subarray(0, pos))
    out = Buffer.allocUnsafe(a.concurrency * (HDR + size))
    pos = 0
  }
  let resolveDone
  const done = new Promise((r) => (resolveDone = r))
  let leftover = null
  s.on('data', (chunk) => {
    const buf = leftover === null ? chunk : Buffer.concat([leftover, chunk])
    leftover = null
    const now = performance.now()
    const used = frames(buf, (slot, start, len) => {
      if (len !== size || (size > 0 && (buf[start] !== payload[0] || buf[start + size - 1] !== payload[size - 1]))) throw new Error(`wrong reply: ${len} bytes`)
      if (now < tEnd) {
        if (now >= tStart) {
          if (cpu0 === null) cpu0 = process.cpuUsage()
          const us = Math.round((now - started[slot]) * 1000)
          h.recordValue(us < 1 ? 1 : us > HIGHEST_US ? HIGHEST_US : us)
          measured++
          lastMeasured = now
        } else {
          warm++
        }
      }
      issue(slot, now)
    })
    if (used < buf.length) leftover = Buffer.from(buf.subarray(used))
    flush()
    if (open === 0) resolveDone()
  })
  const now = performance.now()
  for (let i = 0; i < a.concurrency; i++) issue(i, now)
  flush()
  const watchdog = setTimeout(() => {
    process.stderr.write('w2-raw client: no result in time\n')
    process.exit(2)
  }, a.warmupMs + a.durationMs + 30_000)
  await done
  clearTimeout(watchdog)
  process.stdout.write(JSON.stringify(loopResult({ h, measured, warm, stoppedBy, durationMs: a.durationMs, window: lastMeasured - tStart, cpu0 })) + '\n')
  s.destroy()
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
