import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto'
import { existsSync } from 'node:fs'
import { isAbsolute } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { checkKnownKeys, isBytes, sizeOf } from './args.js'
import { ENGINE_INTEGER_KEYS, ENGINE_INTEGER_OPTIONS, type EngineIntegers } from './engine-options.js'
import { ConfigError } from './errors.js'

/** One replica of the cluster as every member sees it. */
export interface ReplicaAddress {
  /** Replica id, an integer in [1, 2^31 - 1], unique in the cluster. */
  id: number
  /** Host or IP address the replica listens on for other replicas. */
  host: string
  /** Replica port (1-65535). */
  port: number
  /** Port for user clients (PROTOCOL.md §6); 0 = any free port (see `replica.clientPort`). */
  clientPort?: number
  /**
   * The replica's Ed25519 public key (32 bytes: a Uint8Array, or a string in
   * base64, base64url or hex), as printed by `nexres-rpc keygen`. Required
   * for every replica with `auth: 'mac'`.
   */
  publicKey?: string | Uint8Array
}

/** The cluster: an id every member must share, and its replicas. */
export interface ClusterConfig {
  /** Cluster id (1-255 bytes of UTF-8); peers with another id are refused. */
  id: string
  replicas: ReplicaAddress[]
  /**
   * Configuration epoch (an integer in [0, 2^32 - 1], default 0), carried in
   * every handshake: replicas of this cluster link only while they are on
   * the same epoch (`STALE_EPOCH` otherwise; the one behind gets
   * `'epoch-ahead'`). `replica.reconfigure` takes a cluster with an epoch
   * at least the current one. Remote clusters' epochs are their own.
   */
  epoch?: number
}

/** A replica of this cluster or of a remote one (`sendTo`, `msg.cluster`). */
export interface PeerRef {
  cluster: string
  id: number
}

/** @internal One peer as the engine takes it (engine::peer_config). */
export interface PeerEntry {
  /** Absent: this replica's cluster. */
  cluster?: string
  id: number
  host: string
  port: number
  key?: Uint8Array
}

export interface ReconnectOptions {
  /** First delay after a failed connection, in ms (default 50). */
  minMs?: number
  /** Upper bound of the exponential backoff, in ms (default 2000). */
  maxMs?: number
}

/** How replica links are protected (ReplicaOptions.auth). */
export type AuthMode = 'seal' | 'mac' | 'none'

