// The receive side a replica and each of its worker threads share: route
// tables (on, handle, serve, off) and the delivery of native batches to
// handlers: messages as zero-copy views, runs whose handlers returned
// promises held until they settle, client requests with their context.
// ReplicaBase (replica-base.ts) adds the send side.
import { checkFunction, checkRoute, sizeOf } from './args.js'
import { ClosedError, ConfigError, InvalidArgumentError } from './errors.js'
import { Message, MessageBatch } from './message.js'
import { CLIENT_FLAG, SLOT_ADDRESS, type FreshChunks, type NativeSender } from './native.js'
import { OpenRequests } from './open-requests.js'
import { HEADER_BYTES, type Outbox } from './outbox.js'
import { RequestContext, type ReplySink, type RequestHandler } from './request.js'
import { routeId, routeName } from './route.js'
import { type MethodDefinition, type ServiceDefinition, type ServiceImplementation, checkServiceDefinition, methodRoute } from './service.js'
import { FLAG_SIGNED, KIND_CANCEL, KIND_ERROR, OFFSET_FLAGS, OFFSET_KIND, OFFSET_MSG_ID, OFFSET_ROUTE, OFFSET_SENDER, SIGNED_TRAILER_BYTES, encodeErrorBody } from './wire.js'

/**
 * A route handler. Its `msg.payload` is valid during the call and, when the
 * handler returns a promise, until that promise settles (the message is
 * acknowledged to its sender only then); copy it to keep it longer.
 */
export type Handler = (msg: Message) => unknown

/**
 * A batch handler (`onBatch`): consecutive messages of its route from one
 * sender in one call, with no object per message. What it returns is
 * treated as a `Handler`'s: a promise holds the whole batch (payloads
 * valid, not acknowledged) until it settles.
 */
export type BatchHandler = (batch: MessageBatch) => unknown

/** A message for a route with no handler (the `'unrouted'` event). */
export interface UnroutedInfo {
  /** The sender's replica id. */
  from: number
  /** The route id from the frame (FNV-1a 32 of the name). */
  route: number
  /**
   * The route's name, when this thread knows the one name with that id: it
   * registered a handler for it (`on`, `handle`, `serve`, even if removed
   * since) or sent, broadcast or called it. The wire carries only the id,
   * so otherwise it is absent.
   */
  routeName?: string
  /** Payload bytes. */
  size: number
}

function unroutedInfo(from: number, route: number, size: number): UnroutedInfo {
  const name = routeName(route)
  return name === undefined ? { from, route, size } : { from, route, routeName: name, size }
}

/** A run of messages whose handlers returned promises not settled yet. */
interface PendingRun {
  /** Promises not settled. */
  n: number
  /** Names the run to native settle(). */
  token: number
  /** Handed to native (at the end of the batch). */
  registered: boolean
}

interface RouteEntry {
  name: string
  fn: Handler
  /** Registered with onBatch: fn is unused, this takes runs of the route. */
  batch?: BatchHandler
}

/** @internal meta array entries per wake-up (4 u32 each). */
export const META_ENTRIES = 4096

/** The per-message function of an onBatch route (never called: its runs go to the batch handler). */
const noHandler: Handler = () => undefined

/** Refuses a route whose id is another route's in the table (a hash collision). */
function checkCollision(table: Map<number, { name: string }>, route: string): void {
  const existing = table.get(routeId(route))
  if (existing && existing.name !== route) {
    throw new ConfigError('route', `"${route}" hashes to the same route id as "${existing.name}"; rename one`)
  }
}

/** Adds a route's handler to a table keyed by route id (arguments checked by the caller). */
function register<F>(table: Map<number, { name: string; fn: F }>, route: string, fn: F): void {
  checkCollision(table, route)
  table.set(routeId(route), { name: route, fn })
}

/** @internal */
export abstract class Inbound implements ReplySink {
  /** This replica's id. */
  readonly id: number
  protected native!: NativeSender
  protected outbox!: Outbox
  protected readonly meta = new Uint32Array(META_ENTRIES * 4)
  private holdToken = 0
  private readonly routes = new Map<number, RouteEntry>()
  private readonly requestRoutes = new Map<number, { name: string; fn: RequestHandler }>()
  private readonly chunkBuffers: (ArrayBuffer | undefined)[] = []
  private readonly chunkViews: (DataView | undefined)[] = []
  private readonly chunkPooled: boolean[] = []
  /** A byte view per chunk, made for onBatch handlers (MessageBatch.bytes). */
  private readonly chunkBytes: (Uint8Array | undefined)[] = []
  /** The one MessageBatch handed to onBatch handlers (reused). */
  private batchView = new MessageBatch()
  private readonly openRequests = new OpenRequests()
  protected closing: Promise<unknown> | undefined
  protected closed = false
  protected unroutedCount = 0
  protected handlerErrors = 0

