import type { ClientConnectionStats, PeerStats } from './stats.js'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'

import { checkDelay, checkOptions, checkReplicaId } from './args.js'
import { clientIdOf } from './client-auth.js'
import { type ClusterConfig, type PeerEntry, type ReplicaOptions, type ResolvedOptions, decodeKey, resolveAuth, resolveOptions, resolveRemoteClusters, validateCluster } from './config.js'
import { engineIntegers } from './engine-options.js'
import {
  ClosedError,
  ConfigError,
  InvalidArgumentError,
  ListenError,
  type ListenPort,
  TimeoutError,
  UnknownPeerError,
  describeValue,
} from './errors.js'
import { ReplicaBase, type Handler, type UnroutedInfo } from './replica-base.js'
import type { RequestHandler } from './request.js'
import {
  CLIENT_FLAG,
  EVENT_CLIENT_AUTH,
  EVENT_CLIENT_CLOSED,
  EVENT_DRAIN,
  EVENT_PEER_DOWN,
  EVENT_PEER_UP,
  EVENT_REJECT,
  EVENT_UNDELIVERED,
  EVENT_EPOCH_AHEAD,
  SLOT_ADDRESS,
  type NativeEngine,
  type RawEvent,
  addon,
} from './native.js'
import { WorkerPool } from './workers.js'

/** Why a peer connection went down or a connection was refused. */
export interface PeerDownInfo {
  /** Stable reason code (docs/PROTOCOL.md §4), e.g. `CONNECTION_LOST`, `WRONG_CLUSTER`. */
  code: string
  message: string
  /** The peer's cluster: this replica's own, or a remote one (`remoteClusters`). */
  cluster: string
}

/** A peer proved it is on a newer configuration epoch than this replica (`'epoch-ahead'`). */
export interface EpochAheadInfo {
  peer: number
  cluster: string
  /** The peer's epoch; this replica's is `replica.epoch`. */
  epoch: number
  remote: string
}

/** Options of `replica.reconfigure`. */
export interface ReconfigureOptions {
  /** The remote clusters from now on (default: those in use, unchanged). */
  remoteClusters?: ClusterConfig[]
  /**
   * This replica's new private key (auth 'mac'/'seal'), matching its new
   * `publicKey` in `cluster`: every session starts again under it; signed
   * messages queued under the old key and not acknowledged are reported in
   * `'undelivered'` (their signatures would not check any more).
   */
  privateKey?: string | Uint8Array
}

const RECONFIGURE_OPTION_KEYS: Record<keyof ReconfigureOptions, true> = { remoteClusters: true, privateKey: true }

/** A connection refused by this replica (or by a peer, for our outbound link). */
export interface RejectInfo {
  /** The replica id the remote side claimed, when it got that far. */
  peer: number | undefined
  /** Its cluster, when the peer is known. */
  cluster?: string
  /** Stable reason code (docs/PROTOCOL.md §4). */
  code: string
  message: string
  /** Remote address (`host:port`). */
  remote: string
}

export interface ReplicaEvents {
  /** A link is up; `cluster` is this replica's own or a remote one's. */
  'peer-up': [peer: number, cluster: string]
  'peer-down': [peer: number, info: PeerDownInfo]
  /** The peer's queue fell below the high-water mark after `send` returned false. */
  drain: [peer: number, cluster: string]
  /**
   * A replica of this cluster proved (in a handshake) that it is on a newer
   * configuration epoch: fetch the new configuration and `reconfigure`.
   * Until then the two refuse each other (`STALE_EPOCH`). Once per epoch.
   */
  'epoch-ahead': [info: EpochAheadInfo]
  reject: [info: RejectInfo]
  /** A handler threw (or its promise rejected); delivery goes on. */
  error: [err: unknown, msg: { from: number; route: string }]
  /** A message for a route with no handler. */
  unrouted: [info: UnroutedInfo]
  /**
   * The peer stayed down past `peerDownDeadlineMs`: what was queued for it
   * was given up — `messages` with ids `firstId`..`lastId` (compare with
   * `replica.lastMessageId` taken after your sends).
   */
  undelivered: [peer: number, info: UndeliveredInfo]
}