export interface ReplicaOptions {
  /** This replica's id; must appear in `cluster.replicas`. */
  id: number
  cluster: ClusterConfig
  /**
   * Replicas of other clusters to link to (each with its own id and keys):
   * `sendTo({ cluster, id }, ...)`, `broadcastTo(clusterId, ...)`, and
   * `msg.cluster` on what they send. Changeable with `reconfigure`.
   */
  remoteClusters?: ClusterConfig[]
  /**
   * Replica connections: `'mac'` (the default when keys are given) proves
   * both replica ids in the handshake (Ed25519) and authenticates every
   * batch of frames (keys from X25519 + HKDF, AES-256-GCM tags with a
   * sequence number); `'seal'` does the same and also encrypts every batch
   * (AES-256-GCM, keys ratcheted forward as they are used); `'none'` must
   * be chosen explicitly. docs/SECURITY.md.
   */
  auth?: AuthMode
  /** This replica's Ed25519 private key (32-byte seed: Uint8Array, base64, base64url or hex), from `nexres-rpc keygen`. */
  privateKey?: string | Uint8Array
  /** Number of io threads (each runs one io_context), 1-64, default 2. */
  ioThreads?: number
  /**
   * Microseconds an io thread keeps polling its sockets after its last event
   * before it sleeps, 0-10000 (default 0: it sleeps at once). A request or
   * message that arrives within the spin is read with no wake-up of a
   * sleeping thread (the largest cost of a round trip on many virtual
   * machines); the price is CPU: under steady traffic each io thread stays
   * busy. docs/API.md.
   */
  ioSpinMicros?: number
  /** Address to bind the replica port to (default: this replica's `host`). */
  listenHost?: string
  /** Largest frame body accepted or sent, in bytes (default 16 MiB). */
  maxFrameBytes?: number
  /** `send` returns false once a peer's queue holds this many bytes (default 16 MiB). */
  highWaterMark?: number
  /** Hard cap per peer queue; sends past it throw `QUEUE_FULL` (default 256 MiB). */
  maxQueueBytes?: number
  /** Deadline for a connection's handshake, in ms (default 5000). */
  handshakeTimeoutMs?: number
  reconnect?: ReconnectOptions
  /** Size of the buffers sockets read into, in bytes (default 1 MiB). */
  receiveChunkBytes?: number
  /** Receive buffers one connection may hold before its socket is paused (default 8). */
  maxChunksPerConnection?: number
  /**
   * Receive memory of the replica port, all peer connections together, in
   * bytes (default 512 MiB). Past it, connections stop being read until the
   * application consumes what was read (TCP backpressure).
   */
  maxReceiveBytes?: number
  /**
   * Receive memory of the client port, apart from the replica port's, in
   * bytes (default 64 MiB): nothing clients send can take memory replica
   * links need. A client connection holds receive memory only while a
   * request is arriving (64 KiB chunks; an idle connection holds none); a
   * request bigger than a chunk is given room as its bytes arrive
   * (doubling), not by the length it declares, and such large requests
   * together hold at most half of this until they reach their full size.
   * Must be at least 4 × (`maxRequestBytes` + 24).
   */
  maxClientReceiveBytes?: number
  /**
   * Message handlers (`on`) whose returned promise has not settled, in all
   * (default 1024). A message whose handler returns a promise counts as
   * handled — and is acknowledged to its sender, and its payload stays valid
   * — only once the promise settles. A peer with its share of this pending
   * (the bound divided among the peers with messages pending or waiting) has
   * no more of its messages taken until some settle: they stay in its
   * receive buffers, its connection stops being read, and TCP slows it down.
   * A batch already taken is run whole, so a peer may pass its share by one
   * batch of messages.
   */
  maxPendingHandlers?: number
  /** How long `close()` waits for queued messages to be acknowledged, in ms (default 2000). */
  closeTimeoutMs?: number
  /** SO_SNDBUF of links to peers, in bytes (default 4 MiB; 0 = OS default). */
  sendBufferBytes?: number
  /** SO_RCVBUF of connections from peers, in bytes (default 0 = OS autotuning). */
  receiveBufferBytes?: number
  /** Largest request a client may send, in bytes (default 4 MiB). */
  maxRequestBytes?: number
  /** Unanswered requests per client connection before it is no longer read (default 1024). */
  maxClientInFlight?: number
  /** Close client connections idle this long, in ms (default 60000; 0 = never). */
  clientIdleTimeoutMs?: number
  /** Client connections open at once (default 10000). */
  maxClientConnections?: number
  /**
   * Client identities (PROTOCOL.md §6a): `'key'` serves only clients that
   * prove an Ed25519 key (`Client.connect({ privateKey })`), refusing
   * others with `BAD_AUTH`; `'none'` (default) serves both, and handlers see
   * `ctx.client.id` for those with a key.
   */
  clientAuth?: 'none' | 'key'
  /**
   * Encrypted client connections (PROTOCOL.md §6b): `'required'` serves only
   * clients that connect with `seal: true` (with or without a key),
   * refusing others with `BAD_AUTH`; `'optional'` (default) serves both.
   */
  clientSeal?: 'optional' | 'required'
  /**
   * Decides, once a client has proved its key and before any of its
   * requests is read, whether it is served: true serves it, anything else
   * (false, a throw, a rejected promise) refuses it with `BAD_AUTH`. The
   * handshake deadline (`handshakeTimeoutMs`) bounds a promise.
   */
  allowClient?: (publicKey: Uint8Array, client: { id: string; address: string }) => boolean | Promise<boolean>
  /** Connections one client key may have open at once (default 64); more are refused `TOO_MANY_CONNECTIONS`. */
  maxClientKeyConnections?: number
  /**
   * Unanswered requests of one client key over all its connections (default
   * 4096), checked at each sealed batch: past it, none of its connections is
   * read until replies bring it under.
   */
  maxClientKeyInFlight?: number
  /**
   * The handshake budget (SECURITY.md): key exchanges (replica handshakes
   * with auth 'mac', client handshakes with a key) per second per remote
   * address (default 100) and in all (default 2000), each also the burst.
   * Checked before any public-key operation; past it a handshake is refused
   * `RATE_LIMITED` at once. 0 = no bound.
   */
  handshakesPerSecondPerAddress?: number
  handshakesPerSecond?: number
  /** Heartbeat period in ms (default 1000; 0 = no heartbeats). Answered on io threads, even while JS is busy. */
  heartbeatIntervalMs?: number
  /** A peer not heard from in this long is reported down (`HEARTBEAT_TIMEOUT`) and reconnected; default 5000, 0 = never. */
  heartbeatTimeoutMs?: number
  /**
   * A peer down (or never up) this long has what is queued for it given up
   * and reported in an `'undelivered'` event; checked at each reconnection
   * attempt (default 0: keep queuing up to `maxQueueBytes`).
   */
  peerDownDeadlineMs?: number
  /**
   * Replica-port connections still in their handshake, in all (default 1024).
   * At the limit the oldest such connection is refused (`TOO_MANY_CONNECTIONS`)
   * to make room; established sessions are not counted (one per peer id is
   * kept). See docs/SECURITY.md "Connection limits".
   */
  maxReplicaConnections?: number
  /** The same, per remote IP address (default 64). */
  maxConnectionsPerAddress?: number
  /**
   * A frame (or handshake) begun on a replica connection must be complete
   * within this many ms, else `READ_TIMEOUT` (default 10000; 0 = no deadline).
   * Raise it for very large frames over slow links.
   */
  frameReadTimeoutMs?: number
  /** PINGs a replica connection may send per second before `TOO_MANY_PINGS` (default 100; 0 = no limit). */
  maxPingsPerSecond?: number
  /**
   * Distinct peers (of this cluster and of remote ones) the replica can know
   * over its life, 1-65536 (default 256): a replica removed by
   * `reconfigure` keeps its place (what is in flight from it still names
   * it) and gets it back when added again. A configuration that would need
   * more is refused (`CONFIG_INVALID`).
   */
  maxPeers?: number
  /**
   * Handler threads: this many `worker_threads`, each loading the `handlers`
   * module, all taking messages and requests from the same native input
   * queue (default 0: handlers run on the main thread). See docs/API.md.
   */
  workers?: number
  /**
   * With `workers`: the module each worker loads (absolute path or `file:`
   * URL). Its default export (or `setup`) is called with a `WorkerReplica`
   * to register handlers on: `export default (replica) => { replica.on(...) }`.
   */
  handlers?: string | URL
  /**
   * With `workers`: `'peer'` (default) handles the messages of one peer and
   * the requests of one client connection in the order read, one worker at
   * a time; `'none'` spreads them over every worker.
   */
  ordering?: 'peer' | 'none'
  /** With `workers`: data passed to every worker's setup function (structured-cloneable). */
  workerData?: unknown
}

