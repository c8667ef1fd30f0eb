import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'

import { type ReplicaOptions, type ResolvedOptions, resolveOptions } from './config.js'
import {
  AbortedError,
  ClosedError,
  ConfigError,
  ListenError,
  PayloadTooLargeError,
  QueueFullError,
  TimeoutError,
  UnknownPeerError,
} from './errors.js'
import { Message } from './message.js'
import {
  EVENT_DRAIN,
  EVENT_PEER_DOWN,
  EVENT_PEER_UP,
  EVENT_REJECT,
  EVENT_UNDELIVERED,
  CLIENT_FLAG,
  type FreshChunks,
  type NativeEngine,
  type RawEvent,
  addon,
} from './native.js'
import { BROADCAST, HEADER_BYTES, Outbox } from './outbox.js'
import { RequestContext, type ReplySink, type RequestHandler } from './request.js'
import { routeId } from './route.js'
import { type MethodDefinition, type ServiceDefinition, type ServiceImplementation, methodRoute } from './service.js'
import { KIND_ERROR, encodeErrorBody } from './wire.js'

/** A route handler. Its `msg.payload` is valid only during the call. */
export type Handler = (msg: Message) => unknown

/** Why a peer connection went down or a connection was refused. */
export interface PeerDownInfo {
  /** Stable reason code (docs/PROTOCOL.md §4), e.g. `CONNECTION_LOST`, `WRONG_CLUSTER`. */
  code: string
  message: string
}

/** A connection refused by this replica (or by a peer, for our outbound link). */
export interface RejectInfo {
  /** The replica id the remote side claimed, when it got that far. */
  peer: number | undefined
  /** Stable reason code (docs/PROTOCOL.md §4). */
  code: string
  message: string
  /** Remote address (`host:port`). */
  remote: string
}

export interface ReplicaEvents {
  'peer-up': [peer: number]
  'peer-down': [peer: number, info: PeerDownInfo]
  /** The peer's queue fell below the high-water mark after `send` returned false. */
  drain: [peer: number]
  reject: [info: RejectInfo]
  /** A handler threw (or its promise rejected); delivery goes on. */
  error: [err: unknown, msg: { from: number; route: string }]
  /** A message for a route with no handler. */
  unrouted: [info: { from: number; route: number; size: number }]
  /**
   * The peer stayed down past `peerDownDeadlineMs`: what was queued for it
   * was given up — `messages` with ids `firstId`..`lastId` (compare with
   * `replica.lastMessageId` taken after your sends).
   */
  undelivered: [peer: number, info: UndeliveredInfo]
}

export interface UndeliveredInfo {
  messages: number
  bytes: number
  firstId: number
  lastId: number
}

export interface PeerStats {
  id: number
  connected: boolean
  msgsIn: number
  bytesIn: number
  msgsOut: number
  bytesOut: number
  /** Bytes accepted by `send`/`broadcast` and not yet acknowledged by the peer. */
  queuedBytes: number
  queuedMsgs: number
  unackedBytes: number
  reconnects: number
  rejects: number
  /** Resent frames the duplicate filter dropped after a reconnect. */
  duplicates: number
  /** Last heartbeat round trip in µs (0 before the first). */
  heartbeatRttUs: number
  /** Receive-side depth: bytes read from the peer, not yet handled (bounded by maxChunksPerConnection × receiveChunkBytes). */
  receivePendingBytes: number
}

export interface ReplicaStats {
  id: number
  peers: PeerStats[]
  /** Connections refused, total and by reason code. */
  rejects: number
  rejectsByReason: Record<string, number>
  /** Messages that arrived for a route with no handler. */
  unrouted: number
  /** Handler calls that threw. */
  handlerErrors: number
  /** Runs of frames waiting in the input queue. */
  miqDepth: number
}

export interface CloseResult {
  /** Bytes per peer id that were queued but not acknowledged when the replica closed. */
  undeliveredBytes: Record<number, number>
}