export interface UndeliveredInfo {
  /** The peer's cluster. */
  cluster: string
  /** Why: the peer stayed down past the deadline, or left the configuration. */
  reason: string
  messages: number
  bytes: number
  firstId: number
  lastId: number
}

export type { ClientConnectionStats, PeerStats } from './stats.js'

export interface ReplicaStats {
  id: number
  /** This replica's cluster id. */
  cluster: string
  /** The configuration epoch. */
  epoch: number
  /** The peers of the current configuration (remote ones with `cluster`). */
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
  /** Open client connections, one entry each (empty without a client port). */
  clients: ClientConnectionStats[]
  /** Worker threads restarted after one died (`workers`). */
  workerRestarts: number
  /** Bytes of replica-port receive buffers allocated (pooled or in use), bounded by `maxReceiveBytes`. */
  receiveBytesAllocated: number
  /** Bytes of client-port receive buffers allocated (pooled or in use), bounded by `maxClientReceiveBytes`. */
  clientReceiveBytesAllocated: number
}

export interface WaitForPeersOptions {
  /** Rejects with `TIMEOUT` after this many ms (default 10000). */
  timeoutMs?: number
}

export interface CloseOptions {
  /** How long to wait for queued messages to be acknowledged (default `closeTimeoutMs`). */
  timeoutMs?: number
}

/** Known keys of the per-call options objects (CONFIG_INVALID names any other). */
const WAIT_FOR_PEERS_OPTION_KEYS: Record<keyof WaitForPeersOptions, true> = { timeoutMs: true }
const CLOSE_OPTION_KEYS: Record<keyof CloseOptions, true> = { timeoutMs: true }

export interface CloseResult {
  /** Bytes per peer id that were queued but not acknowledged when the replica closed. */
  undeliveredBytes: Record<number, number>
  /** The same for replicas of remote clusters: cluster id -> replica id -> bytes. */
  remoteUndeliveredBytes: Record<string, Record<number, number>>
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
export class Replica extends ReplicaBase {
  /** Connection events; see ReplicaEvents. */
  readonly events = new EventEmitter<ReplicaEvents>()
  /** The bound replica port. */
  readonly port: number
  /** The bound client port (undefined when the cluster config gives this replica none). */
  readonly clientPort: number | undefined

  private opts: ResolvedOptions
  private readonly engine: NativeEngine
  private readonly up = new Set<number>()
  private readonly pool: WorkerPool | undefined

  private constructor(opts: ResolvedOptions) {
    super({ ...opts, clusterId: opts.cluster.id, canSign: opts.auth !== 'none' })
    this.opts = opts
    this.stampIds = opts.workers > 0
    const inc = randomBytes(8)
    this.engine = new addon.Engine(
      {
        selfId: opts.id,
        clusterId: opts.cluster.id,
        replicas: opts.cluster.replicas.map((r) => ({ id: r.id, host: r.host, port: r.port })),
        epoch: opts.epoch,
        remotePeers: opts.remotePeers,
        ...(opts.listenHost !== undefined ? { listenHost: opts.listenHost } : {}),
        ...engineIntegers(opts),
        chunkBytes: Math.max(opts.receiveChunkBytes, 64 * 1024),
        highWaterBytes: opts.highWaterMark,
        reconnectMinMs: opts.reconnectMinMs,
        reconnectMaxMs: opts.reconnectMaxMs,
        ...(opts.clientPort !== undefined ? { clientPort: opts.clientPort } : {}),
        incarnationLo: inc.readUInt32LE(0),
        incarnationHi: inc.readUInt32LE(4),
        auth: opts.auth,
        clientAuth: opts.clientAuth,
        clientSeal: opts.clientSeal,
        allowClientHook: opts.allowClient !== undefined,
        ...(opts.auth !== 'none' ? { privateKey: opts.privateKey!, publicKeys: opts.publicKeys } : {}),
        consumers: opts.workers,
        ordered: opts.ordering === 'peer',
      },
      this.meta,
      this.depths,
      this.onDeliveries,
      this.onEvents,
    )
    this.attach(this.engine)
    let port: number
    try {
      port = this.engine.start()
    } catch (err) {
      const e = err as Error & { which?: unknown; host?: unknown; port?: unknown; address?: unknown }
      const self = opts.cluster.replicas.find((r) => r.id === opts.id)
      const which: ListenPort = e.which === 'client' ? 'client' : 'replica'
      const host = typeof e.host === 'string' ? e.host : (opts.listenHost ?? self?.host ?? '')
      const port = typeof e.port === 'number' ? e.port : which === 'client' ? (opts.clientPort ?? 0) : (self?.port ?? 0)
      const address = typeof e.address === 'string' ? e.address : `${host}:${port}`
      throw new ListenError(`replica ${opts.id}: ${e.message}`, { which, host, port, address }, err)
    }
    this.port = port
    this.clientPort = opts.clientPort !== undefined ? this.engine.clientPort() : undefined
    this.applySlots(this.engine.peers())
    if (opts.workers > 0) {
      this.pool = new WorkerPool(opts, this.engine.shareKey(), {
        slots: () => this.engine.peers(),
        error: (err, info) => this.emitError(err, info),
        unrouted: (info) => {
          this.unroutedCount++
          this.emitUnrouted(info)
        },
      })
    }
  }