/**
 * Every key `Replica.start` takes: any other is CONFIG_INVALID naming it
 * (a typo such as `highWatermark` would otherwise be ignored silently). The
 * Record type makes the compiler keep this list and ReplicaOptions in step.
 */
export const REPLICA_OPTION_KEYS: Readonly<Record<keyof ReplicaOptions, true>> = {
  id: true,
  cluster: true,
  auth: true,
  privateKey: true,
  ioThreads: true,
  ioSpinMicros: true,
  listenHost: true,
  maxFrameBytes: true,
  highWaterMark: true,
  maxQueueBytes: true,
  handshakeTimeoutMs: true,
  reconnect: true,
  receiveChunkBytes: true,
  maxChunksPerConnection: true,
  maxReceiveBytes: true,
  maxClientReceiveBytes: true,
  maxPendingHandlers: true,
  closeTimeoutMs: true,
  sendBufferBytes: true,
  receiveBufferBytes: true,
  maxRequestBytes: true,
  maxClientInFlight: true,
  clientIdleTimeoutMs: true,
  maxClientConnections: true,
  clientAuth: true,
  clientSeal: true,
  allowClient: true,
  maxClientKeyConnections: true,
  maxClientKeyInFlight: true,
  handshakesPerSecondPerAddress: true,
  handshakesPerSecond: true,
  heartbeatIntervalMs: true,
  heartbeatTimeoutMs: true,
  peerDownDeadlineMs: true,
  maxReplicaConnections: true,
  maxConnectionsPerAddress: true,
  frameReadTimeoutMs: true,
  maxPingsPerSecond: true,
  maxPeers: true,
  remoteClusters: true,
  workers: true,
  handlers: true,
  ordering: true,
  workerData: true,
}