interface RouteEntry {
  name: string
  fn: Handler
}

const META_ENTRIES = 4096

/** Adds a route's handler to a table keyed by route id, refusing hash collisions. */
function register<F>(table: Map<number, { name: string; fn: F }>, route: string, fn: F): void {
  if (typeof route !== 'string' || route.length === 0) throw new ConfigError('route', 'must be a non-empty string')
  if (typeof fn !== 'function') throw new ConfigError('handler', 'must be a function')
  const id = routeId(route)
  const existing = table.get(id)
  if (existing && existing.name !== route) {
    throw new ConfigError('route', `"${route}" hashes to the same route id as "${existing.name}"; rename one`)
  }
  table.set(id, { name: route, fn })
}

/**
 * One replica of a cluster: listens on its replica port, keeps one
 * connection to every peer, delivers their messages to route handlers and
 * sends with `send`/`broadcast`.
 *
 * @example
 * const r = await Replica.start({ id: 1, cluster })
 * r.on('prepare', (msg) => console.log(msg.from, msg.payload.length))
 * r.broadcast('prepare', new Uint8Array([1, 2, 3]))
 */
export class Replica implements ReplySink {
  /** Connection events; see ReplicaEvents. */
  readonly events = new EventEmitter<ReplicaEvents>()
  /** This replica's id. */
  readonly id: number
  /** The bound replica port. */
  readonly port: number
  /** Ids of the other replicas. */
  readonly peers: readonly number[]
  /** The bound client port (undefined when the cluster config gives this replica none). */
  readonly clientPort: number | undefined

  private readonly opts: ResolvedOptions
  private readonly engine: NativeEngine
  private readonly outbox: Outbox
  private readonly meta: Uint32Array
  private readonly depths: Float64Array
  private readonly peerIndex = new Map<number, number>()
  /** peer id -> index, for ids below its length (-1: not a peer); the hot path of send. */
  private readonly slotById: Int32Array
  private lastRouteName = ''
  private lastRouteId = 0
  private readonly staged: Float64Array
  private readonly drainWanted: Uint8Array
  private readonly drainRequested: Uint8Array
  private readonly routes = new Map<number, RouteEntry>()
  private readonly requestRoutes = new Map<number, { name: string; fn: RequestHandler }>()
  private readonly chunkBuffers: (ArrayBuffer | undefined)[] = []
  private readonly chunkViews: (DataView | undefined)[] = []
  private readonly chunkPooled: boolean[] = []
  private readonly up = new Set<number>()
  // Last message id used, as u32 halves (ids start at 1).
  private idLo = 0
  private idHi = 0
  private closing: Promise<CloseResult> | undefined
  private closed = false
  /** Aborted when close() starts: ends waits such as sendAsync. */
  private readonly lifetime = new AbortController()
  private unroutedCount = 0
  private handlerErrors = 0

