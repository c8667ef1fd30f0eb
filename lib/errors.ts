/**
 * Errors thrown or emitted by nexres-rpc. Every error has a stable `code`;
 * the list is in docs/API.md and never changes meaning once released.
 */
/** Codes of errors raised locally; a `RemoteError` carries the server's code. */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'QUEUE_FULL'
  | 'CLOSED'
  | 'UNKNOWN_PEER'
  | 'PAYLOAD_TOO_LARGE'
  | 'LISTEN_FAILED'
  | 'TIMEOUT'
  | 'CONNECTION_LOST'
  | 'ABORTED'
  | 'REQUEST_TOO_LARGE'
  | 'TOO_MANY_REQUESTS'
  | 'REMOTE_ERROR'
  | 'INVALID_ARGUMENT'
  | 'NO_QUORUM'

export class NexresError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}

/** A configuration value is missing or wrong; `field` names it (e.g. `cluster.replicas[2].port`). */
export class ConfigError extends NexresError {
  readonly field: string
  constructor(field: string, message: string) {
    super('CONFIG_INVALID', `${field}: ${message}`)
    this.field = field
  }
}

/** The peer's queue reached `maxQueueBytes`; the message was not queued. */
export class QueueFullError extends NexresError {
  readonly peer: number
  readonly queuedBytes: number
  constructor(peer: number, queuedBytes: number, limit: number) {
    super('QUEUE_FULL', `queue for replica ${peer} holds ${queuedBytes} bytes; maxQueueBytes is ${limit}`)
    this.peer = peer
    this.queuedBytes = queuedBytes
  }
}

/** The replica was closed. */
export class ClosedError extends NexresError {
  constructor(what = 'replica') {
    super('CLOSED', `${what} is closed`)
  }
}

/** `send` named a replica id that is not a peer in the cluster. */
export class UnknownPeerError extends NexresError {
  /** The replica id (0 when a whole cluster is unknown: `broadcastTo`). */
  readonly peer: number
  /** The cluster asked for, for `sendTo`/`broadcastTo` (undefined for `send`). */
  readonly cluster: string | undefined
  constructor(peer: number | undefined, cluster?: string) {
    super(
      'UNKNOWN_PEER',
      peer === undefined
        ? `cluster ${String(cluster)} has no replica in this replica's configuration (remoteClusters)`
        : cluster === undefined
          ? `replica ${String(peer)} is not a peer in this cluster`
          : `replica ${String(peer)} of cluster ${cluster} is not in this replica's configuration`,
    )
    this.peer = peer ?? 0
    this.cluster = cluster
  }
}

/** A payload larger than `maxFrameBytes`. */
export class PayloadTooLargeError extends NexresError {
  constructor(size: number, limit: number) {
    super('PAYLOAD_TOO_LARGE', `payload of ${size} bytes exceeds maxFrameBytes ${limit}`)
  }
}

/** Which port a `ListenError` is about. */
export type ListenPort = 'replica' | 'client'

/**
 * A port could not be bound: `which` says whether the replica port or the
 * client port, `address` is `host:port` as configured (`host` and `port`
 * apart). Nothing the failed start took stays bound.
 */
export class ListenError extends NexresError {
  readonly which: ListenPort
  readonly host: string
  readonly port: number
  readonly address: string
  constructor(message: string, where: { which: ListenPort; host: string; port: number; address: string }, cause?: unknown) {
    super('LISTEN_FAILED', message, { cause })
    this.which = where.which
    this.host = where.host
    this.port = where.port
    this.address = where.address
  }
}

/**
 * Why a client connection could not be made or was lost (fields of
 * `ConnectionLostError` and of a connect `TimeoutError`).
 */
export interface ConnectionFailure {
  /** The underlying error: a socket error (`code` `ECONNREFUSED`, `ENOTFOUND`, ...) or, when several attempts failed, the last attempt's cause. */
  cause?: unknown
  /** The replica address this is about (the last one tried). */
  endpoint?: { host: string; port: number }
  /** The replica refused the connection: its reason code (docs/PROTOCOL.md §4), e.g. `WRONG_CLUSTER`. */
  reasonCode?: string
  /** ...and its explanation, e.g. `cluster id does not match`. */
  reason?: string
  /** Connect failures: one error per replica tried, in the order of `replicas`, each its last attempt's failure. */
  errors?: Error[]
}