/** Every key of `ReplicaOptions.reconnect`. */
export const RECONNECT_OPTION_KEYS: Readonly<Record<keyof ReconnectOptions, true>> = { minMs: true, maxMs: true }

/** Options checked, defaults filled (the engine's integers as ENGINE_INTEGER_OPTIONS says). */
export interface ResolvedOptions extends EngineIntegers {
  id: number
  cluster: ClusterConfig
  peers: number[]
  epoch: number
  remoteClusters: ClusterConfig[]
  /** Every peer of remoteClusters, with its key when auth is on. */
  remotePeers: PeerEntry[]
  listenHost: string | undefined
  highWaterMark: number
  maxQueueBytes: number
  reconnectMinMs: number
  reconnectMaxMs: number
  receiveChunkBytes: number
  closeTimeoutMs: number
  clientPort: number | undefined
  workers: number
  handlers: string | undefined
  ordering: 'peer' | 'none'
  workerData: unknown
  auth: AuthMode
  /** With auth 'mac' or 'seal': this replica's private key seed. */
  privateKey: Uint8Array | undefined
  /** With auth 'mac' or 'seal': every other replica's public key. */
  publicKeys: { id: number; key: Uint8Array }[]
  clientAuth: 'none' | 'key'
  clientSeal: 'optional' | 'required'
  allowClient: ((publicKey: Uint8Array, client: { id: string; address: string }) => unknown) | undefined
}

const MiB = 1024 * 1024

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'object') return 'an object'
  return String(v)
}

function integer(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(field, `must be an integer in [${min}, ${max}], got ${describe(v)}`)
  }
  return v
}

function optionalInteger(field: string, v: unknown, min: number, max: number, fallback: number): number {
  return v === undefined ? fallback : integer(field, v, min, max)
}

function nonEmptyString(field: string, v: unknown, maxBytes: number): string {
  if (typeof v !== 'string' || v.length === 0) {
    throw new ConfigError(field, `must be a non-empty string, got ${describe(v)}`)
  }
  if (Buffer.byteLength(v) > maxBytes) throw new ConfigError(field, `must be at most ${maxBytes} bytes of UTF-8`)
  return v
}

