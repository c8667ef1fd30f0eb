import type { CallOptions } from './call-options.js'
import { EventEmitter } from 'node:events'
import net from 'node:net'

import { checkKnownKeys, checkOptions, checkRoute, checkSignal, checkTimeout, viewBytes } from './args.js'
import {
  AbortedError,
  ClosedError,
  ConfigError,
  type ConnectionFailure,
  ConnectionLostError,
  RequestTooLargeError,
  TimeoutError,
  TooManyRequestsError,
  describeValue,
} from './errors.js'
import { type Endpoint, type WelcomeLimits, describeLoss, describeSocketError, readWelcome, remoteError } from './client-handshake.js'
import { routeId } from './route.js'
import { type MethodDefinition, type ServiceClient, type ServiceDefinition, checkServiceDefinition, encodeWith, methodRoute } from './service.js'
import {
  HEADER_BYTES,
  HELLO_CLIENT,
  HELLO_FIXED_BYTES,
  HELLO_MAGIC,
  KIND_ERROR,
  KIND_REJECT,
  KIND_REPLY,
  KIND_REQUEST,
  MAX_REJECT_BODY,
  OFFSET_KIND,
  OFFSET_MSG_ID,
  OFFSET_ROUTE,
  OFFSET_SENDER,
  PROTOCOL_VERSION,
  decodeErrorBody,
  rejectReasonName,
} from './wire.js'

export type { Endpoint } from './client-handshake.js'

export type { CallOptions } from './call-options.js'

export interface ClientOptions {
  /** One replica's client address... */
  host?: string
  port?: number
  /** ...or several: the client uses one at a time and moves on when it fails. */
  replicas?: Endpoint[]
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
}
const CLIENT_RECONNECT_KEYS: Readonly<Record<keyof NonNullable<ClientOptions['reconnect']>, true>> = { minMs: true, maxMs: true }
/** Every key of a call's options. */
const CALL_OPTION_KEYS: Readonly<Record<keyof CallOptions, true>> = { timeoutMs: true, signal: true }

/** Checks a call's options (undefined: none). */
function checkCallOptions(options: CallOptions | undefined): void {
  if (options === undefined) return
  checkOptions('options', options, CALL_OPTION_KEYS)
  if (options.timeoutMs !== undefined) checkTimeout('options.timeoutMs', options.timeoutMs)
  checkSignal('options.signal', options.signal)
}

export interface ClientEvents {
  connect: [endpoint: Endpoint]
  /** `reason` says why (e.g. `connection reset by the replica (ECONNRESET)`, `refused by the replica: IDLE_TIMEOUT: ...`). */
  disconnect: [endpoint: Endpoint, reason: string]
}

/** The limits a client applies to its calls (see `client.limits`). */
export interface ClientLimits {
  /** Largest request sent, in bytes. */
  maxRequestBytes: number
  /** Calls in flight at once. */
  maxInFlight: number
}

