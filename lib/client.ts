import { EventEmitter } from 'node:events'
import net from 'node:net'

import { checkKnownKeys, checkOptions, checkRoute, checkSignal, checkTimeout, viewBytes } from './args.js'
import {
  AbortedError,
  ClosedError,
  ConfigError,
  ConnectionLostError,
  RemoteError,
  RequestTooLargeError,
  TimeoutError,
  TooManyRequestsError,
  describeValue,
} from './errors.js'
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
  PROTOCOL_VERSION,
  WELCOME_CLIENT,
  decodeErrorBody,
} from './wire.js'

export interface Endpoint {
  host: string
  port: number
}

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
  /** Calls in flight at once (default 1024); see `whenFull`. */
  maxInFlight?: number
  /** At `maxInFlight`: wait for room (default) or reject with `TOO_MANY_REQUESTS`. */
  whenFull?: 'wait' | 'reject'
  /** Largest request sent, in bytes (default 4 MiB, the server's default). */
  maxRequestBytes?: number
  /** Deadline for connecting plus the handshake, in ms (default 5000). */
  connectTimeoutMs?: number
  /** Backoff between reconnection attempts, in ms (default 50 doubling to 2000). */
  reconnect?: { minMs?: number; maxMs?: number }
}

export interface CallOptions {
  /** Rejects with `TIMEOUT` after this many ms (default: the client's `timeoutMs`). */
  timeoutMs?: number
  /** Rejects with `ABORTED` when it fires; the reply, if it comes, is dropped. */
  signal?: AbortSignal
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
  disconnect: [endpoint: Endpoint, reason: string]
}

