// W4: latency of an honest peer's messages while another peer floods the
// same receiver. Three processes, a three-replica cluster on loopback:
//   recv   replica 1: handlers for 'honest' (latency from the send-time
//          stamp in the payload; CLOCK_MONOTONIC is the same for every
//          process on the machine) and 'flood' (counts bytes)
//   flood  replica 2: sends 1 KiB messages to replica 1 as fast as it takes
//          them (waiting for 'drain' when send returns false)
//   honest replica 3: sends one 64-byte message every <intervalMs>
//   node bench/w4-flood.mjs recv   <p1> <p2> <p3> <warmupMs> <durationMs>
//   node bench/w4-flood.mjs flood  <p1> <p2> <p3> <ms>
//   node bench/w4-flood.mjs honest <p1> <p2> <p3> <intervalMs> <warmupMs> <durationMs>
// recv prints "ready", then one JSON line once honest says it is done.
import { build } from 'hdr-histogram-js'
import { Replica } from 'nexres-rpc'

import { paceHonest } from './honest.mjs'

const [role, ...rest] = process.argv.slice(2)
const [p1, p2, p3] = rest.slice(0, 3).map(Number)
const cluster = {
  id: 'w4',
  replicas: [
    { id: 1, host: '127.0.0.1', port: p1 },
    { id: 2, host: '127.0.0.1', port: p2 },
    { id: 3, host: '127.0.0.1', port: p3 },
  ],
}
const watchdog = setTimeout(() => {
  process.stderr.write(`w4 ${role}: still running after 120 s\n`)
  process.exit(2)
}, 120_000)
watchdog.unref()

if (role === 'recv') {
  const r = await Replica.start({ auth: 'none', id: 1, cluster })
  const h = build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 })
  let honest = 0
  let floodBytes = 0
  let floodMsgs = 0
  let floodAtStart = 0
  let measuring = false
  let t0 = 0
  r.on('flood', (msg) => {
    floodBytes += msg.payload.length
    floodMsgs++
  })
  r.on('honest', (msg) => {
    const p = msg.payload
    const sent = new DataView(p.buffer, p.byteOffset, p.byteLength).getBigUint64(0, true)
    const phase = p[8] // 0 warm-up, 1 measured, 2 done
    if (phase === 1) {
      if (!measuring) {
        measuring = true
        t0 = performance.now()
        floodAtStart = floodBytes
      }
      const us = Number(process.hrtime.bigint() - sent) / 1000
      h.recordValue(Math.max(1, Math.round(us)))
      honest++
    } else if (phase === 2) {
      const seconds = (performance.now() - t0) / 1000
      process.stdout.write(
        JSON.stringify({
          honest,
          p50: h.getValueAtPercentile(50),
          p99: h.getValueAtPercentile(99),
          p999: h.getValueAtPercentile(99.9),
          max: h.maxValue,
          floodBytesPerSec: (floodBytes - floodAtStart) / seconds,
          floodMsgs,
        }) + '\n',
      )
      void r.close({ timeoutMs: 0 }).then(() => process.exit(0))
    }
  })
  process.stdout.write('ready\n')
} else if (role === 'flood') {
  const ms = Number(rest[3])
  const r = await Replica.start({ auth: 'none', id: 2, cluster })
  await r.waitForPeers([1], { timeoutMs: 20_000 })
  const body = new Uint8Array(1024)
  const end = Date.now() + ms
  let sent = 0
  let stopped = false
  const stop = () => {
    stopped = true
    return r.close({ timeoutMs: 0 }).then(() => process.exit(0))
  }
  // The receiver closes once it has its result: stop then.
  r.events.on('peer-down', (p) => p === 1 && void stop())
  while (!stopped && Date.now() < end && sent < 50_000_000) {
    let ok = true
    for (let i = 0; i < 1000 && ok; i++, sent++) ok = r.send(1, 'flood', body)
    if (!ok) await new Promise((res) => r.events.once('drain', res))
    else await new Promise((res) => setImmediate(res))
  }
  if (!stopped) await stop()
} else if (role === 'honest') {
  const [intervalMs, warmupMs, durationMs] = rest.slice(3, 6).map(Number)
  const r = await Replica.start({ auth: 'none', id: 3, cluster })
  await r.waitForPeers([1], { timeoutMs: 20_000 })
  await paceHonest(r, 1, 'honest', intervalMs, warmupMs, durationMs)
  await r.close({ timeoutMs: 5000 })
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