  /** This replica's cluster id (`msg.cluster` of messages from its own cluster). */
  readonly cluster: string

  protected constructor(id: number, cluster: string) {
    this.id = id
    this.cluster = cluster
  }

  /** Who sent a run named by a slot address (remote peers; ReplicaBase knows the slots). */
  protected senderOf(address: number): { id: number; cluster: string } {
    return { id: address, cluster: this.cluster }
  }

  protected abstract emitUnrouted(info: UnroutedInfo): void
  protected abstract emitError(err: unknown, info: { from: number; route: string }): void

  /**
   * Checks that handlers may be registered now (arguments already checked):
   * not after close() started. Replica adds: not on the main thread with workers.
   */
  protected beforeRegister(_method: 'on' | 'handle' | 'serve'): void {
    if (this.closing !== undefined) throw new ClosedError()
  }

  /** Registers the handler of a route (one per route). */
  on(route: string, handler: Handler): this {
    return this.registerChecked('on', this.routes, route, handler)
  }

  /**
   * Registers a batch handler for a route, in place of a per-message one
   * (one handler per route, whichever kind): it is called once per run of
   * consecutive messages of the route from one sender, as read (up to 256
   * at a time), with a `MessageBatch` that iterates them without an object
   * per message. For high message rates.
   */
  onBatch(route: string, handler: BatchHandler): this {
    checkRoute('route', route)
    checkFunction('handler', handler)
    this.beforeRegister('on')
    checkCollision(this.routes, route)
    this.routes.set(routeId(route), { name: route, fn: noHandler, batch: handler })
    return this
  }

  /**
   * Registers the request handler of a route on the client port. The
   * handler gets its own copy of the request bytes and a context; what it
   * returns (bytes or a string, or a promise of one) is the reply. Returning
   * nothing leaves the request open for `ctx.reply(...)` later. A throw sends
   * the client an error reply (`HANDLER_ERROR`, or the error's own `code`).
   */
  handle(route: string, handler: RequestHandler): this {
    return this.registerChecked('handle', this.requestRoutes, route, handler)
  }

  /** `on` and `handle`: arguments checked, then registered (nothing done on a bad one). */
  private registerChecked<F>(method: 'on' | 'handle', table: Map<number, { name: string; fn: F }>, route: string, handler: F): this {
    checkRoute('route', route)
    checkFunction('handler', handler)
    this.beforeRegister(method)
    register(table, route, handler)
    return this
  }

  /**
   * Serves every method of a typed service (see `defineService`). All or
   * nothing: every method is checked before any is registered.
   */
  serve<M extends Record<string, MethodDefinition>>(service: ServiceDefinition<M>, impl: ServiceImplementation<M>): this {
    checkServiceDefinition('service', service)
    if (typeof impl !== 'object' || impl === null) throw new InvalidArgumentError('impl', 'an object with one function per method', impl)
    const methods = Object.keys(service.methods)
    for (const method of methods) checkFunction(`impl.${method}`, (impl as Record<string, unknown>)[method])
    this.beforeRegister('serve')
    for (const method of methods) checkCollision(this.requestRoutes, methodRoute(service.name, method))
    for (const method of methods) {
      const def = service.methods[method]!
      const fn = impl[method as keyof M] as unknown as (req: unknown, ctx: RequestContext) => unknown
      const decode = (b: Uint8Array): unknown => def.request.decode(b)
      const encode = def.response.encode as (v: unknown) => Uint8Array
      register(this.requestRoutes, methodRoute(service.name, method), (req: Uint8Array, ctx: RequestContext) => {
        const out = fn(decode(req), ctx)
        if (out !== null && typeof out === 'object' && typeof (out as Promise<unknown>).then === 'function') {
          return (out as Promise<unknown>).then(encode)
        }
        return encode(out)
      })
    }
    return this
  }

  /** @internal ReplySink: stages a reply frame for a client connection. */
  stageReply(dest: number, route: number, lo: number, hi: number, body: Uint8Array, kind: number): void {
    if (this.closing !== undefined) return
    this.outbox.stage(dest, route, lo, hi, body, sizeOf(body), kind)
  }

  /** @internal ReplySink */
  clientAddress(dest: number): string {
    return this.closed ? '' : this.native.clientAddress(dest & 0x7fffffff)
  }

  /** @internal ReplySink */
  requestDone(ctx: RequestContext): void {
    this.openRequests.done(ctx)
  }

  /** A client connection closed: handlers still running for it see `ctx.signal` fire. */
  protected clientClosed(dest: number): void {
    this.openRequests.connectionClosed(dest)
  }

  /** Cancels an open request of this thread (a CANCEL relayed from another worker). */
  protected openRequestCancel(dest: number, key: number): void {
    this.openRequests.cancel(dest, key)
  }

