// One raw-peer harness for the tests that play a hostile or broken replica
// against a replica's port (hostile-peers, hostile-limits; byzantine-peer.ts
// adds the 'mac' handshake on top, client-support.ts the client port): frame and HELLO
// builders, a frame parser, a raw node:net connection that collects what the
// server writes, and the honest stream that must keep arriving meanwhile.
import { randomBytes } from 'node:crypto'
import { type Socket, connect } from 'node:net'

import { type ClusterConfig, type RejectInfo, Replica, type ReplicaOptions } from 'nexres-rpc'

import * as wire from '../lib/wire.js'
import { type Tap, loopbackCluster, until } from './helpers.js'

export const MAGIC = Buffer.from('NXRP', 'latin1')
export const HELLO_FIXED = wire.HELLO_FIXED_BYTES
export const FRAME_HEADER = wire.HEADER_BYTES
export const KIND_DATA = wire.KIND_DATA
export const KIND_ACK = 2
export const KIND_REJECT = wire.KIND_REJECT
export const KIND_PING = 4
export const KIND_PONG = 5
export const KIND_SEAL = 9
export const KIND_AUTH = 10
export const TYPE_HELLO = 1
export const TYPE_WELCOME = 2

/** How long a harness wait lasts before it fails the test. */
export const DEADLINE = 10_000

