// W1 on js-libp2p 3.x (TCP + Noise + Yamux, default options): one stream of a
// custom protocol from the sender to the receiver, messages framed with an
// unsigned-varint length prefix (it-length-prefixed), as libp2p protocols do.
// The sender batches frames: it appends them to a Uint8ArrayList and hands it
// to stream.send() once it holds 64 KiB or more, awaiting stream.onDrain()
// when send() returns false (the 3.x stream API's backpressure). The
// receiver decodes the stream's 'message' events with @libp2p/utils'
// LengthPrefixedDecoder and calls a handler per message that reads it.
//   node bench/w1-libp2p.mjs recv <count> <size> [warmup]   -> prints "ready <multiaddr>"
//   node bench/w1-libp2p.mjs send <multiaddr> <count> <size> [warmup]
// Same timing rules as bench/w1-net.mjs (warm-up messages not timed).
import { createNode, LengthPrefixedDecoder, listenAddr, multiaddr } from './libp2p-node.mjs'
import * as lp from 'it-length-prefixed'
import { Uint8ArrayList } from 'uint8arraylist'

const PROTOCOL = '/nexres-bench/w1/1.0.0'
const BATCH = 64 * 1024
// A bound on the whole process, far above what a run takes.
const LIFETIME_MS = 300_000
setTimeout(() => {
  process.stderr.write(`w1-libp2p: still running after ${LIFETIME_MS} ms, exiting\n`)
  process.exit(2)
}, LIFETIME_MS).unref()

const role = process.argv[2]

if (role === 'recv') {
  const [countArg, sizeArg, warmupArg] = process.argv.slice(3)
  const count = Number(countArg)
  const size = Number(sizeArg)
  const warmup = Number(warmupArg ?? 0)
  const total = count + warmup
  const node = await createNode({ listen: true })
  let got = 0
  let bytes = 0
  let sum = 0
  let first = 0
  let resolveDone
  const done = new Promise((resolve) => (resolveDone = resolve))
  const handler = (payload) => {
    if (got === 0) first = performance.now()
    sum += payload.get(0)
    bytes += payload.byteLength
    if (++got === warmup) {
      first = performance.now()
      bytes = 0
    }
    if (got === total) resolveDone(performance.now())
  }
  await node.handle(PROTOCOL, (stream) => {
    const decoder = new LengthPrefixedDecoder({ maxBufferSize: 64 * 1024 * 1024 })
    stream.addEventListener('message', (evt) => {
      for (const msg of decoder.decode(evt.data)) handler(msg)
    })
  })
  process.stdout.write(`ready ${listenAddr(node)}\n`)
  const last = await done
  const seconds = (last - first) / 1000
  process.stdout.write(JSON.stringify({ messages: got - warmup, bytes, seconds, checksum: sum }) + '\n')
  await node.stop()
  process.exit(0)
} else if (role === 'send') {
  const [addr, countArg, sizeArg, warmupArg] = process.argv.slice(3)
  const count = Number(countArg)
  const size = Number(sizeArg)
  const warmup = Number(warmupArg ?? 0)
  const total = count + warmup
  const node = await createNode({ listen: false })
  const stream = await node.dialProtocol(multiaddr(addr), PROTOCOL, { signal: AbortSignal.timeout(20_000) })
  const closed = new Promise((resolve) => stream.addEventListener('close', resolve, { once: true }))
  const payload = new Uint8Array(size).fill(0x5a)
  let batch = new Uint8ArrayList()
  for (let i = 0; i < total; i++) {
    batch.append(lp.encode.single(payload))
    if (batch.byteLength >= BATCH || i === total - 1) {
      // One contiguous buffer per batch: Noise encrypts and TCP writes chunk by
      // chunk, so a list of thousands of tiny chunks would cost per chunk.
      const ok = stream.send(batch.subarray())
      batch = new Uint8ArrayList()
      if (!ok) await stream.onDrain()
    }
  }
  // Close our end once everything is handed to the muxer, then wait for the
  // receiver to hang up once it has counted every message (bounded).
  await stream.close({ signal: AbortSignal.timeout(120_000) })
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 120_000).unref())])
  await node.stop()
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