  /** A CANCEL for a request not open on this thread (workers: another may run it). */
  protected cancelElsewhere(_dest: number, _key: number): void {}

  /** @internal ReplySink */
  clientKey(dest: number): Uint8Array | undefined {
    return this.closed ? undefined : this.native.clientKey(dest & 0x7fffffff)
  }

  /** Removes the handler of a route. */
  off(route: string): this {
    checkRoute('route', route)
    const id = routeId(route)
    if (this.routes.get(id)?.name === route) this.routes.delete(id)
    return this
  }

  // JS thread, once per wake-up: every run of frames in `meta`, each frame
  // dispatched to its handler with a zero-copy view. Returns how many runs
  // were handled: once close() has begun (or is called from a handler) the
  // rest are not, and native code must not acknowledge them — their senders
  // keep them for this replica's next process or report them. When handlers
  // returned promises, returns [handled, entry, token, messages, ...]
  // instead: those runs stay held (not acknowledged, payloads valid) until
  // settle(token).
  protected readonly onDeliveries = (count: number, fresh: FreshChunks | undefined): number | number[] => {
    if (fresh !== undefined) {
      for (let i = 0; i < fresh.length; i += 3) {
        const id = fresh[i] as number
        const ab = fresh[i + 1] as ArrayBuffer
        this.chunkBuffers[id] = ab
        this.chunkViews[id] = new DataView(ab)
        this.chunkBytes[id] = undefined
        this.chunkPooled[id] = fresh[i + 2] as boolean
      }
    }
    if (this.closed || this.closing !== undefined) return this.notHandled(0, count)
    const meta = this.meta
    const routes = this.routes
    let lastRoute = -1
    let lastEntry: RouteEntry | undefined
    let held: number[] | undefined
    let hold: PendingRun | undefined
    for (let e = 0; e < count; e++) {
      if (this.closing !== undefined) return this.handledUpTo(this.notHandled(e, count), held) // close() called from a handler
      const k = e * 4
      const cid = meta[k]!
      const off = meta[k + 1]!
      const end = off + meta[k + 2]!
      const peer = meta[k + 3]!
      const ab = this.chunkBuffers[cid]!
      const dv = this.chunkViews[cid]!
      let from = peer
      let cluster = this.cluster
      if (peer >= CLIENT_FLAG) {
        if (peer < SLOT_ADDRESS) {
          this.dispatchRequests(ab, dv, off, end, peer)
          continue
        }
        // A replica of a remote cluster, named by its slot.
        const s = this.senderOf(peer)
        from = s.id
        cluster = s.cluster
      }
      let p = off
      while (p < end) {
        const len = dv.getUint32(p, true)
        const route = dv.getUint32(p + OFFSET_ROUTE, true)
        if (route !== lastRoute) {
          lastRoute = route
          lastEntry = routes.get(route)
        }
        if (lastEntry !== undefined && lastEntry.batch !== undefined) {
          // onBatch: every frame of this route up to the next other one.
          const b = this.batchView
          b.count = 0
          let q = p
          while (q < end) {
            const l = dv.getUint32(q, true)
            if (q !== p && dv.getUint32(q + OFFSET_ROUTE, true) !== route) break
            b.push(q, (dv.getUint8(q + OFFSET_FLAGS) & FLAG_SIGNED) === 0 ? l : l - SIGNED_TRAILER_BYTES)
            q += HEADER_BYTES + l
          }
          b.from = from
          b.cluster = cluster
          b.route = lastEntry.name
          b.bytes = this.chunkBytes[cid] ??= new Uint8Array(ab)
          try {
            const r = lastEntry.batch(b)
            if (r !== null && r !== undefined && typeof (r as Promise<void>).then === 'function') {
              // The handler keeps this batch until it settles: the next one gets its own.
              this.batchView = new MessageBatch()
              hold = this.holdFor(r, hold, from, lastEntry.name)
            }
          } catch (err) {
            this.reportError(err, from, lastEntry.name)
          }
          p = q
          continue
        }
        if (lastEntry !== undefined) {
          // A signed frame ends with the sender's incarnation and its signature (checked natively).
          const msg = new Message(from, lastEntry.name, ab, p, (dv.getUint8(p + OFFSET_FLAGS) & FLAG_SIGNED) === 0 ? len : len - SIGNED_TRAILER_BYTES, cluster)
          try {
            const r = lastEntry.fn(msg)
            if (r !== null && r !== undefined && typeof (r as Promise<void>).then === 'function') hold = this.holdFor(r, hold, from, lastEntry.name)
          } catch (err) {
            this.reportError(err, from, lastEntry.name)
          }
        } else {
          this.unroutedCount++
          this.emitUnrouted(unroutedInfo(from, route, len))
        }
        p += HEADER_BYTES + len
      }
      if (hold !== undefined) {
        hold.registered = true
        ;(held ??= [0]).push(e, hold.token, hold.n)
        hold = undefined
      }
      if (!this.chunkPooled[cid]) {
        this.chunkBuffers[cid] = undefined
        this.chunkViews[cid] = undefined
        this.chunkBytes[cid] = undefined
      }
    }
    return this.handledUpTo(count, held)
  }