interface Pending {
  resolve(value: Uint8Array): void
  reject(err: Error): void
  deadline: number
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

/** The default of `call`'s options (no per-call check needed). */
const EMPTY_CALL_OPTIONS: CallOptions = Object.freeze({})

const STAGE_BYTES = 256 * 1024
const LARGE_BYTES = 16 * 1024

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
  private leftover: Buffer | undefined
  private sweepTimer: NodeJS.Timeout | undefined

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
      maxInFlight: positive('maxInFlight', options.maxInFlight, 1024),
      whenFull: options.whenFull ?? 'wait',
      maxRequestBytes: positive('maxRequestBytes', options.maxRequestBytes, 4 * 1024 * 1024),
      connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs, 5000),
      minMs: positive('reconnect.minMs', rc.minMs, 50),
      maxMs: positive('reconnect.maxMs', rc.maxMs, 2000),
    }
    if (this.opts.whenFull !== 'wait' && this.opts.whenFull !== 'reject') throw new ConfigError('whenFull', `must be 'wait' or 'reject', got ${describeValue(this.opts.whenFull)}`)
    if (Buffer.byteLength(this.opts.clusterId) > 255) throw new ConfigError('clusterId', 'must be at most 255 bytes')
    if (this.opts.maxMs < this.opts.minMs) throw new ConfigError('reconnect.maxMs', `must be >= reconnect.minMs (${this.opts.minMs})`)
    this.backoffMs = this.opts.minMs
  }

  /**
   * Connects (trying each endpoint in turn) and completes the handshake.
   * Rejects with `CONFIG_INVALID` naming a bad or unknown option.
   */
  static async connect(options: ClientOptions): Promise<Client> {
    const c = new Client(options)
    await c.ensureConnected()
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
    if (body.length > this.opts.maxRequestBytes) {
      return Promise.reject(new RequestTooLargeError(body.length, this.opts.maxRequestBytes))
    }
    const signal = options.signal
    if (signal?.aborted) return Promise.reject(new AbortedError(signal.reason))
    if (this.socket !== undefined && this.pending.size < this.opts.maxInFlight) {
      return this.issue(routeId(route), body, options.timeoutMs ?? this.opts.timeoutMs, signal)
    }
    return this.callSlow(route, body, options)
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
    while (!this.closed && (this.socket === undefined || this.pending.size >= this.opts.maxInFlight)) {
      if (this.socket === undefined) {
        await this.ensureConnected()
        continue
      }
      if (this.opts.whenFull === 'reject') throw new TooManyRequestsError(this.opts.maxInFlight)
      await this.waitForRoom(deadline, signal)
    }
    if (this.closed) throw new ClosedError('client')
    return this.issue(routeId(route), body, Math.max(1, deadline - Date.now()), signal)
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

  private issue(route: number, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
    let id = (this.nextId + 1) >>> 0
    while (this.pending.has(id)) id = (id + 1) >>> 0
    this.nextId = id
    this.writeFrame(route, id, body)
    return new Promise<Uint8Array>((resolve, reject) => {
      const p: Pending = { resolve, reject, deadline: Date.now() + timeoutMs, signal, onAbort: undefined }
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
    b.writeUInt32LE(route, p + 4)
    b.writeUInt32LE(0, p + 8)
    b.writeUInt32LE(KIND_REQUEST, p + 12)
    b.writeUInt32LE(id, p + 16)
    b.writeUInt32LE(0, p + 20)
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

  private onData(chunk: Buffer): void {
    let buf = chunk
    if (this.leftover !== undefined) {
      buf = Buffer.concat([this.leftover, chunk])
      this.leftover = undefined
    }
    let p = 0
    const end = buf.length
    while (end - p >= HEADER_BYTES) {
      const len = buf.readUInt32LE(p)
      const kind = buf[p + 12]!
      if (len > 1024 * 1024 * 1024) return this.protocolError(`reply of ${len} bytes`)
      if (end - p - HEADER_BYTES < len) break
      const id = buf.readUInt32LE(p + 16)
      const body = buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + len)
      p += HEADER_BYTES + len
      if (kind === KIND_REPLY || kind === KIND_ERROR) {
        const entry = this.pending.get(id)
        if (entry === undefined) continue // timed out or aborted meanwhile
        this.settle(id, entry)
        if (kind === KIND_REPLY) entry.resolve(body)
        else {
          const e = decodeErrorBody(body)
          entry.reject(new RemoteError(e.code, e.message))
        }
      } else if (kind === KIND_REJECT) {
        const e = body.length >= 2 ? body.subarray(2).toString('utf8') : ''
        return this.protocolError(`refused by the replica: ${e}`)
      } else {
        return this.protocolError(`unexpected frame kind ${kind}`)
      }
    }
    if (p < end) this.leftover = buf.subarray(p)
  }

  private settle(id: number, p: Pending): void {
    this.pending.delete(id)
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort)
    const w = this.waiters.shift()
    if (w !== undefined) w()
  }

  private protocolError(reason: string): void {
    this.socket?.destroy(new Error(reason))
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

  private ensureConnected(): Promise<void> {
    if (this.socket !== undefined) return Promise.resolve()
    if (this.closed) return Promise.reject(new ClosedError('client'))
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = undefined
    })
    return this.connecting
  }

  // Tries each endpoint once, with backoff between rounds of failures;
  // rejects with CONNECTION_LOST after a full round without success.
  private async connectLoop(): Promise<void> {
    let lastError: unknown
    for (let tries = 0; tries < this.endpoints.length; tries++) {
      const wait = this.nextAttemptAt - Date.now()
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
      if (this.closed) throw new ClosedError('client')
      const ep = this.endpoints[this.endpointIndex % this.endpoints.length]!
      try {
        await this.open(ep)
        this.backoffMs = this.opts.minMs
        this.nextAttemptAt = 0
        return
      } catch (err) {
        lastError = err
        this.endpointIndex++
        const d = this.backoffMs
        this.nextAttemptAt = Date.now() + d / 2 + Math.random() * (d / 2)
        this.backoffMs = Math.min(d * 2, this.opts.maxMs)
      }
    }
    const msg = lastError instanceof Error ? lastError.message : String(lastError)
    throw new ConnectionLostError(`cannot reach a replica: ${msg}`, lastError)
  }

  private open(ep: Endpoint): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: ep.host, port: ep.port, noDelay: true })
      let welcomed = false
      let hello = Buffer.alloc(0)
      const timer = setTimeout(() => s.destroy(new Error(`no handshake within ${this.opts.connectTimeoutMs} ms`)), this.opts.connectTimeoutMs)
      const onHandshake = (chunk: Buffer): void => {
        hello = Buffer.concat([hello, chunk])
        if (hello.length < HEADER_BYTES) return
        if (hello.readUInt32LE(0) !== HELLO_MAGIC) {
          const kind = hello[12]
          const text = kind === KIND_REJECT && hello.length > HEADER_BYTES + 2 ? hello.subarray(HEADER_BYTES + 2).toString('utf8') : 'bad handshake'
          s.destroy(new Error(`refused: ${text}`))
          return
        }
        if (hello.length < HELLO_FIXED_BYTES) return
        const bodyLen = hello.readUInt32LE(24)
        if (hello.readUInt16LE(6) !== WELCOME_CLIENT || bodyLen > 4096) {
          s.destroy(new Error('unexpected handshake answer'))
          return
        }
        if (hello.length < HELLO_FIXED_BYTES + bodyLen) return
        welcomed = true
        clearTimeout(timer)
        s.off('data', onHandshake)
        this.socket = s
        this.leftover = undefined
        s.on('data', (d: Buffer) => this.onData(d))
        const rest = hello.subarray(HELLO_FIXED_BYTES + bodyLen)
        this.events.emit('connect', ep)
        resolve()
        if (rest.length > 0) this.onData(rest)
      }
      s.on('data', onHandshake)
      s.once('connect', () => {
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
      s.on('error', () => {}) // 'close' follows and reports
      s.once('close', () => {
        clearTimeout(timer)
        if (!welcomed) {
          reject(new Error(`connection to ${ep.host}:${ep.port} failed`))
          return
        }
        if (this.socket === s) this.socket = undefined
        this.leftover = undefined
        this.pos = 0
        this.large = []
        this.failAll(new ConnectionLostError(`connection to ${ep.host}:${ep.port} lost`))
        for (const w of this.waiters.splice(0)) w()
        this.events.emit('disconnect', ep, 'closed')
      })
    })
  }
}
