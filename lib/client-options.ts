// What Client.connect takes: the options, their keys and limits, and the
// checks that turn them into the resolved options a Client runs with (every
// error a ConfigError naming the field and what arrived).
import type { CallOptions } from './call-options.js'
import { checkKnownKeys, checkOptions, checkSignal, checkTimeout } from './args.js'
import { type ClientKeyPair, clientKeyPair } from './client-auth.js'
import type { Endpoint } from './client-handshake.js'
import { decodeKey } from './config.js'
import { ConfigError, InvalidArgumentError, describeValue } from './errors.js'

const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
const DEFAULT_MAX_IN_FLIGHT = 1024

export interface ClientOptions {
  /** One replica's client address... */
  host?: string
  port?: number
  /**
   * ...or several: the client uses one at a time and moves on when it fails.
   * Each may carry the replica's `publicKey` (see `publicKey`).
   */
  replicas?: (Endpoint & { publicKey?: string | Uint8Array })[]
  /**
   * This client's Ed25519 private key (as `generateKeyPair()` gives it): the
   * client proves it in every handshake (PROTOCOL.md §6a) and its
   * connections are sealed (every batch MAC'd both ways); handlers see
   * `ctx.client.id` and `ctx.client.publicKey`. Needed by replicas with
   * `clientAuth: 'key'`.
   */
  privateKey?: string | Uint8Array
  /**
   * With `host`/`port` and `privateKey`: the replica's public key. The
   * client then checks that the replica proves it in the handshake (a
   * replica with `auth: 'mac'` signs with its key) and refuses one that
   * does not.
   */
  publicKey?: string | Uint8Array
  /**
   * Encrypt the connection (PROTOCOL.md §6b), with or without `privateKey`:
   * ephemeral session keys from an X25519 exchange, then every batch both
   * ways encrypted with AES-256-GCM. Needed by replicas with `clientSeal:
   * 'required'`. Give the replica's `publicKey` too, or an active man in the
   * middle could stand in for the replica.
   */
  seal?: boolean
  /** Cluster id to check in the handshake (optional). */
  clusterId?: string
  /** Default per-call timeout in ms (default 30000). */
  timeoutMs?: number
  /**
   * Calls in flight at once; see `whenFull`. Default: the replica's
   * `maxClientInFlight` as its CLIENT_WELCOME announces it (1024 before the
   * first connection, or with a replica that announces none).
   */
  maxInFlight?: number
  /** At `maxInFlight`: wait for room (default) or reject with `TOO_MANY_REQUESTS`. */
  whenFull?: 'wait' | 'reject'
  /**
   * Largest request sent, in bytes. Default: the replica's `maxRequestBytes`
   * as its CLIENT_WELCOME announces it (4 MiB, the server's default, before
   * the first connection or with a replica that announces none). A value
   * given here applies as well: the smaller of the two wins. A larger call
   * rejects alone with `REQUEST_TOO_LARGE`, without I/O.
   */
  maxRequestBytes?: number
  /**
   * Deadline for connecting plus the handshake, in ms (default 5000): per
   * attempt, or with `waitForReady` for all of `Client.connect`'s attempts.
   */
  connectTimeoutMs?: number
  /**
   * `Client.connect` only: instead of one round over the replicas, keep
   * trying (with the `reconnect` backoff) until one accepts, for at most
   * `connectTimeoutMs` in all; then reject with the last cause.
   */
  waitForReady?: boolean
  /** Backoff between reconnection attempts, in ms (default 50 doubling to 2000). */
  reconnect?: { minMs?: number; maxMs?: number }
  /**
   * With `replicas` (all n of them): up to `f` of them may be faulty. The
   * client then keeps a connection to every replica and calls take a
   * `quorum` option (default f + 1 equal replies); `Client.connect`
   * resolves once f + 1 replicas are connected. Without `quorum` a call
   * goes to one replica at a time, as without `f`.
   */
  f?: number
}


/**
 * Every key `Client.connect` takes (any other is CONFIG_INVALID naming it).
 * `waitForReady` is listed ahead of its option (issue 10 item 6).
 */