/** Checks a cluster configuration; throws a `ConfigError` naming the field. */
export function validateCluster(cluster: unknown, field = 'cluster'): ClusterConfig {
  if (typeof cluster !== 'object' || cluster === null) {
    throw new ConfigError(field, `must be an object, got ${describe(cluster)}`)
  }
  const c = cluster as { id?: unknown; replicas?: unknown; epoch?: unknown }
  checkKnownKeys(`${field}.`, c as Record<string, unknown>, CLUSTER_KEYS)
  const id = nonEmptyString(`${field}.id`, c.id, 255)
  const epoch = c.epoch === undefined ? undefined : integer(`${field}.epoch`, c.epoch, 0, 0xffffffff)
  if (!Array.isArray(c.replicas) || c.replicas.length === 0) {
    throw new ConfigError(`${field}.replicas`, `must be a non-empty array, got ${describe(c.replicas)}`)
  }
  const ids = new Set<number>()
  const addrs = new Set<string>()
  const replicas: ReplicaAddress[] = c.replicas.map((r: unknown, i: number) => {
    const f = `${field}.replicas[${i}]`
    if (typeof r !== 'object' || r === null) throw new ConfigError(f, `must be an object, got ${describe(r)}`)
    const rr = r as { id?: unknown; host?: unknown; port?: unknown; clientPort?: unknown; publicKey?: unknown }
    const rid = integer(`${f}.id`, rr.id, 1, 0x7fffffff)
    if (ids.has(rid)) throw new ConfigError(`${f}.id`, `duplicate replica id ${rid}`)
    ids.add(rid)
    const host = nonEmptyString(`${f}.host`, rr.host, 253)
    const port = integer(`${f}.port`, rr.port, 1, 65535)
    const key = `${host}:${port}`
    if (addrs.has(key)) throw new ConfigError(`${f}.port`, `address ${key} is used by another replica`)
    addrs.add(key)
    const publicKey = rr.publicKey === undefined ? undefined : decodeKey(`${f}.publicKey`, rr.publicKey)
    const withKey = publicKey === undefined ? {} : { publicKey }
    if (rr.clientPort === undefined) return { id: rid, host, port, ...withKey }
    const clientPort = integer(`${f}.clientPort`, rr.clientPort, 0, 65535)
    if (clientPort !== 0) {
      const ckey = `${host}:${clientPort}`
      if (addrs.has(ckey)) throw new ConfigError(`${f}.clientPort`, `address ${ckey} is already used`)
      addrs.add(ckey)
    }
    return { id: rid, host, port, clientPort, ...withKey }
  })
  return epoch === undefined ? { id, replicas } : { id, replicas, epoch }
}

const CLUSTER_KEYS: Readonly<Record<keyof ClusterConfig, true>> = { id: true, replicas: true, epoch: true }

/**
 * Checks `remoteClusters` (each a cluster, none with this cluster's id or
 * another's); returns them and their replicas as peers, each with its
 * public key when auth is on.
 */
export function resolveRemoteClusters(v: unknown, localId: string, auth: AuthMode, field = 'remoteClusters'): { remoteClusters: ClusterConfig[]; remotePeers: PeerEntry[] } {
  if (v === undefined) return { remoteClusters: [], remotePeers: [] }
  if (!Array.isArray(v)) throw new ConfigError(field, `must be an array of clusters, got ${describe(v)}`)
  const seen = new Set<string>([localId])
  const remoteClusters: ClusterConfig[] = []
  const remotePeers: PeerEntry[] = []
  v.forEach((c: unknown, i: number) => {
    const f = `${field}[${i}]`
    const rc = validateCluster(c, f)
    if (seen.has(rc.id)) throw new ConfigError(`${f}.id`, rc.id === localId ? `is this replica's own cluster id "${rc.id}"` : `cluster "${rc.id}" appears twice`)
    seen.add(rc.id)
    remoteClusters.push(rc)
    rc.replicas.forEach((r, j) => {
      if (auth !== 'none' && r.publicKey === undefined) throw new ConfigError(`${f}.replicas[${j}].publicKey`, `is required with auth: '${auth}'`)
      const peer: PeerEntry = { cluster: rc.id, id: r.id, host: r.host, port: r.port }
      if (auth !== 'none') peer.key = decodeKey(`${f}.replicas[${j}].publicKey`, r.publicKey)
      remotePeers.push(peer)
    })
  })
  return { remoteClusters, remotePeers }
}

