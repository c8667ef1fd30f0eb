// Client requests that outlived their handler's call (async handlers, or a
// reply left for later): found again when the client cancels one (a CANCEL
// frame) or its connection closes, so that `ctx.signal` fires and a late
// reply is dropped. Requests answered at once never enter the table.
import { AbortedError, ConnectionLostError } from './errors.js'
import type { RequestContext } from './request.js'

/** Connections remembered as closed, for requests handed on after their close was reported. */
const CLOSED_REMEMBERED = 4096

export class OpenRequests {
  private readonly byConnection = new Map<number, Map<number, RequestContext>>()
  private readonly closed = new Set<number>()

  /** `ctx` was not answered by its handler's call. */
  track(ctx: RequestContext, key: number): void {
    if (this.closed.has(ctx.dest)) return ctx.cancel(new ConnectionLostError('the client disconnected'), false)
    let m = this.byConnection.get(ctx.dest)
    if (m === undefined) this.byConnection.set(ctx.dest, (m = new Map()))
    m.set(key, ctx)
    ctx.tracked = true
  }

  /** A tracked request was answered (or cancelled). */
  done(ctx: RequestContext): void {
    const m = this.byConnection.get(ctx.dest)
    if (m === undefined) return
    m.delete(ctx.requestId)
    if (m.size === 0) this.byConnection.delete(ctx.dest)
  }

  /** The client sent CANCEL for request `key`: its slot is freed with a CANCELLED reply. False: not open here. */
  cancel(dest: number, key: number): boolean {
    const ctx = this.byConnection.get(dest)?.get(key)
    ctx?.cancel(new AbortedError('the client cancelled the call'), true)
    return ctx !== undefined
  }

  /** The connection closed: its open requests are cancelled (no reply: nobody reads it). */
  connectionClosed(dest: number): void {
    this.closed.add(dest)
    if (this.closed.size > CLOSED_REMEMBERED) this.closed.delete(this.closed.values().next().value as number)
    const m = this.byConnection.get(dest)
    if (m === undefined) return
    this.byConnection.delete(dest)
    const err = new ConnectionLostError('the client disconnected')
    for (const ctx of m.values()) ctx.cancel(err, false)
  }

  /** Requests tracked. */
  get size(): number {
    let n = 0
    for (const m of this.byConnection.values()) n += m.size
    return n
  }
}