  private constructor(opts: ResolvedOptions) {
    this.opts = opts
    this.id = opts.id
    this.peers = opts.peers
    opts.peers.forEach((p, i) => this.peerIndex.set(p, i))
    const maxId = Math.max(0, ...opts.peers)
    this.slotById = new Int32Array(maxId < 65536 ? maxId + 1 : 0).fill(-1)
    if (maxId < 65536) opts.peers.forEach((p, i) => (this.slotById[p] = i))
    const n = opts.peers.length
    this.staged = new Float64Array(n)
    this.drainWanted = new Uint8Array(n)
    this.drainRequested = new Uint8Array(n)
    this.meta = new Uint32Array(META_ENTRIES * 4)
    this.depths = new Float64Array(Math.max(1, n))
    const inc = randomBytes(8)
    this.engine = new addon.Engine(
      {
        selfId: opts.id,
        clusterId: opts.cluster.id,
        replicas: opts.cluster.replicas,
        ...(opts.listenHost !== undefined ? { listenHost: opts.listenHost } : {}),
        ioThreads: opts.ioThreads,
        maxFrameBytes: opts.maxFrameBytes,
        chunkBytes: Math.max(opts.receiveChunkBytes, 64 * 1024),
        maxChunksPerConnection: opts.maxChunksPerConnection,
        highWaterBytes: opts.highWaterMark,
        handshakeTimeoutMs: opts.handshakeTimeoutMs,
        reconnectMinMs: opts.reconnectMinMs,
        reconnectMaxMs: opts.reconnectMaxMs,
        sendBufferBytes: opts.sendBufferBytes,
        receiveBufferBytes: opts.receiveBufferBytes,
        ...(opts.clientPort !== undefined ? { clientPort: opts.clientPort } : {}),
        maxRequestBytes: opts.maxRequestBytes,
        maxClientInFlight: opts.maxClientInFlight,
        clientIdleTimeoutMs: opts.clientIdleTimeoutMs,
        maxClientConnections: opts.maxClientConnections,
        heartbeatIntervalMs: opts.heartbeatIntervalMs,
        heartbeatTimeoutMs: opts.heartbeatTimeoutMs,
        peerDownDeadlineMs: opts.peerDownDeadlineMs,
        incarnationLo: inc.readUInt32LE(0),
        incarnationHi: inc.readUInt32LE(4),
      },
      this.meta,
      this.depths,
      this.onBatch,
      this.onEvents,
    )
    this.outbox = new Outbox(this.engine, opts.id, this.afterFlush)
    let port: number
    try {
      port = this.engine.start()
    } catch (err) {
      const e = err as Error
      throw new ListenError(`replica ${opts.id}: ${e.message}`, err)
    }
    this.port = port
    this.clientPort = opts.clientPort !== undefined ? this.engine.clientPort() : undefined
  }

  /**
   * Starts a replica: validates the options (throwing `ConfigError` naming the
   * field), binds the replica port and begins connecting to every peer.
   */
  static async start(options: ReplicaOptions): Promise<Replica> {
    const opts = resolveOptions(options)
    return new Replica(opts)
  }

  /** Registers the handler of a route (one per route). */
  on(route: string, handler: Handler): this {
    register(this.routes, route, handler)
    return this
  }

  /**
   * Registers the request handler of a route on the client port. The
   * handler gets its own copy of the request bytes and a context; what it
   * returns (bytes or a string, or a promise of one) is the reply. Returning
   * nothing leaves the request open for `ctx.reply(...)` later. A throw sends
   * the client an error reply (`HANDLER_ERROR`, or the error's own `code`).
   */
  handle(route: string, handler: RequestHandler): this {
    register(this.requestRoutes, route, handler)
    return this
  }

  /** Serves every method of a typed service (see `defineService`). */
  serve<M extends Record<string, MethodDefinition>>(service: ServiceDefinition<M>, impl: ServiceImplementation<M>): this {
    for (const method of Object.keys(service.methods)) {
      const def = service.methods[method]!
      const fn = impl[method as keyof M] as unknown as (req: unknown, ctx: RequestContext) => unknown
      if (typeof fn !== 'function') throw new ConfigError(`impl.${method}`, 'must be a function')
      const decode = (b: Uint8Array): unknown => def.request.decode(b)
      const encode = def.response.encode as (v: unknown) => Uint8Array
      this.handle(methodRoute(service.name, method), (req, ctx) => {
        const out = fn(decode(req), ctx)
        if (out !== null && typeof out === 'object' && typeof (out as Promise<unknown>).then === 'function') {
          return (out as Promise<unknown>).then(encode)
        }
        return encode(out)
      })
    }
    return this
  }

  /** @internal ReplySink: stages a reply frame for a client connection. */
  stageReply(dest: number, route: number, lo: number, hi: number, body: Uint8Array, kind: number): void {
    if (this.closing !== undefined) return
    this.outbox.stage(dest, route, lo, hi, body, body.length, kind)
  }

