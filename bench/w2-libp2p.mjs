// W2 on js-libp2p 3.x (TCP + Noise + Yamux, default options), one connection
// from the client node to the server node. Messages are framed with an
// unsigned-varint length prefix (it-length-prefixed), decoded from a stream's
// 'message' events with @libp2p/utils' LengthPrefixedDecoder, and written
// with the 3.x stream.send(). Two ways to carry C outstanding calls:
//
// - pipelined (the default, what run.mjs measures): one stream of the echo
//   protocol carrying every call. The client stages the request frames issued
//   in a tick and sends them as one buffer (a microtask flush, like the
//   node:net contender); the server answers each batch of requests that a
//   'message' event brings with one send of the replies. A stream is ordered
//   and the server answers in order, so the client matches replies to calls
//   first-in first-out, without request ids.
// - streams: one stream per call slot (C streams), each carrying one
//   request/response at a time, one send per frame: multiplexing left to
//   Yamux. Far slower here (every frame is its own Yamux frame, Noise
//   message and several socket writes); kept for comparison.
//
//   node bench/w2-libp2p.mjs server <port>              -> prints "ready <port> <peer id>"
//   node bench/w2-libp2p.mjs client <port> <C> <size> <warmupMs> <durationMs> <maxCalls> <peer id> [pipelined|streams]
import { createNode, LengthPrefixedDecoder, listenAddr, multiaddr } from './libp2p-node.mjs'
import * as lp from 'it-length-prefixed'
import { Uint8ArrayList } from 'uint8arraylist'

import { clientArgs, runClient } from './w2-loop.mjs'

const PROTOCOL = '/nexres-bench/echo/1.0.0'
// Streams a client may open for the protocol: above any C that run.mjs allows.
const MAX_STREAMS = 10_240
// Room for a large burst of frames in one 'message' event (Yamux may deliver
// up to its 16 MiB stream window at once).
const MAX_BUFFER = 64 * 1024 * 1024

// Frames (each a Uint8ArrayList from lp.encode.single) as one contiguous
// buffer: Noise encrypts and TCP writes chunk by chunk, so one buffer is one
// Noise message and one socket write instead of several per frame.
const contiguous = (list) => list.subarray()

const [role, ...rest] = process.argv.slice(2)

if (role === 'server') {
  const node = await createNode({ listen: true, port: Number(rest[0]) })
  const handler = (req) => req
  await node.handle(
    PROTOCOL,
    (stream) => {
      const decoder = new LengthPrefixedDecoder({ maxBufferSize: MAX_BUFFER })
      stream.addEventListener('message', (evt) => {
        const out = new Uint8ArrayList()
        for (const req of decoder.decode(evt.data)) out.append(lp.encode.single(handler(req)))
        if (out.byteLength > 0) stream.send(contiguous(out))
      })
    },
    { maxInboundStreams: MAX_STREAMS },
  )
  process.once('SIGTERM', () => process.exit(0))
  const [, port, peer] = /^\/ip4\/127\.0\.0\.1\/tcp\/(\d+)\/p2p\/(\w+)$/.exec(listenAddr(node))
  process.stdout.write(`ready ${port} ${peer}\n`)
} else if (role === 'client') {
  const a = clientArgs(rest.slice(0, 6))
  const peer = rest[6]
  const mode = rest[7] ?? 'pipelined'
  if (!peer) throw new Error('client: the server peer id is missing')
  if (mode !== 'pipelined' && mode !== 'streams') throw new Error(`client: unknown mode ${mode}`)
  const node = await createNode({ listen: false })
  const conn = await node.dial(multiaddr(`/ip4/127.0.0.1/tcp/${a.port}/p2p/${peer}`), { signal: AbortSignal.timeout(20_000) })
  const open = () => conn.newStream(PROTOCOL, { maxOutboundStreams: MAX_STREAMS, signal: AbortSignal.timeout(20_000) })
  // Calls onReply(view) for each reply on the stream, and onClose() once.
  const listen = (stream, onReply, onClose) => {
    const decoder = new LengthPrefixedDecoder({ maxBufferSize: MAX_BUFFER })
    stream.addEventListener('message', (evt) => {
      for (const reply of decoder.decode(evt.data)) onReply(reply.subarray())
    })
    stream.addEventListener('close', onClose, { once: true })
  }
  let call
  if (mode === 'pipelined') {
    const stream = await open()
    const waiting = [] // resolvers of the calls in flight, oldest first
    let head = 0
    listen(
      stream,
      (reply) => {
        const resolve = waiting[head]
        waiting[head++] = undefined
        if (head === waiting.length) waiting.length = head = 0
        resolve?.(reply)
      },
      // A stream that ends fails the calls in flight (the reply size check).
      () => waiting.splice(0).forEach((resolve) => resolve?.(new Uint8Array(0))),
    )
    let staged = new Uint8ArrayList()
    let scheduled = false
    const flush = () => {
      scheduled = false
      const out = contiguous(staged)
      staged = new Uint8ArrayList()
      stream.send(out)
    }
    call = (payload) =>
      new Promise((resolve) => {
        waiting.push(resolve)
        staged.append(lp.encode.single(payload))
        if (!scheduled) {
          scheduled = true
          queueMicrotask(flush)
        }
      })
  } else {
    const free = await Promise.all(
      Array.from({ length: a.concurrency }, async () => {
        const slot = { stream: await open(), resolve: null }
        const settle = (reply) => {
          const resolve = slot.resolve
          slot.resolve = null
          resolve?.(reply)
        }
        listen(slot.stream, settle, () => settle(new Uint8Array(0)))
        return slot
      }),
    )
    call = (payload) => {
      const slot = free.pop() // never empty: at most C calls are outstanding
      return new Promise((resolve) => {
        slot.resolve = (reply) => {
          free.push(slot)
          resolve(reply)
        }
        slot.stream.send(contiguous(lp.encode.single(payload)))
      })
    }
  }
  await runClient(a, call)
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
