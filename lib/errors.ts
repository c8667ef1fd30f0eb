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
  readonly peer: number
  constructor(peer: number) {
    super('UNKNOWN_PEER', `replica ${String(peer)} is not a peer in this cluster`)
    this.peer = peer
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

/** A wait (e.g. `waitForPeers`) ran out of time. */
export class TimeoutError extends NexresError {
  constructor(message: string) {
    super('TIMEOUT', message)
  }
}

/** The connection to the replica was lost with the call in flight (or could not be made). */
export class ConnectionLostError extends NexresError {
  constructor(message: string, cause?: unknown) {
    super('CONNECTION_LOST', message, { cause })
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
  constructor(remoteCode: string, message: string) {
    super('REMOTE_ERROR', `${remoteCode}: ${message}`)
    this.remoteCode = remoteCode
  }
}
