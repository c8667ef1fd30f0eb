// The honest sender of W4 and W7: a 64-byte message to replica `to` every
// `intervalMs`, paced by the clock, not by the previous send (no coordinated
// omission). Bytes 0-7: the send time (process.hrtime, the machine-wide
// monotonic clock); byte 8: the phase (0 warm-up, 1 measured, 2 done, the
// last message).
export async function paceHonest(r, to, route, intervalMs, warmupMs, durationMs) {
  const body = new Uint8Array(64)
  const dv = new DataView(body.buffer)
  const t0 = Date.now()
  const total = Math.ceil((warmupMs + durationMs) / intervalMs)
  for (let i = 0; i < total; i++) {
    const due = t0 + i * intervalMs
    const wait = due - Date.now()
    if (wait > 0) await new Promise((res) => setTimeout(res, wait))
    body[8] = Date.now() - t0 < warmupMs ? 0 : 1
    dv.setBigUint64(0, process.hrtime.bigint(), true)
    r.send(to, route, body)
    r.flush()
  }
  body[8] = 2
  dv.setBigUint64(0, process.hrtime.bigint(), true)
  r.send(to, route, body)
}
