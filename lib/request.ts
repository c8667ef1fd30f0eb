import { BYTES, isPayload, payloadBytes } from './args.js'
import { clientIdOf } from './client-auth.js'
import { InvalidArgumentError, TimeoutError, describeValue } from './errors.js'
import { KIND_ERROR, KIND_REPLY, encodeErrorBody } from './wire.js'

/** How long an expired request waits for the client's CANCEL before its slot is freed anyway. */
const EXPIRED_GRACE_MS = 1000

/** What an error code must look like (upper snake case, at most 64 characters). */
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/

/** Who asked: the client connection a request came on. */
export interface ClientInfo {
  /** Connection id, unique among this replica's open client connections. */
  readonly connectionId: number
  /** Remote `host:port` ('' once the connection is gone). */
  readonly address: string
  /**
   * The Ed25519 public key the client proved in its handshake (PROTOCOL.md
   * §6a); undefined for a client without a key (or once the connection is gone).
   */
  readonly publicKey: Uint8Array | undefined
  /**
   * The client's stable id: its public key in base64url (as
   * `generateKeyPair()` prints it); undefined without a key.
   */
  readonly id: string | undefined
}

/** `ctx.origin`: a request's asker, serializable. */
export interface RequestOrigin {
  clientId: string | undefined
  requestId: number
  route: string
}

/** @internal where replies go: the replica's staged writer. */
export interface ReplySink {
  /** A tracked request (one that outlived its handler's call) is answered. */
  requestDone(ctx: RequestContext): void
  stageReply(dest: number, route: number, lo: number, hi: number, body: Uint8Array, kind: number): void
  clientAddress(dest: number): string
  clientKey(dest: number): Uint8Array | undefined
}

/**
 * Handed to a request handler with each request. Reply by returning a value
 * from the handler, or later with `ctx.reply(...)` (e.g. after consensus);
 * `ctx.fail(code, message)` sends an error reply. Exactly one reply per
 * request: later calls are ignored.
 */
export class RequestContext {
  private done = false // no reply taken any more
  private answered = false // a reply (or error) was staged
  private controller: AbortController | undefined
  private timer: NodeJS.Timeout | undefined
  private cancelledWith: Error | undefined
  /** @internal in the sink's table of open requests (cancel, disconnect). */
  tracked = false

  /** @internal */
  constructor(
    private readonly sink: ReplySink,
    /** @internal */
    readonly dest: number,
    private readonly routeId: number,
    private readonly lo: number,
    private readonly hi: number,
    /** The route the client called. */
    readonly route: string,
    /**
     * When the client stops waiting (ms since the epoch, this replica's
     * clock: the call's timeout as it sent it, from when the request was
     * read); undefined when it sent none.
     */
    readonly deadline: number | undefined,
  ) {}

  /**
   * Fires when the reply is no longer wanted: the client cancelled the call
   * (its signal, or its timeout: a CANCEL frame), the deadline passed, or
   * the client disconnected. Its `reason` says which (`ABORTED`,
   * `TIMEOUT`, `CONNECTION_LOST`). A reply after that is dropped quietly.
   */
  get signal(): AbortSignal {
    if (this.controller !== undefined) return this.controller.signal
    const c = (this.controller = new AbortController())
    if (this.cancelledWith !== undefined) c.abort(this.cancelledWith)
    else if (this.deadline !== undefined && !this.done) {
      const left = this.deadline - Date.now()
      if (left <= 0) this.expire()
      else {
        this.timer = setTimeout(() => this.expire(), left)
        this.timer.unref()
      }
    }
    return c.signal
  }

  /** Whether the reply is no longer wanted (see `signal`). */
  get cancelled(): boolean {
    return this.cancelledWith !== undefined || (this.deadline !== undefined && Date.now() >= this.deadline)
  }

  // The deadline passed: the client has given up (its CANCEL is on its
  // way). The signal fires and a later reply is dropped; the request's slot
  // is freed when the CANCEL comes, or a second later without one.
  private expire(): void {
    if (this.done) return
    this.done = true
    this.cancelledWith = new TimeoutError(`the call's deadline passed (route "${this.route}")`)
    this.timer = setTimeout(() => this.release(), EXPIRED_GRACE_MS)
    this.timer.unref()
    this.controller?.abort(this.cancelledWith)
  }

  /**
   * @internal The client gave up (a CANCEL: `answer`, its slot is freed
   * with a CANCELLED error reply it ignores) or is gone (no answer).
   */
  cancel(reason: Error, answer: boolean): void {
    if (this.answered) return
    const expired = this.done
    this.done = true
    this.cancelledWith ??= reason
    if (answer) this.release()
    else this.finish()
    if (!expired) this.controller?.abort(this.cancelledWith)
  }

  // A CANCELLED error reply, the request's last word.
  private release(): void {
    if (this.answered) return
    this.finish()
    this.sink.stageReply(this.dest, this.routeId, this.lo, this.hi, encodeErrorBody('CANCELLED', this.cancelledWith?.message ?? 'cancelled'), KIND_ERROR)
  }

  private finish(): void {
    this.done = true
    this.answered = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    if (this.tracked) this.sink.requestDone(this)
  }

  /** The request id the client chose (unique among its calls in flight). */
  get requestId(): number {
    return this.lo + this.hi * 2 ** 32
  }

  get client(): ClientInfo {
    const sink = this.sink
    const dest = this.dest
    let key: Uint8Array | undefined | null = null // null: not asked yet
    const publicKey = (): Uint8Array | undefined => (key === null ? (key = sink.clientKey(dest)) : key)
    return {
      connectionId: dest & 0x7fffffff,
      get address() {
        return sink.clientAddress(dest)
      },
      get publicKey() {
        const k = publicKey()
        return k === undefined ? undefined : new Uint8Array(k)
      },
      get id() {
        const k = publicKey()
        return k === undefined ? undefined : clientIdOf(k)
      },
    }
  }

  /**
   * Who asked, as plain data another replica can use (send it along with
   * the request): `replica.replyTo(origin.clientId, origin.requestId,
   * origin.route, reply)` answers from there. `clientId` is undefined for a
   * client without a key (such a client can be answered only here).
   */
  get origin(): RequestOrigin {
    return { clientId: this.client.id, requestId: this.requestId, route: this.route }
  }

  /** Whether no reply is taken any more: one was sent, or the request was cancelled (see `signal`). */
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
    this.finish()
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
    this.finish()
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
