// W5: signed messages at one receiver. One process per replica; replica 1
// receives, the others send.
//   node bench/w5-signed.mjs '<json>'
// json: { role: 'recv' | 'flood' | 'honest', id, ports: [p1, p2, ...],
//         auth: 'mac' | 'seal', count, size, warmup, floods: [ids], honest: id | 0,
//         honestMs }
//   flood:  sends warmup + count messages of `size` bytes to replica 1 with
//           { sign: true }, as fast as 'drain' allows.
//   honest: sends one signed 16-byte message every 2 ms (u64 counter, f64
//           send time) for honestMs.
//   recv:   counts signed messages from the flooders (only those whose
//           msg.signature is there: verified), timed from the end of every
//           flooder's warm-up to the last message; records the latency of
//           the honest peer's messages. Prints one JSON line when the
//           flooders' messages (or, with no flooder, the honest peer's) are in.
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto'

import { Replica } from 'nexres-rpc'

const cfg = JSON.parse(process.argv[2])
const seedOf = (id) => createHash('sha256').update(`nexres-bench-replica-${id}`).digest()
const publicOf = (seed) =>
  createPublicKey(
    createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' }),
  ).export({ format: 'jwk' }).x
const cluster = {
  id: 'bench-w5',
  replicas: cfg.ports.map((port, i) => ({ id: i + 1, host: '127.0.0.1', port, publicKey: publicOf(seedOf(i + 1)) })),
}
const r = await Replica.start({ auth: cfg.auth, privateKey: seedOf(cfg.id), id: cfg.id, cluster, reconnect: { maxMs: 50 } })
const now = () => performance.timeOrigin + performance.now()

if (cfg.role === 'recv') {
  const floods = cfg.floods.length
  const perSender = new Map()
  let got = 0
  let first = 0
  let last = 0
  let warmedUp = 0
  const lat = []
  let honestDone = false
  const target = floods * cfg.count
  const done = new Promise((resolve) => {
    r.on('w5', (msg) => {
      if (msg.signature === undefined) return
      const n = (perSender.get(msg.from) ?? 0) + 1
      perSender.set(msg.from, n)
      if (n === cfg.warmup && ++warmedUp === floods) first = performance.now()
      if (n > cfg.warmup && ++got === target) {
        last = performance.now()
        resolve()
      }
    })
    r.on('h', (msg) => {
      if (msg.signature === undefined) return
      const dv = new DataView(msg.payload.buffer, msg.payload.byteOffset, 16)
      const n = Number(dv.getBigUint64(0, true))
      if (n >= 0) lat.push(now() - dv.getFloat64(8, true))
    })
    r.on('h-end', () => {
      honestDone = true
      if (floods === 0) resolve()
    })
  })
  process.stdout.write('ready\n')
  await done
  // With a flooder, the honest peer's latency counts while the flood ran.
  if (floods > 0 && cfg.honest !== 0) while (!honestDone) await new Promise((res) => setTimeout(res, 10))
  const sorted = lat.slice().sort((a, b) => a - b)
  const q = (p) => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))])
  process.stdout.write(
    JSON.stringify({ messages: got, seconds: floods > 0 ? (last - first) / 1000 : 0, honest: lat.length, p50: q(0.5), p99: q(0.99) }) + '\n',
  )
  await r.close({ timeoutMs: 0 })
} else if (cfg.role === 'flood') {
  await r.waitForPeers([1], { timeoutMs: 20_000 })
  const payload = new Uint8Array(cfg.size).fill(0x5a)
  let drained = null
  r.events.on('drain', () => drained?.())
  for (let i = 0; i < cfg.warmup + cfg.count; i++) {
    if (!r.send(1, 'w5', payload, { sign: true })) await new Promise((resolve) => (drained = resolve))
  }
  await r.close({ timeoutMs: 120_000 })
} else {
  await r.waitForPeers([1], { timeoutMs: 20_000 })
  const payload = new Uint8Array(16)
  const dv = new DataView(payload.buffer)
  const end = performance.now() + cfg.honestMs
  for (let n = 0; performance.now() < end; n++) {
    dv.setBigUint64(0, BigInt(n), true)
    dv.setFloat64(8, now(), true)
    r.send(1, 'h', payload, { sign: true })
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
  r.send(1, 'h-end', '')
  await r.close({ timeoutMs: 30_000 })
}
