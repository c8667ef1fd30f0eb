// W2 baseline on plain node:net, written well. Frames are a 4-byte length
// (of the payload) and a 4-byte request id, both little-endian, then the
// payload. Both sides stage frames in one buffer and write once per tick
// (a microtask flush, as nexres-rpc's client does); both parse in place and
// hand out zero-copy views; the client matches replies to calls by id.
//   node bench/w2-net.mjs server <port>                 -> prints "ready <port>"
//   node bench/w2-net.mjs client <port> <C> <size> <warmupMs> <durationMs> <maxCalls>
import net from 'node:net'

import { clientArgs, connectTo, runClient, serve } from './w2-loop.mjs'

const HDR = 8
const STAGE = 256 * 1024

// A per-connection writer: frames are copied into a staging buffer and the
// staged bytes go out in one socket.write per tick.
function writer(socket) {
  let stage = Buffer.allocUnsafe(STAGE)
  let pos = 0
  let scheduled = false
  const flush = () => {
    scheduled = false
    if (pos === 0) return
    socket.write(stage.subarray(0, pos))
    // The socket keeps what it was given: continue in the rest of the buffer.
    stage = STAGE - pos >= 4096 ? stage.subarray(pos) : Buffer.allocUnsafe(STAGE)
    pos = 0
  }
  return (id, body) => {
    const need = HDR + body.length
    if (pos + need > stage.length) {
      flush()
      if (need > stage.length) stage = Buffer.allocUnsafe(Math.max(STAGE, need))
    }
    stage.writeUInt32LE(body.length, pos)
    stage.writeUInt32LE(id, pos + 4)
    stage.set(body, pos + HDR)
    pos += need
    if (!scheduled) {
      scheduled = true
      queueMicrotask(flush)
    }
  }
}

// Calls onFrame(id, view) for every complete frame; views are valid only
// during the call.
function reader(onFrame) {
  let leftover = null
  return (chunk) => {
    let buf = chunk
    if (leftover !== null) {
      buf = Buffer.concat([leftover, chunk])
      leftover = null
    }
    let p = 0
    const end = buf.length
    while (end - p >= HDR) {
      const len = buf.readUInt32LE(p)
      if (end - p - HDR < len) break
      onFrame(buf.readUInt32LE(p + 4), buf.subarray(p + HDR, p + HDR + len))
      p += HDR + len
    }
    if (p < end) leftover = buf.subarray(p)
  }
}

const [role, ...rest] = process.argv.slice(2)

if (role === 'server') {
  const handler = (req) => req
  const server = net.createServer((s) => {
    s.setNoDelay(true)
    const send = writer(s)
    s.on('data', reader((id, req) => send(id, handler(req))))
    s.on('error', () => {})
  })
  serve(server, Number(rest[0]))
} else if (role === 'client') {
  const a = clientArgs(rest)
  const s = await connectTo(net, a.port)
  const pending = new Map()
  let nextId = 0
  const send = writer(s)
  s.on(
    'data',
    reader((id, body) => {
      const resolve = pending.get(id)
      if (resolve === undefined) return
      pending.delete(id)
      resolve(body)
    }),
  )
  s.once('close', () => {
    for (const [, resolve] of pending) resolve(new Uint8Array(0)) // fails the size check
    pending.clear()
  })
  const call = (payload) => {
    const id = (nextId = (nextId + 1) >>> 0)
    send(id, payload)
    return new Promise((resolve) => pending.set(id, resolve))
  }
  await runClient(a, call)
  s.destroy()
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