interface Pending {
  /** The route the call named (for error messages). */
  route: string
  resolve(value: Uint8Array): void
  reject(err: Error): void
  deadline: number
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

/** The default of `call`'s options (no per-call check needed). */
const EMPTY_CALL_OPTIONS: CallOptions = Object.freeze({})

/**
 * A call's promise, whose rejection carries the caller's stack: an error
 * raised later (the timeout sweep, an error reply, a lost connection) would
 * otherwise show only the client's internals. The stack is taken only when
 * the call fails: an Error made here, after the await, has V8's async
 * stack trace ("at async ..." for every async function awaiting the call).
 * Capturing a stack at every call instead (as grpc-js does) cost 60 % of
 * W2's throughput at C = 64. Each rejection gets its own copy of the error
 * (one error can fail several calls).
 */
async function withCallerStack(call: Promise<Uint8Array>): Promise<Uint8Array> {
  try {
    return await call
  } catch (err) {
    if (!(err instanceof Error)) throw err
    const siteStack = new Error().stack ?? ''
    const frames = siteStack.slice(siteStack.indexOf('\n') + 1)
    const out = Object.create(Object.getPrototypeOf(err) as object) as Error
    Object.assign(out, err)
    Object.defineProperty(out, 'message', { value: err.message, writable: true, configurable: true })
    if ('cause' in err) Object.defineProperty(out, 'cause', { value: err.cause, writable: true, configurable: true })
    Object.defineProperty(out, 'stack', { value: `${err.stack ?? `${err.name}: ${err.message}`}\n    at the call:\n${frames}`, writable: true, configurable: true })
    throw out
  }
}

const STAGE_BYTES = 256 * 1024
const LARGE_BYTES = 16 * 1024
/** Largest reply frame accepted; a longer header is a protocol error. */
const MAX_REPLY_BYTES = 1024 * 1024 * 1024
const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
const DEFAULT_MAX_IN_FLIGHT = 1024
const EMPTY = Buffer.alloc(0)

/**
 * A user client of a replica's client port: pipelined calls over one
 * connection, replies matched by request id. Reconnects (with backoff, moving
 * through `replicas`) on the next call after a failure; calls in flight when
 * the connection drops reject with `CONNECTION_LOST`.
 *
 * @example
 * const c = await Client.connect({ host: '127.0.0.1', port: 7101 })
 * const reply = await c.call('echo', new TextEncoder().encode('hi'), { timeoutMs: 1000 })
 * await c.close()
 */
export class Client {
  readonly events = new EventEmitter<ClientEvents>()

  private readonly endpoints: Endpoint[]
  private readonly opts: Required<Omit<ClientOptions, 'host' | 'port' | 'replicas' | 'clusterId' | 'reconnect'>> & {
    clusterId: string
    minMs: number
    maxMs: number
  }
  private socket: net.Socket | undefined
  private connecting: Promise<void> | undefined
  private endpointIndex = 0
  private backoffMs: number
  private nextAttemptAt = 0
  private closed = false
  private readonly pending = new Map<number, Pending>()
  private readonly waiters: (() => void)[] = []
  private nextId = 0
  private stage = Buffer.allocUnsafe(STAGE_BYTES)
  private pos = 0
  private large: Buffer[] = []
  private flushScheduled = false
  // A reply frame split across reads: its slices so far (joined once, when
  // complete), their byte count, and the frame's full size once its header
  // is in (0 before).
  private parts: Buffer[] = []
  private partBytes = 0
  private partNeed = 0
  private sweepTimer: NodeJS.Timeout | undefined
  // Limits in force: the options, or the replica's announced limits (§6).
  private requestLimit: number
  private inFlightLimit: number
  private readonly ownRequestLimit: boolean
  private readonly ownInFlightLimit: boolean