function assignFailure(target: ConnectionFailure, d: ConnectionFailure | undefined): void {
  if (d === undefined) return
  if (d.endpoint !== undefined) target.endpoint = { host: d.endpoint.host, port: d.endpoint.port }
  if (d.reasonCode !== undefined) target.reasonCode = d.reasonCode
  if (d.reason !== undefined) target.reason = d.reason
  if (d.errors !== undefined) target.errors = d.errors
}

/**
 * A wait ran out of time: `waitForPeers`, a call, or a client connection
 * whose handshake got no answer within `connectTimeoutMs` (then with the
 * `ConnectionFailure` fields).
 */
export class TimeoutError extends NexresError implements ConnectionFailure {
  declare readonly endpoint?: { host: string; port: number }
  declare readonly reasonCode?: string
  declare readonly reason?: string
  declare readonly errors?: Error[]
  constructor(message: string, details?: ConnectionFailure) {
    super('TIMEOUT', message, details?.cause !== undefined ? { cause: details.cause } : undefined)
    assignFailure(this, details)
  }
}

/**
 * The connection to the replica was lost with the call in flight, or could
 * not be made; `cause`, `reasonCode`/`reason` (a refusal by the replica),
 * `endpoint` and `errors` say why (see `ConnectionFailure`).
 */
export class ConnectionLostError extends NexresError implements ConnectionFailure {
  declare readonly endpoint?: { host: string; port: number }
  declare readonly reasonCode?: string
  declare readonly reason?: string
  declare readonly errors?: Error[]
  constructor(message: string, cause?: unknown, details?: Omit<ConnectionFailure, 'cause'>) {
    super('CONNECTION_LOST', message, cause !== undefined ? { cause } : undefined)
    assignFailure(this, details)
  }
}

/** What one replica answered to a quorum call (see `QuorumError`). */
export interface QuorumReply {
  /** The replica, as given in `replicas`. */
  replica: { host: string; port: number }
  /** Its reply, when it sent one. */
  reply?: Uint8Array
  /** Why it gave none: its error (`TIMEOUT`, `CONNECTION_LOST`, a `RemoteError`, ...); absent while still pending. */
  error?: Error
}

/**
 * A quorum call cannot be answered: no `quorum` replicas returned the same
 * reply (conflicting replies, errors, time running out). `replies` lists
 * what each replica answered, in the order of `replicas`.
 */
export class QuorumError extends NexresError {
  readonly quorum: number
  readonly replies: QuorumReply[]
  constructor(quorum: number, replies: QuorumReply[]) {
    const answered = replies.filter((r) => r.reply !== undefined).length
    const failed = replies.filter((r) => r.error !== undefined).length
    super('NO_QUORUM', `no ${quorum} replicas returned the same reply (${answered} replied, ${failed} failed, of ${replies.length})`)
    this.quorum = quorum
    this.replies = replies
  }
}

/** The call's AbortSignal fired. */
export class AbortedError extends NexresError {
  constructor(reason?: unknown) {
    super('ABORTED', 'the call was aborted', { cause: reason })
  }
}

/** A request larger than `maxRequestBytes`. */
export class RequestTooLargeError extends NexresError {
  constructor(size: number, limit: number) {
    super('REQUEST_TOO_LARGE', `request of ${size} bytes exceeds maxRequestBytes ${limit}`)
  }
}

/** `maxInFlight` calls are outstanding and the client was told to reject rather than wait. */
export class TooManyRequestsError extends NexresError {
  constructor(limit: number) {
    super('TOO_MANY_REQUESTS', `${limit} calls already in flight (maxInFlight)`)
  }
}

/**
 * The server answered with an error: `remoteCode` is its stable code
 * (`NO_SUCH_ROUTE`, `HANDLER_ERROR`, or one a handler chose).
 */
export class RemoteError extends NexresError {
  readonly remoteCode: string
  /** The route the call named (set by `Client.call`). */
  declare readonly route?: string
  constructor(remoteCode: string, message: string, route?: string) {
    super('REMOTE_ERROR', `${remoteCode}: ${message}`)
    this.remoteCode = remoteCode
    if (route !== undefined) this.route = route
  }
}

/**
 * A short description of a value for error messages: `'undefined'`,
 * `'null'`, `'number 3'`, `'string "ab"'`, `'ArrayBuffer'`, `'DataView'`,
 * `'object'` (a plain object), `'array'`, `'function f'`, `'symbol Symbol(x)'`.
 * @internal
 */