const CLIENT_OPTION_KEYS: Readonly<Record<keyof ClientOptions | 'waitForReady', true>> = {
  host: true,
  port: true,
  replicas: true,
  clusterId: true,
  timeoutMs: true,
  maxInFlight: true,
  whenFull: true,
  maxRequestBytes: true,
  connectTimeoutMs: true,
  reconnect: true,
  waitForReady: true,
  f: true,
  privateKey: true,
  publicKey: true,
  seal: true,
}
const ENDPOINT_KEYS: Readonly<Record<keyof Endpoint | 'publicKey', true>> = { host: true, port: true, publicKey: true }
const CLIENT_RECONNECT_KEYS: Readonly<Record<keyof NonNullable<ClientOptions['reconnect']>, true>> = { minMs: true, maxMs: true }
/** Every key of a call's options. */
const CALL_OPTION_KEYS: Readonly<Record<keyof CallOptions, true>> = { timeoutMs: true, signal: true, quorum: true, to: true, key: true }

/** Checks a call's options (undefined: none). */
export function checkCallOptions(options: CallOptions | undefined, replicas = 0): void {
  if (options === undefined) return
  checkOptions('options', options, CALL_OPTION_KEYS)
  if (options.timeoutMs !== undefined) checkTimeout('options.timeoutMs', options.timeoutMs)
  checkSignal('options.signal', options.signal)
  const quorum = options.quorum !== undefined || options.to !== undefined || options.key !== undefined
  if (quorum && replicas === 0) {
    const which = options.quorum !== undefined ? 'quorum' : options.to !== undefined ? 'to' : 'key'
    throw new InvalidArgumentError(`options.${which}`, 'no quorum option on a client connected without f (connect with { replicas, f })', options[which])
  }
  if (options.quorum !== undefined && (typeof options.quorum !== 'number' || !Number.isInteger(options.quorum) || options.quorum < 1 || options.quorum > replicas)) {
    throw new InvalidArgumentError('options.quorum', `an integer from 1 to ${replicas} (the replicas)`, options.quorum)
  }
  if (options.to !== undefined && options.to !== 'all' && options.to !== 'leader') throw new InvalidArgumentError('options.to', "'all' or 'leader'", options.to)
  if (options.key !== undefined && typeof options.key !== 'function') throw new InvalidArgumentError('options.key', 'a function (reply) => string | Uint8Array', options.key)
}

/** The options a Client runs with, defaults filled in. */
export interface ResolvedClientOptions {
  clusterId: string
  timeoutMs: number
  maxInFlight: number
  whenFull: 'wait' | 'reject'
  maxRequestBytes: number
  connectTimeoutMs: number
  waitForReady: boolean
  minMs: number
  maxMs: number
  /** Faulty replicas tolerated; undefined: one replica at a time. */
  f: number | undefined
  /** The client's key (§6a); undefined: none. */
  key: ClientKeyPair | undefined
  /** §6b: the connection is encrypted. */
  seal: boolean
  /** Each endpoint's public key, when given. */
  replicaKeys: (Uint8Array | undefined)[]
}