/** Checks replica options and fills in defaults; throws a `ConfigError` naming the field. */
export function resolveOptions(options: unknown): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError('options', `must be an object, got ${describe(options)}`)
  }
  const o = options as Record<string, unknown>
  checkKnownKeys('', o, REPLICA_OPTION_KEYS)
  const cluster = validateCluster(o.cluster)
  const id = integer('id', o.id, 1, 0x7fffffff)
  if (!cluster.replicas.some((r) => r.id === id)) {
    throw new ConfigError('id', `replica ${id} is not in cluster.replicas (ids: ${cluster.replicas.map((r) => r.id).join(', ')})`)
  }
  const reconnect = o.reconnect === undefined ? {} : o.reconnect
  if (typeof reconnect !== 'object' || reconnect === null) {
    throw new ConfigError('reconnect', `must be an object, got ${describe(reconnect)}`)
  }
  const rc = reconnect as Record<string, unknown>
  checkKnownKeys('reconnect.', rc, RECONNECT_OPTION_KEYS)
  const reconnectMinMs = optionalInteger('reconnect.minMs', rc.minMs, 1, 60_000, 50)
  const reconnectMaxMs = optionalInteger('reconnect.maxMs', rc.maxMs, 1, 600_000, Math.max(2000, reconnectMinMs))
  if (reconnectMaxMs < reconnectMinMs) throw new ConfigError('reconnect.maxMs', `must be >= reconnect.minMs (${reconnectMinMs})`)
  // The engine's integers, each within its limits (one table: engine-options.ts).
  const e = {} as EngineIntegers
  for (const k of ENGINE_INTEGER_KEYS) {
    const [min, max, dflt] = ENGINE_INTEGER_OPTIONS[k]
    e[k] = optionalInteger(k, o[k], min, max, dflt)
  }
  const { heartbeatIntervalMs, heartbeatTimeoutMs, maxPingsPerSecond, maxRequestBytes } = e
  const highWaterMark = optionalInteger('highWaterMark', o.highWaterMark, 1, 2 ** 40, 16 * MiB)
  const maxQueueBytes = optionalInteger('maxQueueBytes', o.maxQueueBytes, 1, 2 ** 42, 256 * MiB)
  if (maxQueueBytes < highWaterMark) throw new ConfigError('maxQueueBytes', `must be >= highWaterMark (${highWaterMark})`)
  if (heartbeatTimeoutMs > 0 && heartbeatIntervalMs > 0 && heartbeatTimeoutMs < 2 * heartbeatIntervalMs) {
    throw new ConfigError('heartbeatTimeoutMs', `must be at least twice heartbeatIntervalMs (${heartbeatIntervalMs}), or 0`)
  }
  if (maxPingsPerSecond > 0 && heartbeatIntervalMs > 0 && maxPingsPerSecond < 2 * Math.ceil(1000 / heartbeatIntervalMs)) {
    // Peers of the same configuration ping at most once per interval.
    throw new ConfigError('maxPingsPerSecond', `must be at least ${2 * Math.ceil(1000 / heartbeatIntervalMs)} (twice the PINGs per second of heartbeatIntervalMs ${heartbeatIntervalMs}), or 0`)
  }
  let listenHost: string | undefined
  if (o.listenHost !== undefined) listenHost = nonEmptyString('listenHost', o.listenHost, 253)
  const workers = optionalInteger('workers', o.workers, 0, 256, 0)
  let handlers: string | undefined
  if (workers > 0) handlers = handlerModule(o.handlers)
  else if (o.handlers !== undefined) throw new ConfigError('handlers', 'is only used with workers > 0')
  const ordering = o.ordering === undefined ? 'peer' : o.ordering
  if (ordering !== 'peer' && ordering !== 'none') throw new ConfigError('ordering', `must be 'peer' or 'none', got ${describe(ordering)}`)
  const receiveChunkBytes = optionalInteger('receiveChunkBytes', o.receiveChunkBytes, 64 * 1024, 256 * MiB, MiB)
  if (e.maxReceiveBytes < 4 * receiveChunkBytes) {
    throw new ConfigError('maxReceiveBytes', `must be at least 4 × receiveChunkBytes (${4 * receiveChunkBytes})`)
  }
  if (e.maxClientReceiveBytes < 4 * (maxRequestBytes + 24)) {
    throw new ConfigError('maxClientReceiveBytes', `must be at least 4 × (maxRequestBytes + 24) (${4 * (maxRequestBytes + 24)}): a request that grows to its full size holds its last two buffers at once, and growing requests may hold half of it`)
  }
  const authed = resolveAuth(o, id, cluster)
  const remote = resolveRemoteClusters(o.remoteClusters, cluster.id, authed.auth)
  const localPeers = cluster.replicas.length - 1
  if (localPeers + remote.remotePeers.length > e.maxPeers) {
    throw new ConfigError('maxPeers', `is ${e.maxPeers}, fewer than the ${localPeers + remote.remotePeers.length} peers configured`)
  }
  return {
    ...e,
    id,
    cluster,
    peers: cluster.replicas.filter((r) => r.id !== id).map((r) => r.id),
    epoch: cluster.epoch ?? 0,
    ...remote,
    listenHost,
    highWaterMark,
    maxQueueBytes,
    reconnectMinMs,
    reconnectMaxMs,
    receiveChunkBytes,
    closeTimeoutMs: optionalInteger('closeTimeoutMs', o.closeTimeoutMs, 0, 600_000, 2000),
    clientPort: cluster.replicas.find((r) => r.id === id)!.clientPort,
    workers,
    handlers,
    ordering,
    workerData: o.workerData,
    ...authed,
    ...resolveClientAuth(o),
  }
}

