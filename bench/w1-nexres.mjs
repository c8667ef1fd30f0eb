// W1 one-way stream through nexres-rpc: replica 1 (sender) -> replica 2
// (receiver, counting in a JS handler that reads msg.payload).
//   node bench/w1-nexres.mjs recv|send <recvPort> <sendPort> <count> <size> [ioThreads] [warmup] [none|mac|seal] [signed|batch]
// With `batch` the receiver counts in an onBatch handler (no object per
// message) and the sender queues 64 messages per sendMany call.
// With `signed` (auth mac) the sender broadcasts with { sign: true } and the
// receiver counts only messages whose msg.signature is there (verified).
// The sender first sends `warmup` messages (JIT warm-up, not timed), then
// `count`; the receiver prints one JSON line once every message has arrived,
// timed from the first to the last of the `count` measured ones.
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto'

import { Replica } from 'nexres-rpc'

const [role, recvPort, sendPort, countArg, sizeArg, ioArg] = process.argv.slice(2)
const count = Number(countArg)
const size = Number(sizeArg)
const ioThreads = Number(ioArg ?? 2)
const warmup = Number(process.argv[8] ?? 0)
const total = count + warmup
const auth = process.argv[9] ?? 'none'
const signed = process.argv[10] === 'signed'
const batched = process.argv[10] === 'batch'
// With auth 'mac', fixed benchmark keys (seeds derived from the replica id):
// both processes know both public keys and their own private key.
const seedOf = (id) => createHash('sha256').update(`nexres-bench-replica-${id}`).digest()
const publicOf = (seed) =>
  createPublicKey(
    createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' }),
  ).export({ format: 'jwk' }).x
const withKey = (r) => (auth !== 'none' ? { ...r, publicKey: publicOf(seedOf(r.id)) } : r)
const cluster = {
  id: 'bench',
  replicas: [
    withKey({ id: 1, host: '127.0.0.1', port: Number(sendPort) }),
    withKey({ id: 2, host: '127.0.0.1', port: Number(recvPort) }),
  ],
}
const authOf = (id) => (auth !== 'none' ? { auth, privateKey: seedOf(id) } : { auth: 'none' })

if (role === 'recv') {
  const r = await Replica.start({ ...authOf(2), id: 2, cluster, ioThreads, reconnect: { maxMs: 50 } })
  let got = 0
  let bytes = 0
  let sum = 0
  let first = 0
  let firstAny = 0
  const done = new Promise((resolve) => {
    if (batched) {
      r.onBatch('w1', (b) => {
        const bytesView = b.bytes
        for (let i = 0; i < b.count; i++) {
          if (got === 0) firstAny = performance.now()
          sum += bytesView[b.offset(i)]
          bytes += b.length(i)
          if (++got === warmup) {
            first = performance.now()
            bytes = 0
          }
        }
        if (got === total) resolve(performance.now())
      })
      return
    }
    r.on('w1', (msg) => {
      const p = msg.payload
      if (signed && msg.signature === undefined) return
      if (got === 0) firstAny = performance.now()
      sum += p[0]
      bytes += p.length
      if (++got === warmup) {
        first = performance.now()
        bytes = 0
      }
      if (got === total) resolve(performance.now())
    })
  })
  process.stdout.write('ready\n')
  const last = await done
  if (warmup === 0) first = firstAny
  const seconds = (last - first) / 1000
  process.stdout.write(JSON.stringify({ messages: got - warmup, bytes, seconds, checksum: sum }) + '\n')
  await r.close({ timeoutMs: 0 })
} else {
  const r = await Replica.start({ ...authOf(1), id: 1, cluster, ioThreads, reconnect: { maxMs: 50 } })
  await r.waitForPeers([2], { timeoutMs: 20_000 })
  const payload = new Uint8Array(size).fill(0x5a)
  let drained = null
  r.events.on('drain', () => drained?.())
  if (batched) {
    const GROUP = 64
    const group = Array.from({ length: GROUP }, () => payload)
    for (let i = 0; i < total; i += GROUP) {
      const ok = r.sendMany(2, 'w1', total - i >= GROUP ? group : group.slice(0, total - i))
      if (!ok) await new Promise((resolve) => (drained = resolve))
    }
  } else {
    for (let i = 0; i < total; i++) {
      const ok = signed ? r.broadcast('w1', payload, { sign: true }) : r.send(2, 'w1', payload)
      if (!ok) await new Promise((resolve) => (drained = resolve))
    }
  }
  await r.close({ timeoutMs: 60_000 })
}