  /** onBatch's result: `handled` runs, and the held ones if any. */
  private handledUpTo(handled: number, held: number[] | undefined): number | number[] {
    if (held === undefined) return handled
    held[0] = handled
    return held
  }

  /**
   * A handler returned a promise (or thenable): the run stays held (its
   * payloads valid, not acknowledged) until every promise it returned
   * settles. Returns the run's hold (made at its first promise). Through
   * Promise.resolve: a thenable that calls back at once, twice, or throws
   * still settles the run once, after the batch was handed to native.
   */
  private holdFor(r: unknown, hold: PendingRun | undefined, from: number, name: string): PendingRun {
    const h = hold ?? { n: 0, token: ++this.holdToken, registered: false }
    h.n++
    Promise.resolve(r).then(
      () => this.settleOne(h),
      (err: unknown) => {
        this.reportError(err, from, name)
        this.settleOne(h)
      },
    )
    return h
  }

  /** One promise of a held run settled; the last one releases the run. */
  private settleOne(h: PendingRun): void {
    if (--h.n > 0 || !h.registered) return
    if (!this.closed) this.native.settle?.(h.token)
  }

  /** Runs `from`..`count` of the batch are not handled: drops what JS holds of their unpooled chunks; returns `from`. */
  private notHandled(from: number, count: number): number {
    for (let e = from; e < count; e++) {
      const cid = this.meta[e * 4]!
      if (!this.chunkPooled[cid]) {
        this.chunkBuffers[cid] = undefined
        this.chunkViews[cid] = undefined
        this.chunkBytes[cid] = undefined
      }
    }
    return from
  }

  // Requests from one client connection, in order. Each handler gets bytes
  // that stay valid after the call (handlers are usually async and read
  // them after an await): a view into a copy of the run.
  private dispatchRequests(ab: ArrayBuffer, dv: DataView, off: number, end: number, dest: number): void {
    // One copy of the whole run (an ArrayBuffer per request costs ~0.7 µs);
    // each handler gets a view of its request in it.
    const copy = ab.slice(off, end)
    const now = Date.now()
    let p = off
    while (p < end) {
      const len = dv.getUint32(p, true)
      const route = dv.getUint32(p + OFFSET_ROUTE, true)
      const lo = dv.getUint32(p + OFFSET_MSG_ID, true)
      const hi = dv.getUint32(p + OFFSET_MSG_ID + 4, true)
      if (dv.getUint8(p + OFFSET_KIND) === KIND_CANCEL) {
        if (!this.openRequests.cancel(dest, lo + hi * 2 ** 32)) this.cancelElsewhere(dest, lo + hi * 2 ** 32)
        p += HEADER_BYTES
        continue
      }
      const entry = this.requestRoutes.get(route)
      if (entry === undefined) {
        this.unroutedCount++
        const name = routeName(route)
        const what = name === undefined ? `route id ${route}` : `route ${JSON.stringify(name)} (id ${route})`
        const body = encodeErrorBody('NO_SUCH_ROUTE', `no handler for ${what} on replica ${this.id}`)
        this.outbox.stage(dest, route, lo, hi, body, body.length, KIND_ERROR)
      } else {
        const req = new Uint8Array(copy, p - off + HEADER_BYTES, len)
        // A REQUEST's sender field carries the call's timeout in ms (§6).
        const timeoutMs = dv.getUint32(p + OFFSET_SENDER, true)
        const ctx = new RequestContext(this, dest, route, lo, hi, entry.name, timeoutMs === 0 ? undefined : now + timeoutMs)
        try {
          const r = entry.fn(req, ctx)
          if (r !== null && typeof r === 'object' && typeof (r as Promise<unknown>).then === 'function') {
            ;(r as Promise<unknown>).then(
              (v) => {
                if (v !== undefined && !ctx.replied) ctx.replyReturned(v)
              },
              (err: unknown) => {
                this.handlerErrors++
                ctx.failWith(err)
              },
            )
          } else if (r !== undefined && !ctx.replied) {
            ctx.replyReturned(r)
          }
        } catch (err) {
          this.handlerErrors++
          ctx.failWith(err)
        }
        // Still open: found again by a CANCEL or the connection's close.
        if (!ctx.replied) this.openRequests.track(ctx, lo + hi * 2 ** 32)
      }
      p += HEADER_BYTES + len
    }
  }

  private reportError(err: unknown, from: number, route: string): void {
    this.handlerErrors++
    this.emitError(err, { from, route })
  }
}