function resolveClientAuth(o: Record<string, unknown>): {
  clientAuth: 'none' | 'key'
  clientSeal: 'optional' | 'required'
  allowClient: ResolvedOptions['allowClient']
} {
  const clientAuth = o.clientAuth ?? 'none'
  if (clientAuth !== 'none' && clientAuth !== 'key') throw new ConfigError('clientAuth', `must be 'none' or 'key', got ${describe(clientAuth)}`)
  const clientSeal = o.clientSeal ?? 'optional'
  if (clientSeal !== 'optional' && clientSeal !== 'required') throw new ConfigError('clientSeal', `must be 'optional' or 'required', got ${describe(clientSeal)}`)
  const allowClient = o.allowClient
  if (allowClient !== undefined && typeof allowClient !== 'function') throw new ConfigError('allowClient', `must be a function (publicKey, client) => boolean | Promise<boolean>, got ${describe(allowClient)}`)
  return { clientAuth, clientSeal, allowClient: allowClient as ResolvedOptions['allowClient'] }
}

/** Decodes a 32-byte key: Uint8Array, hex, base64 or base64url. */
export function decodeKey(field: string, v: unknown): Uint8Array {
  let bytes: Uint8Array | undefined
  if (isBytes(v)) bytes = v
  else if (typeof v === 'string') {
    const t = v.trim()
    if (/^[0-9a-fA-F]{64}$/.test(t)) bytes = Buffer.from(t, 'hex')
    else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(t)) bytes = Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64')
  }
  if (bytes === undefined || sizeOf(bytes) !== 32) {
    throw new ConfigError(field, `must be a 32-byte Ed25519 key (Uint8Array, hex, base64 or base64url), got ${describe(v)}`)
  }
  return new Uint8Array(bytes)
}

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

/** The Ed25519 public key of a 32-byte private key seed. */
export function publicKeyOf(seed: Uint8Array): Uint8Array {
  const priv = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' })
  const jwk = createPublicKey(priv).export({ format: 'jwk' }) as { x?: string }
  return new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url'))
}

