import type { CallOptions } from './call-options.js'
import { EventEmitter } from 'node:events'
import net from 'node:net'

import { checkFunction, checkRoute, isBytes, sizeOf, viewBytes } from './args.js'
import {
  AbortedError,
  ClosedError,
  type ConnectionFailure,
  ConnectionLostError,
  RequestTooLargeError,
  TimeoutError,
  TooManyRequestsError,
  failWithCallerStack,
  withCallerStack,
} from './errors.js'
import { type Endpoint, type WelcomeLimits, clientHello, describeLoss, describeSocketError, readWelcome, remoteError } from './client-handshake.js'
import { type ClientOptions, type ResolvedClientOptions, checkCallOptions, resolveClientOptions } from './client-options.js'
import { type KeyedSession, type Opener, finishKeyed, keyedHello } from './client-auth.js'
import { ReplyReader, RequestStager } from './client-wire.js'
import { ClusterMembers } from './cluster.js'
import type { MemberSink } from './quorum.js'
import { routeId, routeName } from './route.js'
import { type MethodDefinition, type ServiceClient, type ServiceDefinition, checkServiceDefinition, encodeWith, methodRoute } from './service.js'
import {
  HEADER_BYTES,
  KIND_ERROR,
  KIND_PONG,
  KIND_PUSH,
  KIND_REJECT,
  KIND_REPLY,
  MAX_REJECT_BODY,
  OFFSET_KIND,
  OFFSET_MSG_ID,
  OFFSET_ROUTE,
  decodeErrorBody,
  rejectReasonName,
} from './wire.js'

export type { Endpoint } from './client-handshake.js'

export type { CallOptions } from './call-options.js'
export type { ClientOptions } from './client-options.js'

/** A message a replica pushed (`replica.push`), and which replica sent it. */
export type PushHandler = (payload: Uint8Array, info: { replica: number; route: string }) => void

export interface ClientEvents {
  connect: [endpoint: Endpoint]
  /** A push handler (`client.on`) threw. */
  'handler-error': [error: unknown, route: string]
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

/** A quorum call's request to this replica: its answer goes to the call (quorum.ts), no promise. */
class MemberPending implements Pending {
  onAbort: (() => void) | undefined = undefined
  constructor(
    readonly route: string,
    private readonly sink: MemberSink,
    private readonly index: number,
    readonly deadline: number,
    readonly signal: AbortSignal | undefined,
  ) {}

  resolve(value: Uint8Array): void {
    this.sink.memberReply(this.index, value)
  }

  reject(err: Error): void {
    this.sink.memberFailed(this.index, err)
  }
}

/** A call of this client's own: its promise fails with the caller's stack (failWithCallerStack). */
class CallPending implements Pending {
  onAbort: (() => void) | undefined = undefined
  constructor(
    readonly route: string,
    readonly resolve: (value: Uint8Array | PromiseLike<Uint8Array>) => void,
    readonly deadline: number,
    readonly signal: AbortSignal | undefined,
  ) {}

