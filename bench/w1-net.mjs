// W1 baseline on plain node:net, written well: 4-byte length prefix, frames
// coalesced into one write per tick (or per 1 MiB), write backpressure
// respected; the receiver parses in place and calls a handler per message
// with a zero-copy view, like nexres-rpc does.
//   node bench/w1-net.mjs recv|send <port> <count> <size> [warmup]
// Same timing rules as bench/w1-nexres.mjs (warm-up messages not timed).
import net from 'node:net'

const [role, portArg, countArg, sizeArg] = process.argv.slice(2)
const port = Number(portArg)
const count = Number(countArg)
const size = Number(sizeArg)
const warmup = Number(process.argv[6] ?? 0)
const total = count + warmup

if (role === 'recv') {
  let got = 0
  let bytes = 0
  let sum = 0
  let first = 0
  const handler = (payload) => {
    if (got === 0) first = performance.now()
    sum += payload[0]
    bytes += payload.length
    if (++got === warmup) {
      first = performance.now()
      bytes = 0
    }
    if (got === total) {
      const seconds = (performance.now() - first) / 1000
      process.stdout.write(JSON.stringify({ messages: got - warmup, bytes, seconds, checksum: sum }) + '\n')
      server.close()
      socket?.destroy()
    }
  }
  let socket
  const server = net.createServer((s) => {
    socket = s
    s.setNoDelay(true)
    let pending = null // leftover bytes of a partial frame
    s.on('data', (chunk) => {
      let buf = chunk
      if (pending !== null) {
        buf = Buffer.concat([pending, chunk])
        pending = null
      }
      let p = 0
      const end = buf.length
      while (end - p >= 4) {
        const len = buf.readUInt32LE(p)
        if (end - p - 4 < len) break
        handler(new Uint8Array(buf.buffer, buf.byteOffset + p + 4, len))
        p += 4 + len
      }
      if (p < end) pending = buf.subarray(p)
    })
  })
  server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'))
} else {
  const payload = new Uint8Array(size).fill(0x5a)
  const s = net.connect(port, '127.0.0.1')
  s.setNoDelay(true)
  await new Promise((resolve, reject) => {
    s.once('connect', resolve)
    s.once('error', reject)
  })
  const STAGE = 1024 * 1024
  // Small frames are copied into a per-tick staging buffer; large payloads
  // are written as they are (cork/uncork groups them into one writev).
  let stage = Buffer.allocUnsafe(STAGE)
  let pos = 0
  const flush = () => {
    if (pos === 0) return true
    const out = stage.subarray(0, pos)
    stage = Buffer.allocUnsafe(STAGE)
    pos = 0
    return s.write(out)
  }
  let ok = true
  for (let i = 0; i < total; i++) {
    if (size + 4 > STAGE / 4) {
      const hdr = Buffer.allocUnsafe(4)
      hdr.writeUInt32LE(size, 0)
      s.cork()
      s.write(hdr)
      ok = s.write(payload)
      process.nextTick(() => s.uncork())
    } else {
      if (pos + 4 + size > STAGE) ok = flush()
      stage.writeUInt32LE(size, pos)
      stage.set(payload, pos + 4)
      pos += 4 + size
    }
    if (!ok) {
      flush()
      await new Promise((resolve) => s.once('drain', resolve))
      ok = true
    }
  }
  flush()
  s.end()
  await new Promise((resolve) => s.once('close', resolve))
}
