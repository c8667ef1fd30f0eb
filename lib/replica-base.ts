// What a replica and each of its worker threads share: the receive side
// (inbound.ts: route tables, batches to handlers) and, here, the send side
// (staging, message ids, queue depths, backpressure, signed broadcasts). Replica (lib/replica.ts) adds the connection events, stats
// and lifecycle; WorkerReplica (lib/worker.ts) runs in a worker thread.
import { checkOptions, checkReplicaId, checkRoute, checkSignal, isBytes, payloadBytes, payloadList, sizeOf, viewBytes } from './args.js'
import type { PeerRef } from './config.js'
import { AbortedError, ClosedError, ConfigError, InvalidArgumentError, PayloadTooLargeError, QueueFullError, UnknownPeerError } from './errors.js'
import { Inbound } from './inbound.js'
import { clientKeyOf } from './client-auth.js'
import { CLIENT_FLAG, CLUSTER_BROADCAST, SLOT_ADDRESS, type NativeSender, type PeerSlotEntry } from './native.js'
import { BROADCAST, HEADER_BYTES, Outbox } from './outbox.js'
import { routeId } from './route.js'
import { KIND_PUSH, KIND_REPLY, SIGNED_TRAILER_BYTES } from './wire.js'

/** Known keys of the per-call options objects (CONFIG_INVALID names any other). */
const SEND_ASYNC_OPTION_KEYS: Record<keyof SendAsyncOptions, true> = { signal: true, sign: true }
const BROADCAST_OPTION_KEYS: Record<keyof BroadcastOptions, true> = { sign: true }

export interface SendOptions {
  /** Sign the message with this replica's key (needs `auth: 'mac'`); as `broadcast`'s. */
  sign?: boolean
}

const SEND_OPTION_KEYS: Record<keyof SendOptions, true> = { sign: true }

export interface SendAsyncOptions extends SendOptions {
  /** Rejects with `ABORTED` when it fires while waiting (nothing queued). */
  signal?: AbortSignal
}

export interface BroadcastOptions {
  /** Sign the message with this replica's key (needs `auth: 'mac'`). */
  sign?: boolean
}

/** Route names are never this, so the one-entry route cache starts empty. */
const NO_ROUTE: unique symbol = Symbol('no route')

/** @internal the limits the send side checks. */
export interface ReplicaLimits {
  id: number
  /** This replica's cluster id (`msg.cluster` of its own cluster's messages). */
  clusterId: string
  peers: readonly number[]
  /** Peer slots (queue depth entries): maxPeers. */
  maxPeers: number
  /** The slot table, when known (workers: from the main thread). */
  slots?: PeerSlotEntry[]
  maxFrameBytes: number
  maxQueueBytes: number
  highWaterMark: number
  /** Keys are loaded (auth 'mac'): broadcast({ sign: true }) works. */
  canSign: boolean
}

/** Frame flag: the body ends with the sender's Ed25519 signature (PROTOCOL.md §3). */
export { FLAG_SIGNED } from './wire.js'
export { META_ENTRIES, type BatchHandler, type Handler, type UnroutedInfo } from './inbound.js'
/** Signed payloads are copied into the staging buffer: at most this big. */
const MAX_SIGNED_BYTES = 1024 * 1024 - 1024

/** @internal */
export abstract class ReplicaBase extends Inbound {
  /** Ids of the other replicas of this cluster in the current configuration. */
  get peers(): readonly number[] {
    return this.memberIds
  }

