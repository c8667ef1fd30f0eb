/**
 * Errors thrown or emitted by nexres-rpc. Every error has a stable `code`;
 * the list is in docs/API.md and never changes meaning once released.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'QUEUE_FULL'
  | 'CLOSED'
  | 'UNKNOWN_PEER'
  | 'PAYLOAD_TOO_LARGE'
  | 'LISTEN_FAILED'
  | 'TIMEOUT'

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

/** The replica port could not be bound. */
export class ListenError extends NexresError {
  constructor(message: string, cause?: unknown) {
    super('LISTEN_FAILED', message, { cause })
  }
}

/** A wait (e.g. `waitForPeers`) ran out of time. */
export class TimeoutError extends NexresError {
  constructor(message: string) {
    super('TIMEOUT', message)
  }
}