  reject(err: Error): void {
    failWithCallerStack(this.resolve, err)
  }
}

/** The default of `call`'s options (no per-call check needed). */
const EMPTY_CALL_OPTIONS: CallOptions = Object.freeze({})

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
  private readonly opts: ResolvedClientOptions
  private socket: net.Socket | undefined
  private connecting: Promise<void> | undefined
  private endpointIndex = 0
  private backoffMs: number
  private nextAttemptAt = 0
  private closed = false
  private readonly pending = new Map<number, Pending>()
  private readonly waiters: (() => void)[] = []
  private nextId = 0
  private readonly out = new RequestStager(() => this.socket)
  // §6a: the replica's batches are checked before their frames are used.
  private opener: Opener | undefined
  // §6a: handshake answered, waiting for the replica's sealed PONG.
  private preReady: { ready(): void; refused(err: Error): void } | undefined
  private readonly reader = new ReplyReader(
    (buf, p, len) => (this.opener === undefined ? this.onFrame(buf, p, len) : this.onSealed(buf, p, len)),
    (reason) => this.protocolError(reason),
  )
  private readonly feedReader = (b: Buffer): void => this.reader.feed(b)
  private sweepTimer: NodeJS.Timeout | undefined
  // Limits in force: the options, or the replica's announced limits (§6).
  private requestLimit: number
  private inFlightLimit: number
  private readonly ownRequestLimit: boolean
  private readonly ownInFlightLimit: boolean
  // Connected with f: one single-replica client per replica (cluster.ts).
  private cluster: ClusterMembers | undefined
  // Quorum calls waiting for this replica's reconnect (callMember).
  private waitingToConnect = 0
  /** @internal (cluster.ts) replies to ids not asked here. */
  onUnsolicited: ((id: number, reply: Uint8Array | Error) => void) | undefined
  private readonly pushHandlers = new Map<number, { name: string; fn: PushHandler }>()
  // The replica id of the connection (its CLIENT_WELCOME's sender).
  private replicaId = 0

  private constructor(options: ClientOptions) {
    const resolved = resolveClientOptions(options)
    this.endpoints = resolved.endpoints
    this.opts = resolved.opts
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
    if (c.opts.f !== undefined) {
      // One client per replica, this one's options otherwise.
      const { replicas: _all, f: _f, ...rest } = options
      c.cluster = await ClusterMembers.connect(
        c.endpoints,
        c.opts.f,
        (ep, i) => {
          const key = c.opts.replicaKeys[i]
          const m = new Client({ ...rest, host: ep.host, port: ep.port, ...(key !== undefined ? { publicKey: key } : {}) })
          return { client: m, connect: () => m.ensureConnected(m.opts.waitForReady) }
        },
        c.events,
      )
      return c
    }
    await c.ensureConnected(c.opts.waitForReady)
    return c
  }

  /** Whether the connection is up. */
  get connected(): boolean {
    return this.cluster !== undefined ? this.cluster.clients.some((m) => m.connected) : this.socket !== undefined
  }

  /** Calls in flight. */
  get inFlight(): number {
    if (this.cluster !== undefined) return this.cluster.clients.reduce((n, m) => n + m.inFlight, 0)
    return this.pending.size
  }