  protected readonly limits: ReplicaLimits
  /** Queue depth per peer slot, refreshed natively. */
  protected readonly depths: Float64Array
  /** Local peer id -> slot, members only. */
  protected readonly peerIndex = new Map<number, number>()
  /** Remote cluster id -> (replica id -> slot), members only. */
  protected readonly remoteIndex = new Map<string, Map<number, number>>()
  /** Slot -> who it is (every slot in use, member or not). */
  protected slotPeers: { id: number; cluster: string; remote: boolean; member: boolean }[] = []
  private memberIds: number[] = []
  /** Slots of this cluster's members (broadcast). */
  private memberSlots: number[] = []
  /** peer id -> slot, for ids below its length (-1: not a peer); the hot path of send. */
  private slotById: Int32Array = new Int32Array(0)
  private lastRouteName: string | typeof NO_ROUTE = NO_ROUTE
  private lastRouteId = 0
  protected readonly staged: Float64Array
  private readonly drainWanted: Uint8Array
  protected readonly drainRequested: Uint8Array
  // Last message id used, as u32 halves (ids start at 1).
  private idLo = 0
  private idHi = 0
  /** Ids are given natively at flush (several threads send on the same links). */
  protected stampIds = false
  /** Aborted when close() starts: ends waits such as sendAsync. */
  protected readonly lifetime = new AbortController()

  protected constructor(limits: ReplicaLimits) {
    super(limits.id, limits.clusterId)
    this.limits = limits
    const n = limits.maxPeers
    this.staged = new Float64Array(n)
    this.drainWanted = new Uint8Array(n)
    this.drainRequested = new Uint8Array(n)
    this.depths = new Float64Array(Math.max(1, n))
    if (limits.slots !== undefined) this.applySlots(limits.slots)
  }

  /**
   * The slot table from native (engine::slot order): who each slot is and
   * which are in the configuration now. Sends to a peer outside it throw
   * UNKNOWN_PEER.
   */
  protected applySlots(entries: readonly PeerSlotEntry[]): void {
    this.peerIndex.clear()
    this.remoteIndex.clear()
    const slotPeers: { id: number; cluster: string; remote: boolean; member: boolean }[] = []
    const ids: number[] = []
    const members: number[] = []
    let maxId = 0
    for (const [slot, id, cluster, member] of entries) {
      const remote = cluster !== ''
      if (!member) this.drainRequested[slot] = 0
      slotPeers[slot] = { id, cluster: remote ? cluster : this.cluster, remote, member }
      if (!member) continue
      if (remote) {
        let m = this.remoteIndex.get(cluster)
        if (m === undefined) this.remoteIndex.set(cluster, (m = new Map()))
        m.set(id, slot)
      } else {
        this.peerIndex.set(id, slot)
        ids.push(id)
        members.push(slot)
        if (id > maxId) maxId = id
      }
    }
    this.slotPeers = slotPeers
    this.memberIds = ids
    this.memberSlots = members
    const table = new Int32Array(maxId < 65536 ? maxId + 1 : 0).fill(-1)
    if (maxId < 65536) for (const [id, slot] of this.peerIndex) table[id] = slot
    this.slotById = table
  }

  /** The slot of a peer named in a native address (an id of this cluster, or SLOT_ADDRESS | slot). */
  protected slotOfAddress(address: number): number {
    if (address >= SLOT_ADDRESS) return address - SLOT_ADDRESS
    return this.peerIndex.get(address) ?? this.slotPeers.findIndex((p) => p !== undefined && !p.remote && p.id === address)
  }

  /** Who a native address names: { id, cluster }; for a slot not known yet, the table is read again. */
  protected peerOfAddress(address: number): { id: number; cluster: string; remote: boolean } {
    if (address < SLOT_ADDRESS) return { id: address, cluster: this.cluster, remote: false }
    const slot = address - SLOT_ADDRESS
    let p = this.slotPeers[slot]
    if (p === undefined) {
      this.refreshSlots()
      p = this.slotPeers[slot]
    }
    return p ?? { id: 0, cluster: '', remote: true }
  }

  /** Reads the slot table from native again (a slot it has not seen). */
  protected refreshSlots(): void {
    if (!this.closed) this.applySlots(this.native.peers())
  }

  protected override senderOf(address: number): { id: number; cluster: string } {
    return this.peerOfAddress(address)
  }

