import { BYTES, isPayload, payloadBytes } from './args.js'
import { InvalidArgumentError, describeValue } from './errors.js'
import { KIND_ERROR, KIND_REPLY, encodeErrorBody } from './wire.js'

/** What an error code must look like (upper snake case, at most 64 characters). */
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/

/** Who asked: the client connection a request came on. */
export interface ClientInfo {
  /** Connection id, unique among this replica's open client connections. */
  readonly connectionId: number
  /** Remote `host:port` ('' once the connection is gone). */
  readonly address: string
}

/** @internal where replies go: the replica's staged writer. */
export interface ReplySink {
  stageReply(dest: number, route: number, lo: number, hi: number, body: Uint8Array, kind: number): void
  clientAddress(dest: number): string
}

/**
 * Handed to a request handler with each request. Reply by returning a value
 * from the handler, or later with `ctx.reply(...)` (e.g. after consensus);
 * `ctx.fail(code, message)` sends an error reply. Exactly one reply per
 * request: later calls are ignored.
 */
export class RequestContext {
  private done = false

  /** @internal */
  constructor(
    private readonly sink: ReplySink,
    private readonly dest: number,
    private readonly routeId: number,
    private readonly lo: number,
    private readonly hi: number,
    /** The route the client called. */
    readonly route: string,
  ) {}

  /** The request id the client chose (unique among its calls in flight). */
  get requestId(): number {
    return this.lo + this.hi * 2 ** 32
  }

  get client(): ClientInfo {
    const sink = this.sink
    const dest = this.dest
    return {
      connectionId: dest & 0x7fffffff,
      get address() {
        return sink.clientAddress(dest)
      },
    }
  }

  /** Whether a reply (or error) was sent. */
  get replied(): boolean {
    return this.done
  }

  /**
   * Sends the reply: bytes (any ArrayBufferView, as its bytes) or a string
   * (UTF-8). Throws `INVALID_ARGUMENT` for anything else, leaving the
   * request unanswered.
   */
  reply(payload: Uint8Array | ArrayBufferView | string): void {
    const body = payloadBytes('payload', payload)
    if (this.done) return
    this.done = true
    this.sink.stageReply(this.dest, this.routeId, this.lo, this.hi, body, KIND_REPLY)
  }

  /**
   * Sends an error reply with a stable code (upper snake case, at most 64
   * characters) and a message. Throws `INVALID_ARGUMENT` for a code or
   * message of the wrong kind, leaving the request unanswered.
   */
  fail(code: string, message: string): void {
    if (typeof code !== 'string' || !CODE.test(code)) throw new InvalidArgumentError('code', 'an upper-snake-case code such as MY_CODE (at most 64 characters)', code)
    if (typeof message !== 'string') throw new InvalidArgumentError('message', 'a string', message)
    this.failUnchecked(code, message)
  }

  private failUnchecked(code: string, message: string): void {
    if (this.done) return
    this.done = true
    this.sink.stageReply(this.dest, this.routeId, this.lo, this.hi, encodeErrorBody(code, message), KIND_ERROR)
  }

  /** @internal what a handler returned (or its promise resolved to) is the reply. */
  replyReturned(v: unknown): void {
    if (this.done) return
    if (isPayload(v)) this.reply(v)
    else this.failUnchecked('HANDLER_ERROR', `the handler of "${this.route}" returned ${describeValue(v)}, not ${BYTES}`)
  }

  /** @internal a handler threw or rejected. */
  failWith(err: unknown): void {
    const e = err as { code?: unknown; message?: unknown }
    const code = typeof e?.code === 'string' && CODE.test(e.code) ? e.code : 'HANDLER_ERROR'
    const message = typeof e?.message === 'string' ? e.message : safeString(err)
    this.failUnchecked(code, message)
  }
}

/** A request handler: returns the reply (bytes or string), or replies later through `ctx`. */
export type RequestHandler = (request: Uint8Array, ctx: RequestContext) => unknown

/** String(v), even for values whose conversion throws (a Symbol is fine; an object with a throwing toString is not). */
function safeString(v: unknown): string {
  try {
    return String(v)
  } catch {
    return describeValue(v)
  }
}