export function describeValue(v: unknown): string {
  switch (typeof v) {
    case 'undefined':
      return 'undefined'
    case 'number':
    case 'boolean':
      return `${typeof v} ${String(v)}`
    case 'bigint':
      return `bigint ${String(v)}n`
    case 'symbol':
      return `symbol ${String(v)}`
    case 'string':
      return v.length > 40 ? `string of ${v.length} characters` : `string ${JSON.stringify(v)}`
    case 'function':
      return v.name ? `function ${v.name}` : 'function'
  }
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  const proto = Object.getPrototypeOf(v) as { constructor?: { name?: unknown } } | null
  if (proto === null || proto === Object.prototype) return 'object'
  const name = proto.constructor?.name
  return typeof name === 'string' && name.length > 0 ? name : 'object'
}

/**
 * A public method was called with an argument of the wrong kind (from plain
 * JavaScript, or through a cast): nothing was done, the replica or client
 * is as it was. A `TypeError` (not a `NexresError`) with the stable code
 * `INVALID_ARGUMENT`; `parameter` names the argument (e.g. `payload`,
 * `options.timeoutMs`), `received` says what arrived (e.g. `'ArrayBuffer'`,
 * `'number 3'`, `'undefined'`).
 */
export class InvalidArgumentError extends TypeError {
  readonly code = 'INVALID_ARGUMENT' as const
  /** The argument, e.g. `payload`, `to`, `options.signal`. */
  readonly parameter: string
  /** What arrived, e.g. `'ArrayBuffer'`, `'number NaN'`, `'undefined'`, `'object'`. */
  readonly received: string
  /** What was expected, in words. */
  readonly expected: string
  constructor(parameter: string, expected: string, value: unknown) {
    const received = describeValue(value)
    super(`${parameter}: expected ${expected}, got ${received}`)
    this.name = 'InvalidArgumentError'
    this.parameter = parameter
    this.received = received
    this.expected = expected
  }
}

/**
 * A call's promise, whose rejection carries the caller's stack: an error
 * raised later (the timeout sweep, an error reply, a lost connection) would
 * otherwise show only the client's internals. The stack is taken only when
 * the call fails: an Error made in the rejection handler, a reaction of the
 * promise the caller awaits, has V8's async stack trace ("at async ..." for
 * every async function awaiting the call). Capturing a stack at every call
 * instead (as grpc-js does) cost 60 % of W2's throughput at C = 64; an async
 * wrapper function (one more promise and generator per call) cost 9 %; one
 * `.then` reaction costs least. Each rejection gets its own copy of the
 * error (one error can fail several calls).
 */
export function withCallerStack(call: Promise<Uint8Array>): Promise<Uint8Array> {
  return call.then(undefined, rethrowWithCallerStack)
}

/**
 * Fails a call's promise, given its resolve function, with `err` and the
 * caller's stack (as withCallerStack does), at no cost to calls that
 * succeed: the promise is resolved with one that rejects through the same
 * rethrow, rejected only after the promise it settles is linked to it (the
 * link is the next microtask; the rejection's reaction comes after it), so
 * the rethrow runs in a reaction whose chain leads to the awaiting caller.
 * A `.then` per call (withCallerStack) cost 0.17 µs of the client's
 * 1.46 µs CPU per call at W2 C = 64.
 */
export function failWithCallerStack(resolve: (value: PromiseLike<Uint8Array>) => void, err: Error): void {
  let fail!: (reason: Error) => void
  const failed = new Promise<Uint8Array>((_, reject) => (fail = reject))
  resolve(failed.then(undefined, rethrowWithCallerStack))
  fail(err)
}

// Errors rethrown with a caller's stack already (a call through callSlow
// fails through both paths): not appended twice.
const withStack = new WeakSet<Error>()

function rethrowWithCallerStack(err: unknown): never {
  if (!(err instanceof Error) || withStack.has(err)) throw err
  const siteStack = new Error().stack ?? ''
  const frames = siteStack.slice(siteStack.indexOf('\n') + 1)
  const out = Object.create(Object.getPrototypeOf(err) as object) as Error
  Object.assign(out, err)
  Object.defineProperty(out, 'message', { value: err.message, writable: true, configurable: true })
  if ('cause' in err) Object.defineProperty(out, 'cause', { value: err.cause, writable: true, configurable: true })
  Object.defineProperty(out, 'stack', { value: `${err.stack ?? `${err.name}: ${err.message}`}\n    at the call:\n${frames}`, writable: true, configurable: true })
  withStack.add(out)
  throw out
}
