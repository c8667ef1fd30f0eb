import { KIND_ERROR, KIND_REPLY, encodeErrorBody } from './wire.js'

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

  /** Sends the reply. */
  reply(payload: Uint8Array | string): void {
    if (this.done) return
    if (typeof payload !== 'string' && !(payload instanceof Uint8Array)) {
      this.fail('HANDLER_ERROR', `the handler of "${this.route}" replied with ${typeof payload}, not bytes or a string`)
      return
    }
    this.done = true
    const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
    this.sink.stageReply(this.dest, this.routeId, this.lo, this.hi, body, KIND_REPLY)
  }

  /** Sends an error reply with a stable code (upper snake case) and a message. */
  fail(code: string, message: string): void {
    if (this.done) return
    this.done = true
    this.sink.stageReply(this.dest, this.routeId, this.lo, this.hi, encodeErrorBody(code, message), KIND_ERROR)
  }

  /** @internal a handler threw or rejected. */
  failWith(err: unknown): void {
    const e = err as { code?: unknown; message?: unknown }
    const code = typeof e?.code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(e.code) ? e.code : 'HANDLER_ERROR'
    const message = typeof e?.message === 'string' ? e.message : String(err)
    this.fail(code, message)
  }
}

/** A request handler: returns the reply (bytes or string), or replies later through `ctx`. */
export type RequestHandler = (request: Uint8Array, ctx: RequestContext) => unknown