  /**
   * Starts a replica: validates the options (throwing `ConfigError` naming the
   * field), binds the replica port and begins connecting to every peer.
   */
  static async start(options: ReplicaOptions): Promise<Replica> {
    const opts = resolveOptions(options)
    const replica = new Replica(opts)
    if (replica.pool !== undefined) {
      try {
        await replica.pool.ready()
      } catch (err) {
        await replica.close({ timeoutMs: 0 })
        throw err
      }
    }
    return replica
  }

  /** Whether our link to a peer is established. */
  isConnected(peer: number): boolean {
    checkReplicaId('peer', peer)
    return this.up.has(peer)
  }

  /**
   * Resolves once links to the given peers (default: all) are up; rejects
   * with `TIMEOUT` after `timeoutMs` (default 10 s), with `CLOSED` as soon
   * as `close()` starts (or at once after it), `UNKNOWN_PEER`, and
   * `INVALID_ARGUMENT` for arguments of the wrong kind.
   */
  waitForPeers(peers: readonly number[] = this.peers, options?: WaitForPeersOptions): Promise<void> {
    let timeoutMs: number
    try {
      if (!Array.isArray(peers)) throw new InvalidArgumentError('peers', 'an array of replica ids', peers)
      peers.forEach((p: unknown, i) => checkReplicaId(`peers[${i}]`, p))
      checkOptions('options', options, WAIT_FOR_PEERS_OPTION_KEYS)
      timeoutMs = options?.timeoutMs ?? 10_000
      checkDelay('options.timeoutMs', timeoutMs)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.closing !== undefined) return Promise.reject(new ClosedError())
    for (const p of peers) if (!this.peerIndex.has(p)) return Promise.reject(new UnknownPeerError(p))
    const wanted = [...peers]
    return new Promise<void>((resolve, reject) => {
      const check = (): boolean => wanted.every((p) => this.up.has(p))
      if (check()) return resolve()
      const onUp = (): void => {
        if (!check()) return
        cleanup()
        resolve()
      }
      const onClose = (): void => {
        cleanup()
        reject(new ClosedError())
      }
      const timer = setTimeout(() => {
        cleanup()
        const missing = wanted.filter((p) => !this.up.has(p))
        reject(new TimeoutError(`replica ${this.id}: peers ${missing.join(', ')} not connected after ${timeoutMs} ms`))
      }, timeoutMs)
      const cleanup = (): void => {
        clearTimeout(timer)
        this.events.off('peer-up', onUp)
        this.lifetime.signal.removeEventListener('abort', onClose)
      }
      this.events.on('peer-up', onUp)
      this.lifetime.signal.addEventListener('abort', onClose, { once: true })
    })
  }