export function resolveAuth(
  o: Record<string, unknown>,
  id: number,
  cluster: ClusterConfig,
): { auth: AuthMode; privateKey: Uint8Array | undefined; publicKeys: { id: number; key: Uint8Array }[] } {
  const anyKeys = o.privateKey !== undefined || cluster.replicas.some((r) => r.publicKey !== undefined)
  const auth = o.auth ?? (anyKeys ? 'mac' : undefined)
  if (auth === undefined) {
    throw new ConfigError(
      'auth',
      "no keys given: set privateKey and every cluster.replicas[].publicKey for authenticated replicas (see `nexres-rpc keygen`), or choose auth: 'none' explicitly",
    )
  }
  if (auth !== 'mac' && auth !== 'seal' && auth !== 'none') throw new ConfigError('auth', `must be 'seal', 'mac' or 'none', got ${describe(auth)}`)
  if (auth === 'none') {
    // A key given with auth 'none' would suggest authenticated links that are not there.
    if (o.privateKey !== undefined) throw new ConfigError('privateKey', "is given but auth is 'none': replica links would not be authenticated; drop privateKey or use auth: 'mac' or 'seal'")
    return { auth, privateKey: undefined, publicKeys: [] }
  }
  // A sealed batch (up to 256 KiB, PROTOCOL.md §2a) is held until its SEAL
  // arrives: the receive buffers of one connection must hold one.
  const chunk = typeof o.receiveChunkBytes === 'number' ? Math.max(o.receiveChunkBytes, 64 * 1024) : 1024 * 1024
  const chunks = typeof o.maxChunksPerConnection === 'number' ? o.maxChunksPerConnection : 8
  const need = Math.ceil((256 * 1024) / chunk) + 2
  if (chunks < need) {
    throw new ConfigError('maxChunksPerConnection', `must be at least ${need} with auth '${auth}' and receiveChunkBytes ${chunk} (a sealed batch of 256 KiB is held until it checks)`)
  }
  if (o.privateKey === undefined) throw new ConfigError('privateKey', `is required with auth: '${auth}'`)
  if (o.auth === undefined && !cluster.replicas.some((r) => r.publicKey !== undefined)) {
    // auth omitted: a private key alone made it 'mac', yet no replica has a public key.
    throw new ConfigError('privateKey', "is given, which makes auth 'mac', but no cluster.replicas[].publicKey is: give every replica's publicKey, or drop privateKey and choose auth: 'none'")
  }
  const privateKey = decodeKey('privateKey', o.privateKey)
  const publicKeys: { id: number; key: Uint8Array }[] = []
  const seen = new Map<string, number>()
  cluster.replicas.forEach((r, i) => {
    if (r.publicKey === undefined) throw new ConfigError(`cluster.replicas[${i}].publicKey`, `is required with auth: '${auth}'`)
    const key = decodeKey(`cluster.replicas[${i}].publicKey`, r.publicKey)
    const hex = Buffer.from(key).toString('hex')
    const other = seen.get(hex)
    if (other !== undefined) throw new ConfigError(`cluster.replicas[${i}].publicKey`, `is the same key as replica ${other}'s: every replica needs its own`)
    seen.set(hex, r.id)
    if (r.id === id) {
      if (!Buffer.from(publicKeyOf(privateKey)).equals(Buffer.from(key))) {
        throw new ConfigError('privateKey', `does not match cluster.replicas[${i}].publicKey (replica ${id}'s own key)`)
      }
    } else {
      publicKeys.push({ id: r.id, key })
    }
  })
  return { auth, privateKey, publicKeys }
}

/**
 * A new Ed25519 key pair for a replica: `publicKey` goes into the cluster
 * config (`cluster.replicas[i].publicKey`), `privateKey` stays with that
 * replica (`ReplicaOptions.privateKey`). Both base64url.
 */
export function generateKeyPair(): { publicKey: string; privateKey: string } {
  const { privateKey } = generateKeyPairSync('ed25519')
  const jwk = privateKey.export({ format: 'jwk' }) as { x?: string; d?: string }
  return { publicKey: jwk.x ?? '', privateKey: jwk.d ?? '' }
}

/** The handlers module as a file: URL string; it must exist. */
function handlerModule(v: unknown): string {
  let url: URL
  if (v instanceof URL) url = v
  else if (typeof v === 'string' && v.startsWith('file:')) url = new URL(v)
  else if (typeof v === 'string' && isAbsolute(v)) url = pathToFileURL(v)
  else throw new ConfigError('handlers', `must be an absolute path or a file: URL of the module workers load, got ${describe(v)}`)
  if (url.protocol !== 'file:') throw new ConfigError('handlers', `must be a file: URL, got ${url.protocol}`)
  if (!existsSync(fileURLToPath(url))) throw new ConfigError('handlers', `no such file: ${fileURLToPath(url)}`)
  return url.href
}