  /** @internal ReplySink */
  clientAddress(dest: number): string {
    return this.closed ? '' : this.engine.clientAddress(dest & 0x7fffffff)
  }

  /** Removes the handler of a route. */
  off(route: string): this {
    const id = routeId(route)
    if (this.routes.get(id)?.name === route) this.routes.delete(id)
    return this
  }

  /**
   * Queues a message for one peer, like `stream.write()`: always queued
   * (unless it throws), returns false once the peer's queue is past
   * `highWaterMark` — wait for the `'drain'` event before sending more.
   * Throws `QUEUE_FULL` past `maxQueueBytes`, `UNKNOWN_PEER`, `PAYLOAD_TOO_LARGE`, `CLOSED`.
   */
  send(to: number, route: string, payload: Uint8Array | string): boolean {
    if (this.closing !== undefined) throw new ClosedError()
    const idx = this.slotOf(to)
    if (idx < 0) throw new UnknownPeerError(to)
    const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
    const len = bytes.length
    if (len > this.opts.maxFrameBytes) throw new PayloadTooLargeError(len, this.opts.maxFrameBytes)
    const frame = HEADER_BYTES + len
    let after = this.depths[idx]! + this.staged[idx]! + frame
    if (after > this.opts.maxQueueBytes) {
      // The native depth seen at the last flush may be stale: look again.
      this.engine.refreshDepths()
      after = this.depths[idx]! + this.staged[idx]! + frame
      if (after > this.opts.maxQueueBytes) throw new QueueFullError(to, after - frame, this.opts.maxQueueBytes)
    }
    const lo = (this.idLo + 1) >>> 0
    this.idLo = lo
    if (lo === 0) this.idHi++
    this.outbox.stage(to, this.route(route), lo, this.idHi, bytes, len)
    this.staged[idx]! += frame
    if (after < this.opts.highWaterMark) return true
    // The depth seen at the last flush may predate ACKs: look again first.
    this.engine.refreshDepths()
    if (this.depths[idx]! + this.staged[idx]! < this.opts.highWaterMark) return true
    this.drainWanted[idx] = 1
    return false
  }

  /**
   * Like `send`, but waits for room first: resolves once the message is
   * queued with the peer's queue below `highWaterMark` (waiting for
   * `'drain'` as long as it is not). Rejects with `ABORTED` when the signal
   * fires (nothing queued), `CLOSED`, `UNKNOWN_PEER`, `PAYLOAD_TOO_LARGE`.
   */
  async sendAsync(to: number, route: string, payload: Uint8Array | string, options: { signal?: AbortSignal } = {}): Promise<void> {
    const idx = this.slotOf(to)
    if (idx < 0) throw new UnknownPeerError(to)
    const signal = options.signal
    for (;;) {
      if (signal?.aborted) throw new AbortedError(signal.reason)
      if (this.closing !== undefined) throw new ClosedError()
      if (this.depths[idx]! + this.staged[idx]! < this.opts.highWaterMark) break
      this.engine.refreshDepths()
      if (this.depths[idx]! + this.staged[idx]! < this.opts.highWaterMark) break
      this.drainWanted[idx] = 1
      this.outbox.flush() // hands the drain request to native
      await new Promise<void>((resolve, reject) => {
        const onDrain = (peer: number): void => {
          if (peer !== to) return
          cleanup()
          resolve()
        }
        const onAbort = (): void => {
          cleanup()
          reject(new AbortedError(signal?.reason))
        }
        const onClose = (): void => {
          cleanup()
          reject(new ClosedError())
        }
        const cleanup = (): void => {
          this.events.off('drain', onDrain)
          signal?.removeEventListener('abort', onAbort)
          this.lifetime.signal.removeEventListener('abort', onClose)
        }
        this.events.on('drain', onDrain)
        signal?.addEventListener('abort', onAbort, { once: true })
        this.lifetime.signal.addEventListener('abort', onClose, { once: true })
      })
    }
    this.send(to, route, payload)
  }