  /** Counters per peer and for the replica. */
  stats(): ReplicaStats {
    const s = this.engine.stats()
    const staged = this.staged
    return {
      id: this.id,
      cluster: this.cluster,
      epoch: s.epoch ?? 0,
      peers: (s.peers ?? []).map((p) => {
        const i = p.cluster === undefined ? this.peerIndex.get(p.id) : this.remoteIndex.get(p.cluster)?.get(p.id)
        const extra = i === undefined ? 0 : staged[i]!
        return { ...p, queuedBytes: p.queuedBytes + extra }
      }),
      rejects: s.rejects ?? 0,
      rejectsByReason: s.rejectsByReason ?? {},
      unrouted: this.unroutedCount,
      handlerErrors: this.handlerErrors,
      miqDepth: s.miqDepth ?? 0,
      clients: s.clients ?? [],
      workerRestarts: this.pool?.restarted ?? 0,
      receiveBytesAllocated: s.receiveBytesAllocated ?? 0,
      clientReceiveBytesAllocated: s.clientReceiveBytesAllocated ?? 0,
    }
  }

  /**
   * Flushes, waits up to `timeoutMs` (default `closeTimeoutMs`) for queued
   * messages to be acknowledged, then closes every connection and joins the
   * io threads. Reports what was not delivered.
   */
  close(options?: CloseOptions): Promise<CloseResult> {
    try {
      checkOptions('options', options, CLOSE_OPTION_KEYS)
      if (options?.timeoutMs !== undefined) checkDelay('options.timeoutMs', options.timeoutMs)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.closing) return this.closing as Promise<CloseResult>
    const closing = this.doClose(options?.timeoutMs ?? this.opts.closeTimeoutMs)
    this.closing = closing
    this.lifetime.abort()
    return closing
  }