  private constructor(options: ClientOptions) {
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
      if (typeof host !== 'string' || host.length === 0) throw new ConfigError(`${f}host`, `must be a non-empty string, got ${describeValue(host)}`)
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${f}port`, `must be an integer in [1, 65535], got ${describeValue(port)}`)
    })
    this.endpoints = (endpoints as Endpoint[]).map((e) => ({ host: e.host, port: e.port }))
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
    this.opts = {
      clusterId,
      timeoutMs: positive('timeoutMs', options.timeoutMs, 30_000),
      maxInFlight: positive('maxInFlight', options.maxInFlight, DEFAULT_MAX_IN_FLIGHT),
      whenFull: options.whenFull ?? 'wait',
      maxRequestBytes: positive('maxRequestBytes', options.maxRequestBytes, DEFAULT_MAX_REQUEST_BYTES),
      connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs, 5000),
      waitForReady: options.waitForReady ?? false,
      minMs: positive('reconnect.minMs', rc.minMs, 50),
      maxMs: positive('reconnect.maxMs', rc.maxMs, 2000),
    }
    if (this.opts.whenFull !== 'wait' && this.opts.whenFull !== 'reject') throw new ConfigError('whenFull', `must be 'wait' or 'reject', got ${describeValue(this.opts.whenFull)}`)
    if (Buffer.byteLength(this.opts.clusterId) > 255) throw new ConfigError('clusterId', 'must be at most 255 bytes')
    if (this.opts.maxMs < this.opts.minMs) throw new ConfigError('reconnect.maxMs', `must be >= reconnect.minMs (${this.opts.minMs})`)
    if (typeof this.opts.waitForReady !== 'boolean') throw new ConfigError('waitForReady', `must be a boolean, got ${typeof this.opts.waitForReady}`)
    this.backoffMs = this.opts.minMs
    this.ownRequestLimit = options.maxRequestBytes !== undefined
    this.ownInFlightLimit = options.maxInFlight !== undefined
    this.requestLimit = this.opts.maxRequestBytes
    this.inFlightLimit = this.opts.maxInFlight
  }

  /**
   * Connects (trying each endpoint in turn; with `waitForReady`, round after
   * round for up to `connectTimeoutMs`) and completes the handshake. Rejects
   * with `CONNECTION_LOST` or `TIMEOUT` carrying each endpoint's cause
   * (`cause`, `reasonCode`/`reason`, `errors`: see `ConnectionFailure`),
   * or `CONFIG_INVALID` naming a bad or unknown option.
   */
  static async connect(options: ClientOptions): Promise<Client> {
    const c = new Client(options)
    await c.ensureConnected(c.opts.waitForReady)
    return c
  }

  /** Whether the connection is up. */
  get connected(): boolean {
    return this.socket !== undefined
  }

  /** Calls in flight. */
  get inFlight(): number {
    return this.pending.size
  }

  /**
   * The limits in force: `maxRequestBytes` and `maxInFlight` as given, or as
   * the replica announced them in its CLIENT_WELCOME (see `ClientOptions`).
   */
  get limits(): ClientLimits {
    return { maxRequestBytes: this.requestLimit, maxInFlight: this.inFlightLimit }
  }

  /**
   * Sends a request and resolves with the reply bytes. Rejects with
   * `TIMEOUT`, `ABORTED`, `CONNECTION_LOST`, `REQUEST_TOO_LARGE`,
   * `TOO_MANY_REQUESTS` (with `whenFull: 'reject'`), `CLOSED`, or a
   * `RemoteError` carrying the server's code (e.g. `NO_SUCH_ROUTE`); with
   * `INVALID_ARGUMENT` (nothing sent) for arguments of the wrong kind. Any
   * ArrayBufferView is sent as its bytes, a string as UTF-8.
   */
  call(route: string, payload: Uint8Array | ArrayBufferView | string, options: CallOptions = EMPTY_CALL_OPTIONS): Promise<Uint8Array> {
    let body: Uint8Array
    try {
      checkRoute('route', route)
      body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload instanceof Uint8Array ? payload : viewBytes('payload', payload)
      if (options !== EMPTY_CALL_OPTIONS) checkCallOptions(options)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.closed) return Promise.reject(new ClosedError('client'))
    if (body.length > this.requestLimit) {
      return Promise.reject(new RequestTooLargeError(body.length, this.requestLimit))
    }
    const signal = options.signal
    if (signal?.aborted) return Promise.reject(new AbortedError(signal.reason))
    if (this.socket !== undefined && this.pending.size < this.inFlightLimit) {
      return withCallerStack(this.issue(route, body, options.timeoutMs ?? this.opts.timeoutMs, signal))
    }
    return withCallerStack(this.callSlow(route, body, options))
  }

  /**
   * A typed client for a service declared with `defineService`. Each method
   * rejects with `INVALID_ARGUMENT` (parameter `request`) for a request its
   * codec cannot encode, before anything is sent.
   */
  service<M extends Record<string, MethodDefinition>>(def: ServiceDefinition<M>): ServiceClient<M> {
    checkServiceDefinition('def', def)
    const out: Record<string, (req: unknown, options?: CallOptions) => Promise<unknown>> = {}
    for (const method of Object.keys(def.methods)) {
      const m = def.methods[method]!
      const route = methodRoute(def.name, method)
      out[method] = async (req, options) => m.response.decode(await this.call(route, encodeWith(m.request, req, 'request'), options))
    }
    return out as ServiceClient<M>
  }

  /** Rejects calls in flight with `CLOSED` and closes the connection. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.flush()
    const s = this.socket
    this.failAll(new ClosedError('client'))
    for (const w of this.waiters.splice(0)) w()
    if (s !== undefined) {
      await new Promise<void>((resolve) => {
        s.once('close', () => resolve())
        s.end()
        setTimeout(() => s.destroy(), 1000).unref()
      })
    }
  }

  // A call that must wait: for the connection, or for room under maxInFlight.
  // Its signal and timeout count from the call, waiting included.
  private async callSlow(route: string, body: Uint8Array, options: CallOptions): Promise<Uint8Array> {
    const signal = options.signal
    const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs
    const deadline = Date.now() + timeoutMs
    while (!this.closed && (this.socket === undefined || this.pending.size >= this.inFlightLimit)) {
      if (this.socket === undefined) {
        await this.ensureConnected()
        continue
      }
      if (this.opts.whenFull === 'reject') throw new TooManyRequestsError(this.inFlightLimit)
      await this.waitForRoom(deadline, signal)
    }
    if (this.closed) throw new ClosedError('client')
    // The replica connected meanwhile may announce a smaller limit.
    if (body.length > this.requestLimit) throw new RequestTooLargeError(body.length, this.requestLimit)
    return this.issue(route, body, Math.max(1, deadline - Date.now()), signal)
  }

  private waitForRoom(deadline: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        cleanup()
        resolve()
      }
      const fail = (err: Error): void => {
        const i = this.waiters.indexOf(wake)
        if (i >= 0) this.waiters.splice(i, 1)
        cleanup()
        reject(err)
      }
      const onAbort = (): void => fail(new AbortedError(signal?.reason))
      const timer = setTimeout(() => fail(new TimeoutError('no room under maxInFlight before the call timed out')), Math.max(0, deadline - Date.now()))
      const cleanup = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(wake)
    })
  }

  private issue(route: string, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
    let id = (this.nextId + 1) >>> 0
    while (this.pending.has(id)) id = (id + 1) >>> 0
    this.nextId = id
    this.writeFrame(routeId(route), id, body)
    return new Promise<Uint8Array>((resolve, reject) => {
      const p: Pending = { route, resolve, reject, deadline: Date.now() + timeoutMs, signal, onAbort: undefined }
      if (signal !== undefined) {
        p.onAbort = () => {
          if (this.pending.get(id) !== p) return
          this.settle(id, p)
          reject(new AbortedError(signal.reason))
        }
        signal.addEventListener('abort', p.onAbort, { once: true })
      }
      this.pending.set(id, p)
      if (this.sweepTimer === undefined) this.armSweep()
    })
  }

  private writeFrame(route: number, id: number, body: Uint8Array): void {
    const len = body.length
    const small = len < LARGE_BYTES
    const need = HEADER_BYTES + (small ? len : 0)
    if (this.pos + need > this.stage.length) {
      this.flush()
      // After a flush the stage is what was left of the buffer: it may be short.
      if (need > this.stage.length) this.stage = Buffer.allocUnsafe(Math.max(STAGE_BYTES, need))
    }
    const b = this.stage
    const p = this.pos
    b.writeUInt32LE(len, p)
    b.writeUInt32LE(route, p + OFFSET_ROUTE)
    b.writeUInt32LE(0, p + OFFSET_SENDER)
    b.writeUInt32LE(KIND_REQUEST, p + OFFSET_KIND)
    b.writeUInt32LE(id, p + OFFSET_MSG_ID)
    b.writeUInt32LE(0, p + OFFSET_MSG_ID + 4)
    if (small) b.set(body, p + HEADER_BYTES)
    this.pos = p + need
    if (!small) {
      // Large bodies go out as they are, right after their header.
      this.large.push(b.subarray(0, this.pos))
      this.large.push(Buffer.from(body.buffer, body.byteOffset, body.byteLength))
      this.stage = b.subarray(this.pos).length >= 4096 ? b.subarray(this.pos) : Buffer.allocUnsafe(STAGE_BYTES)
      this.pos = 0
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(this.flushSoon)
    }
  }

  private readonly flushSoon = (): void => {
    this.flushScheduled = false
    this.flush()
  }

  // One write per tick: everything staged (and any large bodies) at once.
  private flush(): void {
    const s = this.socket
    if (s === undefined) {
      this.pos = 0
      this.large = []
      return
    }
    if (this.large.length > 0) {
      s.cork()
      for (const part of this.large) s.write(part)
      if (this.pos > 0) s.write(this.stage.subarray(0, this.pos))
      process.nextTick(() => s.uncork())
      this.large = []
    } else if (this.pos > 0) {
      s.write(this.stage.subarray(0, this.pos))
    } else {
      return
    }
    // The socket keeps what it was given: continue in the rest of the buffer.
    const rest = this.stage.subarray(this.pos)
    this.stage = rest.length >= 4096 ? rest : Buffer.allocUnsafe(STAGE_BYTES)
    this.pos = 0
  }

  // Replies are parsed in place in each chunk the socket delivers. A frame
  // split across reads is kept as the list of its slices and joined once,
  // when its last byte arrives (its size is known from its header), so each
  // byte is copied at most once; joining the remainder with every new chunk
  // copied a large reply again on each read (quadratic in its size).
  private onData(chunk: Buffer): void {
    let p = 0
    if (this.partBytes > 0) {
      p = this.continueFrame(chunk)
      if (p < 0) return
    }
    const end = chunk.length
    while (end - p >= HEADER_BYTES) {
      const len = chunk.readUInt32LE(p)
      if (len > MAX_REPLY_BYTES) return this.protocolError(`reply of ${len} bytes`)
      if (end - p - HEADER_BYTES < len) break
      if (!this.onFrame(chunk, p, len)) return
      p += HEADER_BYTES + len
    }
    if (p < end) {
      this.parts.push(chunk.subarray(p))
      this.partBytes = end - p
      this.partNeed = end - p >= HEADER_BYTES ? HEADER_BYTES + chunk.readUInt32LE(p) : 0
    }
  }

  // Adds the head of `chunk` to the frame in progress. Returns where that
  // frame ends in `chunk`, or -1 when it needs more bytes (or the connection
  // failed).
  private continueFrame(chunk: Buffer): number {
    let p = 0
    if (this.partNeed === 0) {
      // Header incomplete: take what completes it, then learn the size.
      p = Math.min(HEADER_BYTES - this.partBytes, chunk.length)
      this.parts.push(chunk.subarray(0, p))
      this.partBytes += p
      if (this.partBytes < HEADER_BYTES) return -1
      const header = Buffer.concat(this.parts, HEADER_BYTES)
      this.parts = [header]
      const len = header.readUInt32LE(0)
      if (len > MAX_REPLY_BYTES) {
        this.protocolError(`reply of ${len} bytes`)
        return -1
      }
      this.partNeed = HEADER_BYTES + len
    }
    const take = Math.min(this.partNeed - this.partBytes, chunk.length - p)
    if (take > 0) {
      this.parts.push(chunk.subarray(p, p + take))
      this.partBytes += take
      p += take
    }
    if (this.partBytes < this.partNeed) return -1
    const frame = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partNeed)
    this.resetPartial()
    return this.onFrame(frame, 0, frame.length - HEADER_BYTES) ? p : -1
  }

  private resetPartial(): void {
    this.parts = []
    this.partBytes = 0
    this.partNeed = 0
  }

  // One whole frame at buf[p..]; false when it ended the connection.
  private onFrame(buf: Buffer, p: number, len: number): boolean {
    const kind = buf[p + OFFSET_KIND]!
    if (kind === KIND_REPLY || kind === KIND_ERROR) {
      const id = buf.readUInt32LE(p + OFFSET_MSG_ID)
      const entry = this.pending.get(id)
      if (entry === undefined) return true // timed out or aborted meanwhile
      this.settle(id, entry)
      const body = buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + len)
      if (kind === KIND_REPLY) entry.resolve(body)
      else entry.reject(remoteError(decodeErrorBody(body), entry.route))
      return true
    }
    if (kind === KIND_REJECT && len >= 2) {
      // The replica closes the connection, saying why (§3, §4).
      const reasonCode = rejectReasonName(buf.readUInt16LE(p + HEADER_BYTES))
      const reason = buf.toString('utf8', p + HEADER_BYTES + 2, p + HEADER_BYTES + Math.min(len, MAX_REJECT_BODY))
      this.socket?.destroy(new ConnectionLostError(`refused by the replica: ${reasonCode}: ${reason}`, undefined, { reasonCode, reason }))
      return false
    }
    this.protocolError(`unexpected frame kind ${kind}`)
    return false
  }

  private settle(id: number, p: Pending): void {
    this.pending.delete(id)
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort)
    const w = this.waiters.shift()
    if (w !== undefined) w()
  }

  private protocolError(reason: string): void {
    this.socket?.destroy(new Error(`protocol error: ${reason}`))
  }

  private failAll(err: Error): void {
    const all = [...this.pending.entries()]
    this.pending.clear()
    for (const [, p] of all) {
      if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort)
      p.reject(err)
    }
  }

  private armSweep(): void {
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined
      const now = Date.now()
      for (const [id, p] of this.pending) {
        if (p.deadline <= now) {
          this.settle(id, p)
          p.reject(new TimeoutError(`call ${id} got no reply within its timeout`))
        }
      }
      if (this.pending.size > 0) this.armSweep()
    }, 10)
    this.sweepTimer.unref()
  }

  private ensureConnected(waitForReady = false): Promise<void> {
    if (this.socket !== undefined) return Promise.resolve()
    if (this.closed) return Promise.reject(new ClosedError('client'))
    this.connecting ??= this.connectLoop(waitForReady).finally(() => {
      this.connecting = undefined
    })
    return this.connecting
  }

  // Tries each endpoint once, with backoff between failures, and rejects
  // after a full round without success; with `waitForReady`, goes on round
  // after round until connectTimeoutMs has passed. The rejection lists each
  // endpoint's last failure.
  private async connectLoop(waitForReady: boolean): Promise<void> {
    const n = this.endpoints.length
    const limitMs = this.opts.connectTimeoutMs
    const deadline = Date.now() + limitMs
    const last: (Error | undefined)[] = new Array<Error | undefined>(n)
    let latest: Error | undefined
    for (let tries = 0; waitForReady || tries < n; tries++) {
      let wait = this.nextAttemptAt - Date.now()
      if (waitForReady) wait = Math.min(wait, deadline - Date.now())
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
      if (this.closed) throw new ClosedError('client')
      const budget = waitForReady ? deadline - Date.now() : limitMs
      if (budget <= 0) break
      const i = this.endpointIndex % n
      try {
        await this.open(this.endpoints[i]!, budget)
        this.backoffMs = this.opts.minMs
        this.nextAttemptAt = 0
        return
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err))
        // A timeout only because waitForReady's deadline cut the attempt
        // short says less than what this endpoint answered before.
        if (!(budget < limitMs && e instanceof TimeoutError && last[i] !== undefined)) {
          last[i] = e
          latest = e
        }
        this.endpointIndex++
        const d = this.backoffMs
        this.nextAttemptAt = Date.now() + d / 2 + Math.random() * (d / 2)
        this.backoffMs = Math.min(d * 2, this.opts.maxMs)
      }
    }
    if (this.closed) throw new ClosedError('client')
    const errors = last.filter((e): e is Error => e !== undefined)
    const within = waitForReady ? ` within connectTimeoutMs (${limitMs} ms, waitForReady)` : ''
    if (latest === undefined) throw new TimeoutError(`cannot reach a replica${within}: no attempt was made`, { errors })
    const f = latest as Error & ConnectionFailure
    const text = `cannot reach a replica${within}: ${errors.map((e) => e.message).join('; ')}`
    const details: ConnectionFailure = { endpoint: f.endpoint, reasonCode: f.reasonCode, reason: f.reason, errors }
    const cause = f.cause ?? latest
    if (errors.every((e) => e instanceof TimeoutError)) throw new TimeoutError(text, { ...details, cause })
    throw new ConnectionLostError(text, cause, details)
  }

  // One connection attempt: TCP connect, CLIENT_HELLO, CLIENT_WELCOME within
  // `timeoutMs`. Rejects with an error naming the endpoint and the cause.
  private open(ep: Endpoint, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const where = `${ep.host}:${ep.port}`
      const s = net.connect({ host: ep.host, port: ep.port, noDelay: true })
      let welcomed = false
      let tcpUp = false
      let failure: Error | undefined // why the handshake failed, once known
      let socketError: Error | undefined
      let hello: Buffer = EMPTY
      const fail = (err: Error): void => {
        failure ??= err
        s.destroy()
      }
      const budget = timeoutMs === this.opts.connectTimeoutMs ? `connectTimeoutMs (${timeoutMs} ms)` : `${timeoutMs} ms (what was left of connectTimeoutMs)`
      const timer = setTimeout(() => {
        const what = tcpUp ? 'the handshake got no answer' : 'the TCP connection was not established'
        fail(new TimeoutError(`${where}: ${what} within ${budget}`, { endpoint: ep }))
      }, timeoutMs)
      const onHandshake = (chunk: Buffer): void => {
        hello = hello.length === 0 ? chunk : Buffer.concat([hello, chunk])
        const answer = readWelcome(hello, ep, false, this.opts.clusterId)
        if (answer === undefined) return
        if (answer instanceof Error) return fail(answer)
        if (this.closed) return fail(new ClosedError('client'))
        welcomed = true
        clearTimeout(timer)
        s.off('data', onHandshake)
        this.applyLimits(answer)
        this.socket = s
        this.resetPartial()
        s.on('data', (d: Buffer) => this.onData(d))
        const rest = hello.subarray(answer.end)
        this.events.emit('connect', ep)
        resolve()
        if (rest.length > 0) this.onData(rest)
      }
      s.on('data', onHandshake)
      s.once('connect', () => {
        tcpUp = true
        const cid = Buffer.from(this.opts.clusterId, 'utf8')
        const h = Buffer.alloc(HELLO_FIXED_BYTES + cid.length)
        h.writeUInt32LE(HELLO_MAGIC, 0)
        h.writeUInt16LE(PROTOCOL_VERSION, 4)
        h.writeUInt16LE(HELLO_CLIENT, 6)
        h.writeUInt16LE(0, 8)
        h[10] = cid.length
        h.writeUInt32LE(cid.length, 24)
        cid.copy(h, HELLO_FIXED_BYTES)
        s.write(h)
      })
      // 'close' follows and reports.
      s.on('error', (err) => {
        socketError ??= err
      })
      s.once('close', () => {
        clearTimeout(timer)
        if (!welcomed) {
          let err = failure
          if (err === undefined && hello.length > 0) {
            const answer = readWelcome(hello, ep, true, this.opts.clusterId)
            if (answer instanceof Error) err = answer
          }
          if (err === undefined && socketError !== undefined) {
            err = new ConnectionLostError(`${where}: ${describeSocketError(socketError, ep)}`, socketError, { endpoint: ep })
          }
          err ??= new ConnectionLostError(
            `${where}: the replica closed the connection without answering the handshake (at maxClientConnections, or not a nexres-rpc client port)`,
            undefined,
            { endpoint: ep },
          )
          reject(err)
          return
        }
        if (this.socket === s) this.socket = undefined
        this.resetPartial()
        this.pos = 0
        this.large = []
        const why = this.closed ? 'closed by the client' : describeLoss(socketError, ep)
        const f = socketError as (Error & ConnectionFailure) | undefined
        this.failAll(
          new ConnectionLostError(`connection to ${where} lost: ${why}`, socketError, { endpoint: ep, reasonCode: f?.reasonCode, reason: f?.reason }),
        )
        for (const w of this.waiters.splice(0)) w()
        this.events.emit('disconnect', ep, why)
      })
    })
  }

  // The limits in force after a CLIENT_WELCOME: the replica's, unless the
  // options say otherwise (a request limit given applies too, the smaller
  // wins: a larger request would cost the connection; an in-flight cap given
  // is used as is: past the replica's, its TCP backpressure holds requests).
  private applyLimits(announced: WelcomeLimits): void {
    const r = announced.maxRequestBytes
    this.requestLimit = r === undefined ? this.opts.maxRequestBytes : this.ownRequestLimit ? Math.min(r, this.opts.maxRequestBytes) : r
    const f = announced.maxInFlight
    this.inFlightLimit = f === undefined || f < 1 || this.ownInFlightLimit ? this.opts.maxInFlight : f
  }
}