  /**
   * The limits in force: `maxRequestBytes` and `maxInFlight` as given, or as
   * the replica announced them in its CLIENT_WELCOME (see `ClientOptions`).
   */
  get limits(): ClientLimits {
    if (this.cluster !== undefined) {
      const all = this.cluster.clients.map((m) => m.limits)
      return { maxRequestBytes: Math.min(...all.map((l) => l.maxRequestBytes)), maxInFlight: Math.min(...all.map((l) => l.maxInFlight)) }
    }
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
      body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : isBytes(payload) ? payload : viewBytes('payload', payload)
      if (options !== EMPTY_CALL_OPTIONS) checkCallOptions(options, this.cluster?.clients.length ?? 0)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.closed) return Promise.reject(new ClosedError('client'))
    if (this.cluster !== undefined) return withCallerStack(this.cluster.call(route, body, options, this.opts.timeoutMs))
    const size = sizeOf(body)
    if (size > this.requestLimit) return Promise.reject(new RequestTooLargeError(size, this.requestLimit))
    const signal = options.signal
    if (signal?.aborted) return Promise.reject(new AbortedError(signal.reason))
    if (this.socket !== undefined && this.pending.size < this.inFlightLimit) {
      return this.issue(route, body, options.timeoutMs ?? this.opts.timeoutMs, signal)
    }
    return withCallerStack(this.callSlow(route, body, options))
  }

  /**
   * A typed client for a service declared with `defineService`. Each method
   * rejects with `INVALID_ARGUMENT` (parameter `request`) for a request its
   * codec cannot encode, before anything is sent.
   */
  service<M extends Record<string, MethodDefinition>>(def: ServiceDefinition<M>, defaults?: CallOptions): ServiceClient<M> {
    checkServiceDefinition('def', def)
    if (defaults !== undefined) checkCallOptions(defaults, this.cluster?.clients.length ?? 0)
    const out: Record<string, (req: unknown, options?: CallOptions) => Promise<unknown>> = {}
    for (const method of Object.keys(def.methods)) {
      const m = def.methods[method]!
      const route = methodRoute(def.name, method)
      out[method] = async (req, options) =>
        m.response.decode(await this.call(route, encodeWith(m.request, req, 'request'), defaults === undefined ? options : { ...defaults, ...options }))
    }
    return out as ServiceClient<M>
  }

  /**
   * Handles the messages replicas push to this client on `route`
   * (`replica.push(ctx.client.id, route, payload)`: clients with a key).
   * One handler per route (a later one replaces it); `payload` is valid
   * after the call. A throw is the `'handler-error'` event. Throws
   * `INVALID_ARGUMENT` for arguments of the wrong kind.
   */
  on(route: string, handler: PushHandler): this {
    checkRoute('route', route)
    checkFunction('handler', handler)
    if (this.cluster !== undefined) for (const m of this.cluster.clients) (m as Client).on(route, handler)
    else this.pushHandlers.set(routeId(route), { name: route, fn: handler })
    return this
  }

  /** Removes the push handler of `route`. */
  off(route: string): this {
    checkRoute('route', route)
    if (this.cluster !== undefined) for (const m of this.cluster.clients) (m as Client).off(route)
    else this.pushHandlers.delete(routeId(route))
    return this
  }

  /** Rejects calls in flight with `CLOSED` and closes the connection. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.cluster !== undefined) return this.cluster.close()
    this.out.flush()
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
  /**
   * @internal A quorum call's request to this replica (cluster.ts): the
   * arguments were checked by the cluster client's call, whose promise
   * carries the caller's stack.
   */
  callMember(route: string, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined, id: number, sink: MemberSink, index: number): void {
    // Never answers synchronously (quorum.ts counts its asks first).
    const fail = (err: Error): void => queueMicrotask(() => sink.memberFailed(index, err))
    if (this.closed) return fail(new ClosedError('client'))
    if (sizeOf(body) > this.requestLimit) return fail(new RequestTooLargeError(sizeOf(body), this.requestLimit))
    if (signal?.aborted) return fail(new AbortedError(signal.reason))
    if (this.socket !== undefined) {
      // A replica maxInFlight calls behind the others (silent, slow) fails
      // this call at once instead of queueing it: the quorum comes from the
      // others, and nothing piles up behind it.
      if (this.pending.size >= this.inFlightLimit || this.pending.has(id)) return fail(new TooManyRequestsError(this.inFlightLimit))
      return this.start(id, new MemberPending(route, sink, index, Date.now() + timeoutMs, signal), body, timeoutMs)
    }
    // Not connected: wait for the one reconnect attempt, at most maxInFlight
    // calls at a time; past that a call fails at once (memory stays bounded
    // while a replica is down).
    if (this.waitingToConnect >= this.inFlightLimit) {
      return fail(new ConnectionLostError(`${this.endpoints[0]!.host}:${this.endpoints[0]!.port}: not connected (reconnecting)`, undefined, { endpoint: this.endpoints[0]! }))
    }
    this.waitingToConnect++
    this.callSlow(route, body, signal === undefined ? { timeoutMs } : { timeoutMs, signal }, id)
      .finally(() => {
        this.waitingToConnect--
      })
      .then(
        (reply) => sink.memberReply(index, reply),
        (err: unknown) => sink.memberFailed(index, err instanceof Error ? err : new Error(String(err))),
      )
  }

  private async callSlow(route: string, body: Uint8Array, options: CallOptions, id?: number): Promise<Uint8Array> {
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
    if (sizeOf(body) > this.requestLimit) throw new RequestTooLargeError(sizeOf(body), this.requestLimit)
    return this.issue(route, body, Math.max(1, deadline - Date.now()), signal, id)
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

  // `given`: a quorum call's id (the same on every replica's connection).
  private issue(route: string, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined, given?: number): Promise<Uint8Array> {
    let id: number
    if (given !== undefined) {
      if (this.pending.has(given)) return Promise.reject(new TooManyRequestsError(this.inFlightLimit))
      id = given
    } else {
      id = (this.nextId + 1) >>> 0
      while (this.pending.has(id)) id = (id + 1) >>> 0
      this.nextId = id
    }
    return new Promise<Uint8Array>((resolve) => {
      this.start(id, new CallPending(route, resolve, Date.now() + timeoutMs, signal), body, timeoutMs)
    })
  }

  // Writes the request and waits for its reply (or the deadline, or the signal).
  private start(id: number, p: Pending, body: Uint8Array, timeoutMs: number): void {
    // The timeout travels with the request (ctx.deadline on the replica).
    this.out.write(routeId(p.route), id, body, timeoutMs)
    const signal = p.signal
    if (signal !== undefined) {
      p.onAbort = () => {
        if (this.pending.get(id) !== p) return
        this.settle(id, p)
        this.out.cancel(id) // the replica's ctx.signal fires
        p.reject(new AbortedError(signal.reason))
      }
      signal.addEventListener('abort', p.onAbort, { once: true })
    }
    this.pending.set(id, p)
    if (this.sweepTimer === undefined) this.armSweep()
  }

  // §6a: a frame of a sealed batch; its frames go on once the SEAL checks.
  private onSealed(buf: Buffer, p: number, len: number): boolean {
    const r = this.opener!.frame(buf, p, len)
    if (r === null) return true
    if (typeof r === 'string') {
      this.protocolError(r)
      return false
    }
    for (const [b, q, n] of r) if (!this.onFrame(b, q, n)) return false
    return true
  }

  // One whole frame at buf[p..]; false when it ended the connection.
  private onFrame(buf: Buffer, p: number, len: number): boolean {
    const kind = buf[p + OFFSET_KIND]!
    if (kind === KIND_REPLY || kind === KIND_ERROR) {
      const id = buf.readUInt32LE(p + OFFSET_MSG_ID)
      const entry = this.pending.get(id)
      if (entry === undefined) {
        // Timed out or aborted meanwhile, or (a quorum call) a reply to a
        // request another replica was asked: the cluster client decides.
        if (this.onUnsolicited !== undefined) {
          const body = Buffer.from(buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + len))
          this.onUnsolicited(id, kind === KIND_REPLY ? body : remoteError(decodeErrorBody(body), routeName(buf.readUInt32LE(p + OFFSET_ROUTE)) ?? ''))
        }
        return true
      }
      this.settle(id, entry)
      const body = buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + len)
      if (kind === KIND_REPLY) entry.resolve(body)
      else entry.reject(remoteError(decodeErrorBody(body), entry.route))
      return true
    }
    if (kind === KIND_PUSH) {
      const h = this.pushHandlers.get(buf.readUInt32LE(p + OFFSET_ROUTE))
      if (h === undefined) return true // no handler: dropped
      try {
        h.fn(buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + len), { replica: this.replicaId, route: h.name })
      } catch (err) {
        this.events.emit('handler-error', err, h.name)
      }
      return true
    }
    if (kind === KIND_PONG && this.preReady !== undefined && len === 0) {
      this.preReady.ready()
      return true
    }
    if (kind === KIND_REJECT && len >= 2) {
      // The replica closes the connection, saying why (§3, §4).
      const reasonCode = rejectReasonName(buf.readUInt16LE(p + HEADER_BYTES))
      const reason = buf.toString('utf8', p + HEADER_BYTES + 2, p + HEADER_BYTES + Math.min(len, MAX_REJECT_BODY))
      const err = new ConnectionLostError(`refused by the replica: ${reasonCode}: ${reason}`, undefined, { reasonCode, reason })
      if (this.preReady !== undefined) this.preReady.refused(err)
      else this.socket?.destroy(err)
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
    const err = new Error(`protocol error: ${reason}`)
    if (this.preReady !== undefined) this.preReady.refused(new ConnectionLostError(err.message, err, { reasonCode: 'BAD_AUTH', reason }))
    else this.socket?.destroy(err)
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
          this.out.cancel(id)
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
      const i = this.endpoints.indexOf(ep)
      const keyed = this.opts.key !== undefined || this.opts.seal ? keyedHello(this.opts.clusterId, this.opts.key, this.opts.seal) : undefined
      // The connection is the client's: calls may go out on it.
      const ready = (answer: WelcomeLimits, session: KeyedSession | undefined): void => {
        welcomed = true
        clearTimeout(timer)
        this.preReady = undefined
        this.applyLimits(answer)
        this.replicaId = answer.replicaId
        this.socket = s
        this.out.setSealer(session?.sealer, this.inFlightLimit)
        this.events.emit('connect', ep)
        resolve()
      }
      const onHandshake = (chunk: Buffer): void => {
        hello = hello.length === 0 ? chunk : Buffer.concat([hello, chunk])
        const answer = readWelcome(hello, ep, false, this.opts.clusterId)
        if (answer === undefined) return
        if (answer instanceof Error) return fail(answer)
        if (this.closed) return fail(new ClosedError('client'))
        s.off('data', onHandshake)
        this.reader.reset()
        const rest = hello.subarray(answer.end)
        if (keyed === undefined) {
          this.opener = undefined
          s.on('data', (d: Buffer) => this.reader.feed(d))
          ready(answer, undefined)
          if (rest.length > 0) this.reader.feed(rest)
          return
        }
        // §6a: the replica's proof, then our AUTH; the connection is ours
        // once its sealed PONG (or refused by its sealed REJECT).
        if (answer.proof === undefined) {
          return fail(new ConnectionLostError(`${where} answered without a key exchange: it does not know client keys (a version before them)`, undefined, { endpoint: ep, reasonCode: 'BAD_AUTH' }))
        }
        if (this.opts.seal && answer.auth !== 2) {
          return fail(new ConnectionLostError(`${where} answered without encryption: it does not know sealed client connections (a version before them)`, undefined, { endpoint: ep, reasonCode: 'BAD_AUTH' }))
        }
        const session = finishKeyed(keyed, this.opts.key, answer.proof, this.opts.replicaKeys[i], this.opts.seal)
        if (typeof session === 'string') {
          return fail(new ConnectionLostError(`${where}: ${session}`, undefined, { endpoint: ep, reasonCode: 'BAD_AUTH', reason: session }))
        }
        s.write(session.authFrame)
        this.opener = session.opener
        const decryptor = session.decryptor
        this.preReady = {
          ready: () => ready(answer, session),
          refused: (err) => fail(err),
        }
        const feed =
          decryptor === undefined
            ? (d: Buffer): void => this.reader.feed(d)
            : (d: Buffer): void => {
                // §6b: decrypted before it is parsed.
                const error = decryptor.feed(d, this.feedReader)
                if (error !== undefined) this.protocolError(error)
              }
        s.on('data', feed)
        if (rest.length > 0) feed(Buffer.from(rest))
      }
      s.on('data', onHandshake)
      s.once('connect', () => {
        tcpUp = true
        s.write(keyed?.hello ?? clientHello(this.opts.clusterId))
      })
      // 'close' follows and reports.
      s.on('error', (err) => {
        socketError ??= err
      })
      s.once('close', () => {
        clearTimeout(timer)
        if (!welcomed) {
          this.preReady = undefined
          this.opener = undefined
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
        this.reader.reset()
        this.out.reset()
        this.out.setSealer(undefined, 0)
        this.opener = undefined
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