  private async doClose(timeoutMs: number): Promise<CloseResult> {
    this.outbox.flush()
    // Never stop the engine inside a delivery callback (close() called from
    // a handler): leave the current call stack first.
    await new Promise((r) => setImmediate(r))
    const deadline = Date.now() + timeoutMs
    // Workers stop taking deliveries and hand over what they staged.
    if (this.pool !== undefined) await this.pool.stop(Math.max(100, timeoutMs))
    while (this.engine.refreshDepths() > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5))
    }
    this.engine.refreshDepths()
    const undeliveredBytes: Record<number, number> = {}
    for (const [p, i] of this.peerIndex) if (this.depths[i]! > 0) undeliveredBytes[p] = this.depths[i]!
    const remoteUndeliveredBytes: Record<string, Record<number, number>> = {}
    for (const [cluster, members] of this.remoteIndex) {
      for (const [p, i] of members) if (this.depths[i]! > 0) (remoteUndeliveredBytes[cluster] ??= {})[p] = this.depths[i]!
    }
    this.engine.stop()
    this.closed = true
    this.up.clear()
    return { undeliveredBytes, remoteUndeliveredBytes }
  }

  /** Registers the handler of a route (one per route). With `workers`, register in the handlers module instead. */
  override on(route: string, handler: Handler): this {
    return super.on(route, handler)
  }

  /** Registers a request handler (see `ReplicaBase.handle`). With `workers`, register in the handlers module instead. */
  override handle(route: string, handler: RequestHandler): this {
    return super.handle(route, handler)
  }

  protected override beforeRegister(method: 'on' | 'handle' | 'serve'): void {
    super.beforeRegister(method)
    if (this.opts.workers > 0) {
      throw new ConfigError('workers', `replica.${method}() on the main thread: with workers, handlers run in the workers; register them in the handlers module`)
    }
  }

  protected waitForDrain(to: number, signal: AbortSignal | undefined): Promise<void> {
    return this.waitFor(signal, (done) => {
      const onDrain = (peer: number): void => {
        if (peer === to) done()
      }
      this.events.on('drain', onDrain)
      return () => this.events.off('drain', onDrain)
    })
  }

  protected emitUnrouted(info: UnroutedInfo): void {
    if (this.events.listenerCount('unrouted') > 0) this.events.emit('unrouted', info)
  }

  protected emitError(err: unknown, info: { from: number; route: string }): void {
    if (this.events.listenerCount('error') > 0) {
      this.events.emit('error', err, info)
    } else {
      process.emitWarning(`nexres-rpc: handler for route "${info.route}" threw: ${String(err)}`, {
        code: 'NEXRES_HANDLER_ERROR',
      })
    }
  }

  // allowClient's say on a client that proved its key (PROTOCOL.md §6a):
  // only `true` serves it; its requests are not read until then.
  private decideClient(connection: number, keyHex: string, address: string): void {
    const allow = this.opts.allowClient
    const publicKey = new Uint8Array(Buffer.from(keyHex, 'hex'))
    const id = clientIdOf(publicKey)
    const answer = (ok: unknown, why: string): void => {
      if (!this.closed) this.engine.allowClient(connection, ok === true, ok === true ? '' : why)
    }
    const threw = (err: unknown): void => {
      this.emitError(err, { from: 0, route: 'allowClient' })
      answer(false, `allowClient failed for client ${id}`)
    }
    const refused = (ok: unknown): string => (ok === false ? `allowClient refused client ${id}` : `allowClient returned ${describeValue(ok)} for client ${id}, not true`)
    if (allow === undefined) return answer(true, '')
    try {
      const r = allow(publicKey, { id, address })
      if (r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function') {
        ;(r as Promise<unknown>).then((ok) => answer(ok, refused(ok)), threw)
      } else {
        answer(r, refused(r))
      }
    } catch (err) {
      threw(err)
    }
  }

  /** The configuration epoch (`cluster.epoch`, then what `reconfigure` set). */
  get epoch(): number {
    return this.opts.epoch
  }

  /** The remote clusters linked to now. */
  get remoteClusters(): readonly ClusterConfig[] {
    return this.opts.remoteClusters
  }

  /**
   * Changes, while running, who this replica links to: `cluster` is this
   * cluster's new configuration (same id; this replica at the same address;
   * `epoch` at least the current one, default the current one), and
   * `options.remoteClusters` the remote clusters (default: unchanged).
   * Added replicas are dialled and accepted; removed ones' links close and
   * what was queued for them (not acknowledged) is reported in
   * `'undelivered'`; a replica whose address or key changed, and every
   * replica when the epoch changes, is connected to again with a new
   * handshake, its queue kept in order (nothing lost, nothing twice). A
   * replica of this cluster on another epoch is refused (`STALE_EPOCH`).
   * Throws `CONFIG_INVALID` naming the field (nothing changed), `CLOSED`.
   */
  reconfigure(cluster: ClusterConfig, options?: ReconfigureOptions): void {
    checkOptions('options', options, RECONFIGURE_OPTION_KEYS)
    const c = validateCluster(cluster)
    if (this.closing !== undefined) throw new ClosedError()
    const old = this.opts
    if (c.id !== old.cluster.id) throw new ConfigError('cluster.id', `must stay "${old.cluster.id}" (this replica's cluster), got "${c.id}"`)
    const epoch = c.epoch ?? old.epoch
    if (epoch < old.epoch) throw new ConfigError('cluster.epoch', `must be at least the current epoch ${old.epoch}, got ${epoch}`)
    const self = c.replicas.find((r) => r.id === this.id)
    const was = old.cluster.replicas.find((r) => r.id === this.id)!
    if (self === undefined) throw new ConfigError('cluster.replicas', `must include this replica (${this.id}); to leave the cluster, close() it`)
    if (self.host !== was.host || self.port !== was.port) {
      throw new ConfigError('cluster.replicas', `replica ${this.id} (this one) must stay at ${was.host}:${was.port}, got ${self.host}:${self.port}`)
    }
    if (options?.privateKey !== undefined && old.auth === 'none') throw new ConfigError('options.privateKey', "is given but auth is 'none'")
    const privateKey = options?.privateKey === undefined ? old.privateKey : decodeKey('options.privateKey', options.privateKey)
    const authed = resolveAuth({ auth: old.auth, privateKey, receiveChunkBytes: old.receiveChunkBytes, maxChunksPerConnection: old.maxChunksPerConnection }, this.id, c)
    const remote = options?.remoteClusters === undefined ? { remoteClusters: old.remoteClusters, remotePeers: old.remotePeers } : resolveRemoteClusters(options.remoteClusters, c.id, old.auth, 'options.remoteClusters')
    const keyOf = new Map(authed.publicKeys.map((k) => [k.id, k.key]))
    const peers: PeerEntry[] = c.replicas
      .filter((r) => r.id !== this.id)
      .map((r) => {
        const key = keyOf.get(r.id)
        return key === undefined ? { id: r.id, host: r.host, port: r.port } : { id: r.id, host: r.host, port: r.port, key }
      })
    // What is staged goes to the links as they are now (a removed peer's
    // then comes back in 'undelivered').
    this.outbox.flush()
    try {
      const newKey = privateKey !== old.privateKey && privateKey !== undefined ? { privateKey } : {}
      this.engine.reconfigure({ epoch, peers: [...peers, ...remote.remotePeers], ...newKey })
    } catch (err) {
      // What only the engine can check: the slot table, and keys OpenSSL refuses.
      const m = (err as Error).message
      throw new ConfigError(/maxPeers/.test(m) ? 'maxPeers' : /private key/.test(m) ? 'options.privateKey' : 'cluster', m)
    }
    this.opts = { ...old, cluster: c, epoch, peers: peers.map((p) => p.id), publicKeys: authed.publicKeys, privateKey, ...remote }
    this.applySlots(this.engine.peers())
    this.pool?.tell({ type: 'membership', slots: this.engine.peers() })
  }

  /**
   * The main thread's slot table is always current (reconfigure applies it
   * before returning): a peer it does not know is not a peer, no native
   * call needed. Workers read theirs again (replica-base.ts).
   */
  protected override refreshSlots(): void {}

  private readonly onEvents = (events: RawEvent[]): void => {
    for (const [type, address, code, reason, remote, messages, bytes, firstId, lastId] of events) {
      // Replicas of this cluster (and client connections) by id; remote ones by slot.
      const who = address < SLOT_ADDRESS || type === EVENT_CLIENT_AUTH || type === EVENT_CLIENT_CLOSED ? undefined : this.peerOfAddress(address)
      const peer = who?.id ?? address
      const cluster = who?.cluster ?? this.cluster
      switch (type) {
        case EVENT_PEER_UP:
          this.up.add(address)
          this.events.emit('peer-up', peer, cluster)
          break
        case EVENT_PEER_DOWN:
          this.up.delete(address)
          this.events.emit('peer-down', peer, { code: code || 'CONNECTION_LOST', message: reason, cluster: cluster })
          break
        case EVENT_DRAIN: {
          const i = this.slotOfAddress(address)
          if (i >= 0) this.drainRequested[i] = 0
          this.engine.refreshDepths()
          this.events.emit('drain', peer, cluster)
          break
        }
        case EVENT_UNDELIVERED:
          this.engine.refreshDepths()
          this.events.emit('undelivered', peer, { cluster: cluster, reason, messages, bytes, firstId, lastId })
          break
        case EVENT_REJECT:
          this.events.emit('reject', peer === 0 ? { peer: undefined, code, message: reason, remote } : { peer, cluster: cluster, code, message: reason, remote })
          break
        case EVENT_EPOCH_AHEAD:
          this.events.emit('epoch-ahead', { peer, cluster: cluster, epoch: firstId, remote })
          break
        case EVENT_CLIENT_AUTH:
          this.decideClient(address, reason, remote)
          break
        case EVENT_CLIENT_CLOSED:
          this.clientClosed((address | CLIENT_FLAG) >>> 0)
          this.pool?.tell({ type: 'client-closed', dest: (address | CLIENT_FLAG) >>> 0 })
          break
      }
    }
  }
}