  /**
   * Queues one message for every other replica; encoded once and shared by
   * every peer's queue. Returns false if any peer's queue is past the
   * high-water mark. Throws `QUEUE_FULL` (queuing nothing) if any would pass
   * `maxQueueBytes`.
   */
  broadcast(route: string, payload: Uint8Array | string): boolean {
    if (this.closing !== undefined) throw new ClosedError()
    const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
    const len = bytes.length
    if (len > this.opts.maxFrameBytes) throw new PayloadTooLargeError(len, this.opts.maxFrameBytes)
    const frame = HEADER_BYTES + len
    const n = this.peers.length
    if (n === 0) return true
    let below = true
    let refreshed = false
    for (let i = 0; i < n; i++) {
      let after = this.depths[i]! + this.staged[i]! + frame
      if (after > this.opts.maxQueueBytes && !refreshed) {
        refreshed = true
        this.engine.refreshDepths()
        after = this.depths[i]! + this.staged[i]! + frame
      }
      if (after > this.opts.maxQueueBytes) {
        throw new QueueFullError(this.peers[i]!, after - frame, this.opts.maxQueueBytes)
      }
    }
    const lo = (this.idLo + 1) >>> 0
    this.idLo = lo
    if (lo === 0) this.idHi++
    this.outbox.stage(BROADCAST, this.route(route), lo, this.idHi, bytes, len)
    let high = false
    for (let i = 0; i < n; i++) if ((this.staged[i]! += frame) + this.depths[i]! >= this.opts.highWaterMark) high = true
    if (!high) return true
    // The depths seen at the last flush may predate ACKs: look again first.
    this.engine.refreshDepths()
    for (let i = 0; i < n; i++) {
      if (this.staged[i]! + this.depths[i]! >= this.opts.highWaterMark) {
        this.drainWanted[i] = 1
        below = false
      }
    }
    return below
  }

  private slotOf(peer: number): number {
    const table = this.slotById
    if (peer >= 0 && peer < table.length && Number.isInteger(peer)) return table[peer]!
    return this.peerIndex.get(peer) ?? -1
  }

  private route(name: string): number {
    if (name === this.lastRouteName) return this.lastRouteId
    if (typeof name !== 'string' || name.length === 0) throw new ConfigError('route', 'must be a non-empty string')
    const id = routeId(name)
    this.lastRouteName = name
    this.lastRouteId = id
    return id
  }

  /** Id of the last message `send`/`broadcast` queued (ids increase by one per message). */
  get lastMessageId(): number {
    return this.idLo + this.idHi * 2 ** 32
  }

  /** Sends what is staged now instead of at the end of the tick. */
  flush(): void {
    this.outbox.flush()
  }

  /** Whether our link to a peer is established. */
  isConnected(peer: number): boolean {
    return this.up.has(peer)
  }

  /**
   * Resolves once links to the given peers (default: all) are up; rejects
   * with `TIMEOUT` after `timeoutMs` (default 10 s).
   */
  waitForPeers(peers: readonly number[] = this.peers, options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 10_000
    for (const p of peers) if (!this.peerIndex.has(p)) return Promise.reject(new UnknownPeerError(p))
    return new Promise<void>((resolve, reject) => {
      const check = (): boolean => peers.every((p) => this.up.has(p))
      if (check()) return resolve()
      const onUp = (): void => {
        if (!check()) return
        cleanup()
        resolve()
      }
      const timer = setTimeout(() => {
        cleanup()
        const missing = peers.filter((p) => !this.up.has(p))
        reject(new TimeoutError(`replica ${this.id}: peers ${missing.join(', ')} not connected after ${timeoutMs} ms`))
      }, timeoutMs)
      const cleanup = (): void => {
        clearTimeout(timer)
        this.events.off('peer-up', onUp)
      }
      this.events.on('peer-up', onUp)
    })
  }