  /** Subclasses call this once their native side exists. */
  protected attach(native: NativeSender): void {
    this.native = native
    this.outbox = new Outbox(native, this.id, this.afterFlush)
  }

  /** Resolves on the peer's next drain (below half the high-water mark). */
  protected abstract waitForDrain(peer: number, signal: AbortSignal | undefined): Promise<void>

  /**
   * A wait that `arm(done)` ends (it returns its own disposer), rejected with
   * `ABORTED` when the signal fires or `CLOSED` when the endpoint closes.
   */
  protected waitFor(signal: AbortSignal | undefined, arm: (done: () => void) => () => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let disarm: () => void = () => undefined
      const cleanup = (): void => {
        disarm()
        signal?.removeEventListener('abort', onAbort)
        this.lifetime.signal.removeEventListener('abort', onClose)
      }
      const onAbort = (): void => {
        cleanup()
        reject(new AbortedError(signal?.reason))
      }
      const onClose = (): void => {
        cleanup()
        reject(new ClosedError())
      }
      disarm = arm(() => {
        cleanup()
        resolve()
      })
      signal?.addEventListener('abort', onAbort, { once: true })
      this.lifetime.signal.addEventListener('abort', onClose, { once: true })
    })
  }
  /**
   * Queues a message for one peer, like `stream.write()`: always queued
   * (unless it throws), returns false once the peer's queue is past
   * `highWaterMark` — wait for the `'drain'` event before sending more.
   * Throws `QUEUE_FULL` past `maxQueueBytes`, `UNKNOWN_PEER`, `PAYLOAD_TOO_LARGE`, `CLOSED`,
   * and `INVALID_ARGUMENT` (nothing done) for arguments of the wrong kind.
   * Any ArrayBufferView is sent as its bytes, a string as UTF-8.
   */
  send(to: number, route: string, payload: Uint8Array | ArrayBufferView | string, options?: SendOptions): boolean {
    const idx = this.slotOfFresh(to)
    if (idx < 0) checkReplicaId('to', to)
    const rid = this.route(route)
    const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : isBytes(payload) ? payload : viewBytes('payload', payload)
    const sign = options === undefined ? false : this.signOption(options, SEND_OPTION_KEYS)
    if (this.closing !== undefined) throw new ClosedError()
    if (idx < 0) throw new UnknownPeerError(to)
    return this.queue(idx, to, rid, bytes, sign)
  }

  /**
   * `send` of several messages to one peer in one call, in order: each
   * payload is a message of its own (its own message id; the peer's
   * handlers see them one by one, or together in an `onBatch` handler).
   * All or nothing: every argument and every payload's size is checked, and
   * the queue bound taken for all of them, before any is queued. Returns
   * false once the peer's queue is past `highWaterMark`; throws as `send`
   * (`INVALID_ARGUMENT` naming `payloads[i]`).
   */
  sendMany(to: number, route: string, payloads: readonly (Uint8Array | ArrayBufferView | string)[], options?: SendOptions): boolean {
    const idx = this.slotOfFresh(to)
    if (idx < 0) checkReplicaId('to', to)
    const rid = this.route(route)
    const list = payloadList('payloads', payloads)
    const sign = options === undefined ? false : this.signOption(options, SEND_OPTION_KEYS)
    if (this.closing !== undefined) throw new ClosedError()
    if (idx < 0) throw new UnknownPeerError(to)
    const n = list.length
    const extra = sign ? SIGNED_TRAILER_BYTES : 0
    let frames = 0
    for (let i = 0; i < n; i++) {
      const len = sizeOf(list[i]!) + extra
      this.checkFrame(len, sign)
      frames += HEADER_BYTES + len
    }
    if (n === 0) return true
    const after = this.reserve(idx, to, frames)
    const outbox = this.outbox
    const staged = this.staged
    for (let i = 0; i < n; i++) {
      const lo = (this.idLo + 1) >>> 0
      this.idLo = lo
      if (lo === 0) this.idHi++
      const bytes = list[i]!
      const size = sizeOf(bytes)
      if (sign) outbox.stageSigned(to, rid, lo, this.idHi, bytes)
      else outbox.stage(to, rid, lo, this.idHi, bytes, size)
      // Counted one by one: a full stage is handed to native (and the
      // count reset) in the middle of the list.
      staged[idx]! += HEADER_BYTES + size + extra
    }
    return this.belowMark(idx, after)
  }

  /**
   * `send` to a replica of a remote cluster (`remoteClusters`), or of this
   * one (`{ cluster: <this cluster's id>, id }`): the same guarantees,
   * backpressure and errors. Throws `UNKNOWN_PEER` for a replica that is not
   * in the configuration.
   */
  sendTo(to: PeerRef, route: string, payload: Uint8Array | ArrayBufferView | string, options?: SendOptions): boolean {
    const idx = this.slotOfRef(to)
    const rid = this.route(route)
    const bytes = payloadBytes('payload', payload)
    const sign = options === undefined ? false : this.signOption(options, SEND_OPTION_KEYS)
    if (this.closing !== undefined) throw new ClosedError()
    if (idx < 0) throw new UnknownPeerError(to.id, to.cluster)
    const dest = to.cluster === this.cluster ? to.id : (SLOT_ADDRESS | idx) >>> 0
    return this.queue(idx, dest, rid, bytes, sign)
  }

  /**
   * `broadcast` to every replica of a remote cluster (`remoteClusters`).
   * Throws `UNKNOWN_CLUSTER` (`UnknownPeerError`, code `UNKNOWN_PEER`) for a
   * cluster that is not configured, and like `broadcast` otherwise.
   */
  broadcastTo(clusterId: string, route: string, payload: Uint8Array | ArrayBufferView | string, options?: BroadcastOptions): boolean {
    if (typeof clusterId !== 'string' || clusterId.length === 0) throw new InvalidArgumentError('clusterId', 'a cluster id (string)', clusterId)
    if (clusterId === this.cluster) return this.broadcast(route, payload, options)
    const rid = this.route(route)
    const bytes = payloadBytes('payload', payload)
    const sign = options === undefined ? false : this.signOption(options, BROADCAST_OPTION_KEYS)
    if (this.closing !== undefined) throw new ClosedError()
    if (!this.remoteIndex.has(clusterId)) this.refreshSlots()
    const members = this.remoteIndex.get(clusterId)
    if (members === undefined || members.size === 0) throw new UnknownPeerError(undefined, clusterId)
    const slots = [...members.values()]
    return this.stageBroadcast((CLUSTER_BROADCAST | slots[0]!) >>> 0, slots, rid, bytes, sign)
  }

  /** The slot of a { cluster, id } (checked), -1 when it is not a member now. */
  private slotOfRef(to: PeerRef): number {
    if (typeof to !== 'object' || to === null) throw new InvalidArgumentError('to', 'a { cluster, id } of a replica', to)
    const { cluster, id } = to
    if (typeof cluster !== 'string' || cluster.length === 0) throw new InvalidArgumentError('to.cluster', 'a cluster id (string)', cluster)
    checkReplicaId('to.id', id)
    if (cluster === this.cluster) return this.slotOfFresh(id)
    const idx = this.remoteIndex.get(cluster)?.get(id)
    if (idx !== undefined) return idx
    this.refreshSlots()
    return this.remoteIndex.get(cluster)?.get(id) ?? -1
  }

  /**
   * slotOf, and for a peer not known here the slot table read again from
   * native first (a worker may see a message from a peer added by the main
   * thread's reconfigure before the news of it).
   */
  private slotOfFresh(peer: number): number {
    const idx = this.slotOf(peer)
    if (idx >= 0 || typeof peer !== 'number') return idx
    this.refreshSlots()
    return this.slotOf(peer)
  }

  /** `options.sign` checked (options of the kind `keys` lists); true to sign. */
  private signOption(options: SendOptions, keys: Readonly<Record<string, true>>): boolean {
    checkOptions('options', options, keys)
    const s = options.sign
    if (s !== undefined && typeof s !== 'boolean') throw new InvalidArgumentError('options.sign', 'a boolean', s)
    if (s === true && !this.limits.canSign) throw new ConfigError('auth', "signed messages need auth 'mac' or 'seal' (this replica's private key)")
    return s === true
  }

  /** The send side of `send`, its arguments checked. */
  private queue(idx: number, to: number, rid: number, bytes: Uint8Array, sign = false): boolean {
    const len = sizeOf(bytes) + (sign ? SIGNED_TRAILER_BYTES : 0)
    this.checkFrame(len, sign)
    const frame = HEADER_BYTES + len
    const after = this.reserve(idx, to, frame)
    const lo = (this.idLo + 1) >>> 0
    this.idLo = lo
    if (lo === 0) this.idHi++
    if (sign) this.outbox.stageSigned(to, rid, lo, this.idHi, bytes)
    else this.outbox.stage(to, rid, lo, this.idHi, bytes, len)
    return this.took(idx, frame, after)
  }

  /** A frame of `len` bytes (signature trailer included) fits the limits: PAYLOAD_TOO_LARGE else. */
  private checkFrame(len: number, sign: boolean): void {
    if (len > this.limits.maxFrameBytes) throw new PayloadTooLargeError(len, this.limits.maxFrameBytes)
    if (sign && len > MAX_SIGNED_BYTES) throw new PayloadTooLargeError(len, MAX_SIGNED_BYTES)
  }

  /**
   * Room for `frames` more bytes in slot idx's queue: its depth after them,
   * or QUEUE_FULL past maxQueueBytes (nothing staged yet).
   */
  private reserve(idx: number, to: number, frames: number): number {
    let after = this.depths[idx]! + this.staged[idx]! + frames
    if (after > this.limits.maxQueueBytes) {
      // The native depth seen at the last flush may be stale: look again.
      this.native.refreshDepths()
      after = this.depths[idx]! + this.staged[idx]! + frames
      if (after > this.limits.maxQueueBytes) throw new QueueFullError(this.slotPeers[idx]?.id ?? to, after - frames, this.limits.maxQueueBytes)
    }
    return after
  }

  /** `frames` bytes staged for slot idx (`after`: reserve's answer): false past highWaterMark. */
  private took(idx: number, frames: number, after: number): boolean {
    this.staged[idx]! += frames
    return this.belowMark(idx, after)
  }

  /** False when slot idx's queue (`after` bytes deep, by reserve) is past highWaterMark. */
  private belowMark(idx: number, after: number): boolean {
    if (after < this.limits.highWaterMark) return true
    // The depth seen at the last flush may predate ACKs: look again first.
    this.native.refreshDepths()
    if (this.depths[idx]! + this.staged[idx]! < this.limits.highWaterMark) return true
    this.drainWanted[idx] = 1
    return false
  }

  /**
   * Answers a client's request that reached this replica through another
   * (a leader forwarded it; `ctx.origin` on that replica says who asked):
   * a REPLY with `requestId` on this replica's connection from the client
   * `clientId` (`ctx.client.id`: clients with a key only). The client counts
   * it toward a quorum call with that id and drops it otherwise. Returns
   * false, queuing nothing, when that client is not connected here or has
   * more unread replies than the bound (8 MiB). Throws `CLOSED`,
   * `PAYLOAD_TOO_LARGE`, and `INVALID_ARGUMENT` for arguments of the wrong
   * kind.
   */
  replyTo(clientId: string, requestId: number, route: string, payload: Uint8Array | ArrayBufferView | string): boolean {
    const key = clientKeyOf('clientId', clientId)
    if (typeof requestId !== 'number' || !Number.isSafeInteger(requestId) || requestId < 0) {
      throw new InvalidArgumentError('requestId', 'a request id (ctx.requestId: an integer >= 0)', requestId)
    }
    return this.toClient(key, this.route(route), requestId, payloadBytes('payload', payload), KIND_REPLY)
  }

  /**
   * Sends a message the client did not ask for to the client `clientId`
   * (`ctx.client.id`), connected to this replica with its key; it arrives at
   * the client's `client.on(route, handler)`. Returns false, queuing
   * nothing, when that client is not connected here or has more unread
   * replies than the bound (8 MiB). Throws like `replyTo`.
   */
  push(clientId: string, route: string, payload: Uint8Array | ArrayBufferView | string): boolean {
    const key = clientKeyOf('clientId', clientId)
    return this.toClient(key, this.route(route), 0, payloadBytes('payload', payload), KIND_PUSH)
  }

  private toClient(key: Uint8Array, rid: number, id: number, bytes: Uint8Array, kind: number): boolean {
    if (this.closing !== undefined) throw new ClosedError()
    const size = sizeOf(bytes)
    if (size > this.limits.maxFrameBytes) throw new PayloadTooLargeError(size, this.limits.maxFrameBytes)
    const connection = this.native.clientConnection(key)
    if (connection <= 0) return false
    this.outbox.stageUncounted((connection | CLIENT_FLAG) >>> 0, rid, id % 2 ** 32, Math.floor(id / 2 ** 32), bytes, size, kind)
    return true
  }

  /**
   * Like `send`, but waits for room first: resolves once the message is
   * queued with the peer's queue below `highWaterMark` (waiting for
   * `'drain'` as long as it is not). Rejects with `ABORTED` when the signal
   * fires (nothing queued), `CLOSED`, `UNKNOWN_PEER`, `PAYLOAD_TOO_LARGE`,
   * `INVALID_ARGUMENT` (checked before waiting).
   */
  async sendAsync(to: number, route: string, payload: Uint8Array | ArrayBufferView | string, options?: SendAsyncOptions): Promise<void> {
    const idx = this.slotOfFresh(to)
    if (idx < 0) checkReplicaId('to', to)
    const rid = this.route(route)
    const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : isBytes(payload) ? payload : viewBytes('payload', payload)
    const sign = options === undefined ? false : this.signOption(options, SEND_ASYNC_OPTION_KEYS)
    const signal = options?.signal
    checkSignal('options.signal', signal)
    if (this.closing !== undefined) throw new ClosedError()
    if (idx < 0) throw new UnknownPeerError(to)
    const len = sizeOf(bytes) + (sign ? SIGNED_TRAILER_BYTES : 0)
    this.checkFrame(len, sign)
    for (;;) {
      if (signal?.aborted) throw new AbortedError(signal.reason)
      if (this.closing !== undefined) throw new ClosedError()
      if (this.depths[idx]! + this.staged[idx]! < this.limits.highWaterMark) break
      this.native.refreshDepths()
      if (this.depths[idx]! + this.staged[idx]! < this.limits.highWaterMark) break
      this.drainWanted[idx] = 1
      this.outbox.flush() // hands the drain request to native
      await this.waitForDrain(to, signal)
    }
    this.queue(idx, to, rid, bytes, sign)
  }

  /**
   * Queues one message for every other replica; encoded once and shared by
   * every peer's queue. Returns false if any peer's queue is past the
   * high-water mark. Throws `QUEUE_FULL` (queuing nothing) if any would pass
   * `maxQueueBytes`; `INVALID_ARGUMENT` (nothing queued) for arguments of
   * the wrong kind.
   */
  broadcast(route: string, payload: Uint8Array | ArrayBufferView | string, options?: BroadcastOptions): boolean {
    const rid = this.route(route)
    const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : isBytes(payload) ? payload : viewBytes('payload', payload)
    const sign = options === undefined ? false : this.signOption(options, BROADCAST_OPTION_KEYS)
    if (this.closing !== undefined) throw new ClosedError()
    return this.stageBroadcast(BROADCAST, this.memberSlots, rid, bytes, sign)
  }

  /** One frame for every slot of `slots` (staged once, for `dest`): the queue checks of broadcast. */
  private stageBroadcast(dest: number, slots: readonly number[], rid: number, bytes: Uint8Array, sign: boolean): boolean {
    const len = sizeOf(bytes) + (sign ? SIGNED_TRAILER_BYTES : 0)
    this.checkFrame(len, sign)
    const frame = HEADER_BYTES + len
    const n = slots.length
    if (n === 0) return true
    let below = true
    let refreshed = false
    for (let k = 0; k < n; k++) {
      const i = slots[k]!
      let after = this.depths[i]! + this.staged[i]! + frame
      if (after > this.limits.maxQueueBytes && !refreshed) {
        refreshed = true
        this.native.refreshDepths()
        after = this.depths[i]! + this.staged[i]! + frame
      }
      if (after > this.limits.maxQueueBytes) {
        const p = this.slotPeers[i]
        throw new QueueFullError(p?.id ?? 0, after - frame, this.limits.maxQueueBytes)
      }
    }
    const lo = (this.idLo + 1) >>> 0
    this.idLo = lo
    if (lo === 0) this.idHi++
    if (sign) this.outbox.stageSigned(dest, rid, lo, this.idHi, bytes)
    else this.outbox.stage(dest, rid, lo, this.idHi, bytes, len)
    let high = false
    for (let k = 0; k < n; k++) {
      const i = slots[k]!
      if ((this.staged[i]! += frame) + this.depths[i]! >= this.limits.highWaterMark) high = true
    }
    if (!high) return true
    // The depths seen at the last flush may predate ACKs: look again first.
    this.native.refreshDepths()
    for (let k = 0; k < n; k++) {
      const i = slots[k]!
      if (this.staged[i]! + this.depths[i]! >= this.limits.highWaterMark) {
        this.drainWanted[i] = 1
        below = false
      }
    }
    return below
  }

  /** The peer's index, -1 if `peer` is not a peer id (or not a number at all). */
  private slotOf(peer: number): number {
    if (typeof peer !== 'number') return -1
    const table = this.slotById
    if (peer >= 0 && peer < table.length && Number.isInteger(peer)) return table[peer]!
    return this.peerIndex.get(peer) ?? -1
  }

  /** The id of a route name (checked); a one-entry cache for the usual run of sends on one route. */
  private route(name: string): number {
    if (name === this.lastRouteName) return this.lastRouteId
    checkRoute('route', name)
    const id = routeId(name)
    this.lastRouteName = name
    this.lastRouteId = id
    return id
  }

  /**
   * Id of the last message `send`/`broadcast` queued (ids increase by one
   * per message). With `workers`, ids are given when staged messages are
   * handed to the links, shared by every thread: this flushes first.
   */
  get lastMessageId(): number {
    if (this.stampIds) {
      this.outbox.flush()
      return this.native.lastId()
    }
    return this.idLo + this.idHi * 2 ** 32
  }

  /** Sends what is staged now instead of at the end of the tick. */
  flush(): void {
    this.outbox.flush()
  }

  private readonly afterFlush = (): void => {
    this.staged.fill(0)
    const want = this.drainWanted
    for (let i = 0; i < want.length; i++) {
      if (want[i] === 1 && this.drainRequested[i] === 0) {
        this.drainRequested[i] = 1
        const p = this.slotPeers[i]
        if (p !== undefined) this.native.wantDrain(p.remote ? (SLOT_ADDRESS | i) >>> 0 : p.id)
      }
      want[i] = 0
    }
  }

}