/** FNV-1a 32 of the route name's UTF-8 bytes (PROTOCOL.md §3). */
export function routeId(name: string): number {
  let h = 0x811c9dc5
  for (const b of Buffer.from(name, 'utf8')) {
    h ^= b
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

export interface HelloFields {
  clusterId: string
  sender: number
  magic?: Buffer
  version?: number
  type?: number
  auth?: number
  incarnation?: bigint
  /** Defaults to the cluster id's byte length. */
  clusterIdLength?: number
  /** Defaults to the body's byte length (cluster id and `ext`). */
  bodyLength?: number
  /** Bytes after the cluster id (the auth modes' handshake extension). */
  ext?: Buffer
}

/** HELLO: 32-byte fixed part (PROTOCOL.md §2) then the cluster id bytes (and `ext`). */
export function hello(f: HelloFields): Buffer {
  const cid = Buffer.from(f.clusterId, 'utf8')
  const ext = f.ext ?? Buffer.alloc(0)
  const b = Buffer.alloc(HELLO_FIXED)
  ;(f.magic ?? MAGIC).copy(b, 0, 0, 4)
  b.writeUInt16LE(f.version ?? 1, 4)
  b.writeUInt16LE(f.type ?? TYPE_HELLO, 6)
  b.writeUInt16LE(f.auth ?? 0, 8)
  b.writeUInt8(f.clusterIdLength ?? cid.length, 10)
  b.writeUInt8(0, 11)
  b.writeUInt32LE(f.sender >>> 0, 12)
  b.writeBigUInt64LE(f.incarnation ?? randomBytes(8).readBigUInt64LE(0), 16)
  b.writeUInt32LE(f.bodyLength ?? cid.length + ext.length, 24)
  b.writeUInt32LE(0, 28)
  return Buffer.concat([b, cid, ext])
}

export interface FrameFields {
  length: number
  route?: number
  sender: number
  kind?: number
  flags?: number
  reserved?: number
  msgId: bigint | number
}

/** Frame header (PROTOCOL.md §3), 24 bytes. */
export function frameHeader(f: FrameFields): Buffer {
  const b = Buffer.alloc(FRAME_HEADER)
  b.writeUInt32LE(f.length >>> 0, 0)
  b.writeUInt32LE((f.route ?? 0) >>> 0, 4)
  b.writeUInt32LE(f.sender >>> 0, 8)
  b.writeUInt8(f.kind ?? KIND_DATA, 12)
  b.writeUInt8(f.flags ?? 0, 13)
  b.writeUInt16LE(f.reserved ?? 0, 14)
  b.writeBigUInt64LE(BigInt(f.msgId), 16)
  return b
}

/** A whole DATA frame. */
export function dataFrame(sender: number, route: string, msgId: bigint | number, body: Uint8Array = new Uint8Array(0)): Buffer {
  return Buffer.concat([frameHeader({ length: body.byteLength, route: routeId(route), sender, msgId }), body])
}

export interface Frame {
  length: number
  route: number
  sender: number
  kind: number
  flags: number
  reserved: number
  msgId: bigint
  body: Buffer
}

export function parseFrame(buf: Buffer, at: number): Frame | undefined {
  if (buf.length - at < FRAME_HEADER) return undefined
  const length = buf.readUInt32LE(at)
  if (buf.length - at - FRAME_HEADER < length) return undefined
  return {
    length,
    route: buf.readUInt32LE(at + 4),
    sender: buf.readUInt32LE(at + 8),
    kind: buf.readUInt8(at + 12),
    flags: buf.readUInt8(at + 13),
    reserved: buf.readUInt16LE(at + 14),
    msgId: buf.readBigUInt64LE(at + 16),
    body: buf.subarray(at + FRAME_HEADER, at + FRAME_HEADER + length),
  }
}

// ------------------------------------------------------------ raw connection

/** A raw TCP connection to a replica port; collects what the server writes. */
export class RawPeer {
  readonly sock: Socket
  rx = Buffer.alloc(0)
  /** Read position: bytes before it have been consumed by a read* call. */
  pos = 0
  /** The server ended or reset the connection (we never end it first unless told). */
  serverClosed = false
  closed = false
  error: Error | undefined
  private connected = false
  /** Our local port, kept after the socket is destroyed (names us in 'reject' events). */
  localPort = -1
  /** When the server closed the connection (Date.now()). */
  closedAt = 0

  constructor(port: number) {
    this.sock = connect({ port, host: '127.0.0.1', noDelay: true })
    this.sock.on('connect', () => {
      this.connected = true
      this.localPort = this.sock.localPort ?? -1
    })
    this.sock.on('data', (d: Buffer) => (this.rx = Buffer.concat([this.rx, d])))
    const gone = (): void => {
      if (!this.serverClosed) this.closedAt = Date.now()
      this.serverClosed = true
    }
    this.sock.on('end', gone)
    this.sock.on('error', (e) => {
      this.error = e
      gone()
    })
    this.sock.on('close', () => {
      gone()
      this.closed = true
    })
  }

  async ready(): Promise<void> {
    await until(() => this.connected || this.closed, DEADLINE, 'raw socket connect')
    if (!this.connected) throw new Error(`raw socket did not connect: ${String(this.error)}`)
  }

  write(b: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      // Errors (EPIPE/ECONNRESET after a refusal) show up on 'error'.
      if (this.sock.destroyed) return resolve()
      this.sock.write(b, () => resolve())
    })
  }

  /** Waits for `n` unread bytes (or the close); returns them, consumed. */
  async readExactly(n: number, what: string, ms = DEADLINE): Promise<Buffer> {
    await until(() => this.rx.length - this.pos >= n || this.serverClosed, ms, what)
    // Data may race with the close notification; give it a moment.
    if (this.rx.length - this.pos < n) await new Promise((r) => setTimeout(r, 20))
    if (this.rx.length - this.pos < n) {
      throw new Error(`${what}: connection closed after ${this.rx.length - this.pos} of ${n} bytes`)
    }
    const out = this.rx.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  /** Next complete frame, consumed. */
  async readFrame(what: string, ms = DEADLINE): Promise<Frame> {
    const head = await this.readExactly(FRAME_HEADER, `${what} (header)`, ms)
    const length = head.readUInt32LE(0)
    if (length > 1 << 20) throw new Error(`${what}: implausible frame length ${length}`)
    const body = await this.readExactly(length, `${what} (body)`, ms)
    return parseFrame(Buffer.concat([head, body]), 0)!
  }

  /** Skips ACK frames; returns the first other frame. */
  async readNonAck(what: string, ms = DEADLINE): Promise<{ frame: Frame; acks: bigint[] }> {
    const acks: bigint[] = []
    const end = Date.now() + ms
    for (;;) {
      const f = await this.readFrame(what, Math.max(1, end - Date.now()))
      if (f.kind !== KIND_ACK) return { frame: f, acks }
      acks.push(f.msgId)
    }
  }

  /** Frames the server wrote so far (from the read position), not consumed. */
  frames(): Frame[] {
    const out: Frame[] = []
    for (let at = this.pos, f = parseFrame(this.rx, at); f !== undefined; at += FRAME_HEADER + f.length, f = parseFrame(this.rx, at)) out.push(f)
    return out
  }

  /** The REJECT code the server sent (ACK and PONG frames skipped), if any. */
  rejectCode(): number | undefined {
    const r = this.frames().find((f) => f.kind === KIND_REJECT)
    return r === undefined ? undefined : r.body.readUInt16LE(0)
  }

  /** Writes `bytes` one at a time, `gapMs` apart, until done or the server closes. */
  trickle(bytes: Buffer, gapMs: number): { firstByteAt: Promise<number>; done: Promise<void> } {
    let first!: (at: number) => void
    const firstByteAt = new Promise<number>((r) => (first = r))
    const done = (async () => {
      for (let i = 0; i < bytes.length && !this.serverClosed; i++) {
        await this.write(bytes.subarray(i, i + 1))
        if (i === 0) first(Date.now())
        await new Promise((r) => setTimeout(r, gapMs))
      }
    })()
    return { firstByteAt, done }
  }

  /** Sends HELLO as `sender` and reads the WELCOME (from `expectReplica` when given); returns it. */
  async handshake(clusterId: string, sender: number, expectReplica?: number): Promise<Buffer> {
    await this.write(hello({ clusterId, sender }))
    const fixed = await this.readExactly(HELLO_FIXED, 'WELCOME')
    if (!fixed.subarray(0, 4).equals(MAGIC)) throw new Error(`WELCOME has bad magic ${fixed.toString('hex')}`)
    if (fixed.readUInt16LE(6) !== TYPE_WELCOME) {
      throw new Error(`expected WELCOME, got type ${fixed.readUInt16LE(6)}: ${fixed.toString('hex')}`)
    }
    if (fixed.readUInt16LE(4) !== 1) throw new Error(`WELCOME version ${fixed.readUInt16LE(4)}`)
    if (expectReplica !== undefined && fixed.readUInt32LE(12) !== expectReplica) throw new Error(`WELCOME from ${fixed.readUInt32LE(12)}`)
    const body = await this.readExactly(fixed.readUInt32LE(24), 'WELCOME body')
    const cid = body.subarray(0, fixed.readUInt8(10)).toString('utf8')
    if (cid !== clusterId) throw new Error(`WELCOME names cluster ${JSON.stringify(cid)}`)
    return Buffer.concat([fixed, body])
  }

  /** Waits until the server has closed the connection. */
  async waitServerClose(what: string, ms = DEADLINE): Promise<void> {
    await until(() => this.serverClosed, ms, what)
  }

  destroy(): void {
    this.sock.destroy()
  }
}

// ------------------------------------------------------------ honest traffic

/**
 * Numbered 8-byte messages (u64 LE) from `sender` to replica 2 on 'seq', a
 * few per millisecond, until stopped, `maxCount` sent or `maxMs` elapsed;
 * onMessage (replica 2's handler) checks their order. The sender may be
 * swapped (a restarted replica 1).
 */
export class HonestStream {
  sent = 0
  received = 0
  outOfOrder: string[] = []
  private timer: NodeJS.Timeout | undefined
  private startedAt = 0

  constructor(
    public sender: Replica,
    private readonly perTick = 8,
    private readonly maxCount = 200_000,
    private readonly maxMs = 60_000,
  ) {}

  onMessage(payload: Uint8Array): void {
    if (payload.byteLength !== 8) {
      this.outOfOrder.push(`message ${this.received} has ${payload.byteLength} bytes`)
    } else {
      const v = Buffer.from(payload.buffer, payload.byteOffset, 8).readBigUInt64LE(0)
      if (v !== BigInt(this.received) && this.outOfOrder.length < 20) this.outOfOrder.push(`expected ${this.received}, got ${v}`)
    }
    this.received++
  }

  start(): void {
    this.startedAt = Date.now()
    const buf = Buffer.alloc(8)
    this.timer = setInterval(() => {
      if (this.sent >= this.maxCount || Date.now() - this.startedAt > this.maxMs) return this.stop()
      for (let i = 0; i < this.perTick && this.sent < this.maxCount; i++) {
        buf.writeBigUInt64LE(BigInt(this.sent), 0)
        this.sender.send(2, 'seq', buf)
        this.sent++
      }
    }, 1)
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}

// ------------------------------------------------------ hostile-test cluster

export interface Delivery {
  from: number
  route: string
  size: number
}

/**
 * Replicas 1, 2 and 3 in the configuration, only 1 and 2 running; replica 1
 * streams numbered messages to replica 2 on 'seq' the whole time, and raw
 * sockets (`raw()`) play the hostile side against replica 2's port. Claiming
 * to be replica 3 (a member whose process is not running) disturbs no real
 * session. What replica 2 delivers or refuses is recorded.
 */
export interface HostileSetup {
  cluster: ClusterConfig
  r1: Replica
  r2: Replica
  port2: number
  /** Every reject event replica 2 emitted. */
  rejects2: RejectInfo[]
  /** Every reject event replica 1 emitted (expected: none). */
  rejects1: RejectInfo[]
  /** Replica 1's link to 2 went down (expected: never). */
  downs1: { peer: number; code: string }[]
  /** Deliveries at replica 2 on 'seq' that did not come from replica 1. */
  others: Delivery[]
  /** Deliveries at replica 2 on route 'empty'. */
  empties: Delivery[]
  /** Frames replica 2 had no route for. */
  unrouted: Delivery[]
  stream: HonestStream
  /** Replicas started (closed at teardown); a test may add its own. */
  started: Replica[]
  /** Opens a raw socket to replica 2's port, destroyed at teardown. */
  raw(): Promise<RawPeer>
}

export async function hostileSetup(t: Tap, name: string, opts2: Partial<ReplicaOptions> = {}, stream?: (r1: Replica) => HonestStream): Promise<HostileSetup> {
  const cluster = await loopbackCluster(3, name)
  const sockets: RawPeer[] = []
  const started: Replica[] = []
  let honest: HonestStream | undefined
  t.teardown(async () => {
    honest?.stop()
    for (const p of sockets) p.destroy()
    await Promise.all(started.map((r) => r.close({ timeoutMs: 0 })))
  })
  const r1 = await Replica.start({ auth: 'none', id: 1, cluster })
  started.push(r1)
  const r2 = await Replica.start({ auth: 'none', id: 2, cluster, ...opts2 })
  started.push(r2)
  await Promise.all([r1.waitForPeers([2]), r2.waitForPeers([1])])
  honest = stream?.(r1) ?? new HonestStream(r1)
  const h = honest
  const s: HostileSetup = {
    cluster,
    r1,
    r2,
    port2: cluster.replicas[1]!.port,
    rejects2: [],
    rejects1: [],
    downs1: [],
    others: [],
    empties: [],
    unrouted: [],
    stream: h,
    started,
    raw: async () => {
      const p = new RawPeer(cluster.replicas[1]!.port)
      sockets.push(p)
      await p.ready()
      return p
    },
  }
  r2.events.on('reject', (info) => s.rejects2.push(info))
  r1.events.on('reject', (info) => s.rejects1.push(info))
  r1.events.on('peer-down', (peer, info) => s.downs1.push({ peer, code: info.code }))
  r2.on('seq', (msg) => {
    if (msg.from === 1) h.onMessage(msg.payload)
    else s.others.push({ from: msg.from, route: msg.route, size: msg.size })
  })
  r2.on('empty', (msg) => {
    s.empties.push({ from: msg.from, route: msg.route, size: msg.size })
  })
  r2.events.on('unrouted', (info) => s.unrouted.push({ from: info.from, route: `#${info.route}`, size: info.size }))
  // Honest traffic is flowing before the hostile side shows up.
  h.start()
  await until(() => h.received >= 100, DEADLINE, 'honest stream to start')
  return s
}