  /** Counters per peer and for the replica. */
  stats(): ReplicaStats {
    const s = this.engine.stats()
    const staged = this.staged
    return {
      id: this.id,
      peers: (s.peers ?? []).map((p) => {
        const i = this.peerIndex.get(p.id)
        const extra = i === undefined ? 0 : staged[i]!
        return { ...p, queuedBytes: p.queuedBytes + extra }
      }),
      rejects: s.rejects ?? 0,
      rejectsByReason: s.rejectsByReason ?? {},
      unrouted: this.unroutedCount,
      handlerErrors: this.handlerErrors,
      miqDepth: s.miqDepth ?? 0,
    }
  }

  /**
   * Flushes, waits up to `timeoutMs` (default `closeTimeoutMs`) for queued
   * messages to be acknowledged, then closes every connection and joins the
   * io threads. Reports what was not delivered.
   */
  close(options: { timeoutMs?: number } = {}): Promise<CloseResult> {
    if (this.closing) return this.closing
    this.closing = this.doClose(options.timeoutMs ?? this.opts.closeTimeoutMs)
    this.lifetime.abort()
    return this.closing
  }

  private async doClose(timeoutMs: number): Promise<CloseResult> {
    this.outbox.flush()
    // Never stop the engine inside a delivery callback (close() called from
    // a handler): leave the current call stack first.
    await new Promise((r) => setImmediate(r))
    const deadline = Date.now() + timeoutMs
    while (this.engine.refreshDepths() > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5))
    }
    this.engine.refreshDepths()
    const undeliveredBytes: Record<number, number> = {}
    this.peers.forEach((p, i) => {
      if (this.depths[i]! > 0) undeliveredBytes[p] = this.depths[i]!
    })
    this.engine.stop()
    this.closed = true
    this.up.clear()
    return { undeliveredBytes }
  }

  private readonly afterFlush = (): void => {
    this.staged.fill(0)
    const want = this.drainWanted
    for (let i = 0; i < want.length; i++) {
      if (want[i] === 1 && this.drainRequested[i] === 0) {
        this.drainRequested[i] = 1
        this.engine.wantDrain(this.peers[i]!)
      }
      want[i] = 0
    }
  }

  // JS thread, once per wake-up: every run of frames in `meta`, each frame
  // dispatched to its handler with a zero-copy view.
  private readonly onBatch = (count: number, fresh: FreshChunks | undefined): void => {
    if (fresh !== undefined) {
      for (let i = 0; i < fresh.length; i += 3) {
        const id = fresh[i] as number
        const ab = fresh[i + 1] as ArrayBuffer
        this.chunkBuffers[id] = ab
        this.chunkViews[id] = new DataView(ab)
        this.chunkPooled[id] = fresh[i + 2] as boolean
      }
    }
    if (this.closed) return
    const meta = this.meta
    const routes = this.routes
    let lastRoute = -1
    let lastEntry: RouteEntry | undefined
    for (let e = 0; e < count; e++) {
      if (this.closing !== undefined) break // close() called from a handler
      const k = e * 4
      const cid = meta[k]!
      const off = meta[k + 1]!
      const end = off + meta[k + 2]!
      const peer = meta[k + 3]!
      const ab = this.chunkBuffers[cid]!
      const dv = this.chunkViews[cid]!
      if (peer >= CLIENT_FLAG) {
        this.dispatchRequests(ab, dv, off, end, peer)
        continue
      }
      let p = off
      while (p < end) {
        const len = dv.getUint32(p, true)
        const route = dv.getUint32(p + 4, true)
        if (route !== lastRoute) {
          lastRoute = route
          lastEntry = routes.get(route)
        }
        if (lastEntry !== undefined) {
          const msg = new Message(peer, lastEntry.name, ab, p, len)
          try {
            const r = lastEntry.fn(msg)
            if (r !== undefined && typeof (r as Promise<void>).then === 'function') {
              const name = lastEntry.name
              ;(r as Promise<void>).then(undefined, (err: unknown) => this.reportError(err, peer, name))
            }
          } catch (err) {
            this.reportError(err, peer, lastEntry.name)
          }
        } else {
          this.unroutedCount++
          if (this.events.listenerCount('unrouted') > 0) this.events.emit('unrouted', { from: peer, route, size: len })
        }
        p += HEADER_BYTES + len
      }
      if (!this.chunkPooled[cid]) {
        this.chunkBuffers[cid] = undefined
        this.chunkViews[cid] = undefined
      }
    }
  }

  // Requests from one client connection, in order. Each handler gets bytes
  // that stay valid after the call (handlers are usually async and read
  // them after an await): a view into a copy of the run.
  private dispatchRequests(ab: ArrayBuffer, dv: DataView, off: number, end: number, dest: number): void {
    // One copy of the whole run (an ArrayBuffer per request costs ~0.7 µs);
    // each handler gets a view of its request in it.
    const copy = ab.slice(off, end)
    let p = off
    while (p < end) {
      const len = dv.getUint32(p, true)
      const route = dv.getUint32(p + 4, true)
      const lo = dv.getUint32(p + 16, true)
      const hi = dv.getUint32(p + 20, true)
      const entry = this.requestRoutes.get(route)
      if (entry === undefined) {
        this.unroutedCount++
        const body = encodeErrorBody('NO_SUCH_ROUTE', `no handler for route id ${route} on replica ${this.id}`)
        this.outbox.stage(dest, route, lo, hi, body, body.length, KIND_ERROR)
      } else {
        const req = new Uint8Array(copy, p - off + HEADER_BYTES, len)
        const ctx = new RequestContext(this, dest, route, lo, hi, entry.name)
        try {
          const r = entry.fn(req, ctx)
          if (r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function') {
            ;(r as Promise<unknown>).then(
              (v) => {
                if (v !== undefined && !ctx.replied) ctx.reply(v as Uint8Array | string)
              },
              (err: unknown) => {
                this.handlerErrors++
                ctx.failWith(err)
              },
            )
          } else if (r !== undefined && !ctx.replied) {
            ctx.reply(r as Uint8Array | string)
          }
        } catch (err) {
          this.handlerErrors++
          ctx.failWith(err)
        }
      }
      p += HEADER_BYTES + len
    }
  }

  private reportError(err: unknown, from: number, route: string): void {
    this.handlerErrors++
    if (this.events.listenerCount('error') > 0) {
      this.events.emit('error', err, { from, route })
    } else {
      process.emitWarning(`nexres-rpc: handler for route "${route}" threw: ${String(err)}`, {
        code: 'NEXRES_HANDLER_ERROR',
      })
    }
  }

  private readonly onEvents = (events: RawEvent[]): void => {
    for (const [type, peer, code, reason, remote, messages, bytes, firstId, lastId] of events) {
      switch (type) {
        case EVENT_PEER_UP:
          this.up.add(peer)
          this.events.emit('peer-up', peer)
          break
        case EVENT_PEER_DOWN:
          this.up.delete(peer)
          this.events.emit('peer-down', peer, { code: code || 'CONNECTION_LOST', message: reason })
          break
        case EVENT_DRAIN: {
          const i = this.peerIndex.get(peer)
          if (i !== undefined) this.drainRequested[i] = 0
          this.engine.refreshDepths()
          this.events.emit('drain', peer)
          break
        }
        case EVENT_UNDELIVERED:
          this.engine.refreshDepths()
          this.events.emit('undelivered', peer, { messages, bytes, firstId, lastId })
          break
        case EVENT_REJECT:
          this.events.emit('reject', { peer: peer === 0 ? undefined : peer, code, message: reason, remote })
          break
      }
    }
  }
}