/** Checks `Client.connect`'s options; throws a ConfigError naming the field. */
export function resolveClientOptions(options: ClientOptions): { endpoints: Endpoint[]; opts: ResolvedClientOptions } {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ConfigError('options', `must be an object, got ${describeValue(options)}`)
  }
  checkKnownKeys('', options, CLIENT_OPTION_KEYS)
  const single = options.replicas === undefined
  if (!single && (options.host !== undefined || options.port !== undefined)) throw new ConfigError('replicas', 'give host and port, or replicas, not both')
  if (!single && !Array.isArray(options.replicas)) throw new ConfigError('replicas', `must be an array of { host, port }, got ${describeValue(options.replicas)}`)
  const endpoints: unknown[] = options.replicas ?? (options.host !== undefined || options.port !== undefined ? [{ host: options.host ?? '127.0.0.1', port: options.port }] : [])
  if (endpoints.length === 0) throw new ConfigError('replicas', 'give host and port, or a non-empty replicas array')
  endpoints.forEach((e, i) => {
    const f = single ? '' : `replicas[${i}].`
    if (typeof e !== 'object' || e === null) throw new ConfigError(`replicas[${i}]`, `must be an object { host, port }, got ${describeValue(e)}`)
    const { host, port } = e as { host?: unknown; port?: unknown }
    checkKnownKeys(`replicas[${i}].`, e, ENDPOINT_KEYS)
    if (typeof host !== 'string' || host.length === 0) throw new ConfigError(`${f}host`, `must be a non-empty string, got ${describeValue(host)}`)
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${f}port`, `must be an integer in [1, 65535], got ${describeValue(port)}`)
  })
  const resolvedEndpoints = (endpoints as Endpoint[]).map((e) => ({ host: e.host, port: e.port }))
  const positive = (field: string, v: unknown, fallback: number): number => {
    if (v === undefined) return fallback
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 0x7fffffff) throw new ConfigError(field, `must be a positive integer (at most 2^31 - 1), got ${describeValue(v)}`)
    return v
  }
  const reconnect: unknown = options.reconnect ?? {}
  if (typeof reconnect !== 'object' || reconnect === null) throw new ConfigError('reconnect', `must be an object, got ${describeValue(reconnect)}`)
  checkKnownKeys('reconnect.', reconnect, CLIENT_RECONNECT_KEYS)
  const rc = reconnect as { minMs?: unknown; maxMs?: unknown }
  const clusterId: unknown = options.clusterId ?? ''
  if (typeof clusterId !== 'string') throw new ConfigError('clusterId', `must be a string, got ${describeValue(clusterId)}`)
  const opts: ResolvedClientOptions = {
    clusterId,
    timeoutMs: positive('timeoutMs', options.timeoutMs, 30_000),
    maxInFlight: positive('maxInFlight', options.maxInFlight, DEFAULT_MAX_IN_FLIGHT),
    whenFull: options.whenFull ?? 'wait',
    maxRequestBytes: positive('maxRequestBytes', options.maxRequestBytes, DEFAULT_MAX_REQUEST_BYTES),
    connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs, 5000),
    waitForReady: options.waitForReady ?? false,
    minMs: positive('reconnect.minMs', rc.minMs, 50),
    maxMs: positive('reconnect.maxMs', rc.maxMs, 2000),
    f: undefined,
    key: options.privateKey === undefined ? undefined : clientKeyPair(decodeKey('privateKey', options.privateKey)),
    seal: options.seal ?? false,
    replicaKeys: single
      ? [options.publicKey === undefined ? undefined : decodeKey('publicKey', options.publicKey)]
      : (endpoints as { publicKey?: unknown }[]).map((e, i) => (e.publicKey === undefined ? undefined : decodeKey(`replicas[${i}].publicKey`, e.publicKey))),
  }
  if (!single && options.publicKey !== undefined) throw new ConfigError('publicKey', 'goes with host and port; with replicas, give each its replicas[].publicKey')
  if (typeof opts.seal !== 'boolean') throw new ConfigError('seal', `must be a boolean, got ${describeValue(opts.seal)}`)
  if (opts.key === undefined && !opts.seal && opts.replicaKeys.some((k) => k !== undefined)) {
    throw new ConfigError(single ? 'publicKey' : 'replicas[].publicKey', "is checked in a keyed or sealed handshake only: give privateKey or seal: true too (see generateKeyPair())")
  }
  if (opts.whenFull !== 'wait' && opts.whenFull !== 'reject') throw new ConfigError('whenFull', `must be 'wait' or 'reject', got ${describeValue(opts.whenFull)}`)
  if (Buffer.byteLength(opts.clusterId) > 255) throw new ConfigError('clusterId', 'must be at most 255 bytes')
  if (opts.maxMs < opts.minMs) throw new ConfigError('reconnect.maxMs', `must be >= reconnect.minMs (${opts.minMs})`)
  if (typeof opts.waitForReady !== 'boolean') throw new ConfigError('waitForReady', `must be a boolean, got ${typeof opts.waitForReady}`)
  if (options.f !== undefined) {
    const f: unknown = options.f
    if (typeof f !== 'number' || !Number.isInteger(f) || f < 0) throw new ConfigError('f', `must be an integer >= 0, got ${describeValue(f)}`)
    if (single) throw new ConfigError('f', 'needs replicas: every replica of the cluster')
    if (resolvedEndpoints.length < f + 1) throw new ConfigError('f', `${f} faulty replicas need at least ${f + 1} replicas (a quorum of f + 1), got ${resolvedEndpoints.length}`)
    const seen = new Set(resolvedEndpoints.map((e) => `${e.host}:${e.port}`))
    if (seen.size !== resolvedEndpoints.length) throw new ConfigError('replicas', 'lists one replica twice: it would be counted twice toward a quorum')
    opts.f = f
  }
  return { endpoints: resolvedEndpoints, opts }
}
