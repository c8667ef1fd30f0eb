// Calls to a replicated service in which up to f replicas may lie
// (BFT-SMaRt's ServiceProxy, ResilientDB's client: f + 1 matching replies).
// A quorum call asks the replicas and resolves with the reply `quorum`
// distinct replicas returned equal; it rejects with NO_QUORUM as soon as
// the replies in and the ones still possible cannot make one. Each replica
// counts at most once: its one call settles once, and a reply it sends
// unasked (replyTo) counts only when it was not asked.
//
// One object per call, no promise or closure per replica: the replicas'
// connections report straight into it (MemberSink). At W6's rate the
// garbage of a promise and two closures per replica was a third of the
// client's CPU.
import { bufferOf, isBytes, sizeOf } from './args.js'
import type { Endpoint } from './client-handshake.js'
import { AbortedError, InvalidArgumentError, QuorumError, type QuorumReply } from './errors.js'

/** Where a replica's answer to a quorum call goes (index: the replica's). */
export interface MemberSink {
  memberReply(index: number, reply: Uint8Array): void
  memberFailed(index: number, err: Error): void
}

/** What a quorum call needs of each replica's connection. */
export interface Member {
  readonly endpoint: Endpoint
  /** Sends the request with id `id`; the answer goes to `sink` (never synchronously). */
  call(route: string, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined, id: number, sink: MemberSink, index: number): void
}

export interface QuorumCall {
  /** The request id, the same on every replica's connection. */
  id: number
  route: string
  body: Uint8Array
  quorum: number
  to: 'all' | 'leader'
  key: ((reply: Uint8Array) => string | Uint8Array) | undefined
  /** The whole call's deadline (ms since the epoch). */
  deadline: number
  signal: AbortSignal | undefined
  /** With to 'leader': the replica asked first. */
  leader: number
}

/** Takes replies replicas send unasked to a call's id (cluster.ts). */
export interface OpenCalls {
  register(id: number, call: QuorumRun): void
  unregister(id: number): void
}

/** With 'leader': the least wait for unasked replies before asking the next replica. */
const LEADER_GRACE_MIN_MS = 20

// Per replica: asked, answered (its reply or failure is in).
const ASKED = 1
const ANSWERED = 2

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  const n = sizeOf(a)
  if (n !== sizeOf(b)) return false
  if (n > 64) return bufferOf(a).equals(b)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false
  return true
}

function sameKey(a: string | Uint8Array, b: string | Uint8Array): boolean {
  if (typeof a === 'string' || typeof b === 'string') return a === b
  return bytesEqual(a, b)
}

/** One quorum call in progress. */
export class QuorumRun implements MemberSink {
  private settled = false
  private outstanding = 0
  private best = 0
  private next = 0 // with 'leader': members asked so far
  private readonly state: number[]
  // What each replica answered (its reply, or the key of it) and why it failed.
  private readonly got: (Uint8Array | undefined)[]
  private readonly keys: (string | Uint8Array | undefined)[] | undefined
  private errs: (Error | undefined)[] | undefined
  private started: number[] | undefined // with 'leader': when each was asked
  // With 'leader': after a reply short of the quorum, the next replica is
  // asked only if the others' replies (replyTo) do not come first.
  private askTimer: NodeJS.Timeout | undefined
  private readonly onAbort: (() => void) | undefined

  constructor(
    private readonly members: readonly Member[],
    private readonly c: QuorumCall,
    private readonly open: OpenCalls,
    private readonly onFailover: (next: number) => void,
    private readonly resolve: (reply: Uint8Array) => void,
    private readonly reject: (err: Error) => void,
  ) {
    const n = members.length
    this.state = new Array<number>(n).fill(0)
    this.got = new Array<Uint8Array | undefined>(n)
    this.keys = c.key === undefined ? undefined : new Array<string | Uint8Array | undefined>(n)
    if (c.signal !== undefined) {
      if (c.signal.aborted) {
        this.settled = true
        reject(new AbortedError(c.signal.reason))
        return
      }
      this.onAbort = () => this.finish(new AbortedError(c.signal?.reason))
      c.signal.addEventListener('abort', this.onAbort, { once: true })
    }
    open.register(c.id, this)
    if (c.to === 'all') {
      this.outstanding = n
      for (let i = 0; i < n; i++) this.send(i)
    } else {
      this.started = new Array<number>(n).fill(0)
      this.ask(0)
    }
  }

  private send(i: number): void {
    this.state[i]! |= ASKED
    const c = this.c
    this.members[i]!.call(c.route, c.body, Math.max(1, c.deadline - Date.now()), c.signal, c.id, this, i)
  }

  // With 'leader': the j-th replica from the leader.
  private ask(j: number): void {
    const i = (this.c.leader + j) % this.members.length
    this.next = j + 1
    this.outstanding++
    this.started![i] = Date.now()
    this.send(i)
  }

  memberReply(i: number, reply: Uint8Array): void {
    if (this.settled) return
    this.outstanding--
    if ((this.state[i]! & ANSWERED) !== 0) return this.check() // it answered unasked first: counted then
    this.state[i]! |= ANSWERED
    // With 'leader': the others' replyTo answers (forwarded by it) take longer than its own.
    this.take(i, reply, this.started === undefined ? 0 : Math.max(LEADER_GRACE_MIN_MS, 4 * (Date.now() - this.started[i]!)))
  }

  memberFailed(i: number, err: Error): void {
    if (this.settled) return
    this.outstanding--
    if ((this.state[i]! & ANSWERED) === 0) (this.errs ??= new Array<Error | undefined>(this.members.length))[i] = err
    this.state[i]! |= ANSWERED
    if (this.c.to === 'leader' && i === this.c.leader) this.onFailover((i + 1) % this.members.length)
    this.check()
  }

  /** A reply replica i sent to this id unasked (replyTo): only a replica not asked, once. */
  unsolicited(i: number, reply: Uint8Array | Error): void {
    if (this.settled || this.state[i] !== 0) return
    this.state[i] = ANSWERED
    if (reply instanceof Error) {
      ;(this.errs ??= new Array<Error | undefined>(this.members.length))[i] = reply
      return this.check()
    }
    this.take(i, reply, 0)
  }

  // Replica i answered `reply`: counted once. `graceMs`: how long to wait
  // for unasked replies before asking another (with 'leader').
  private take(i: number, reply: Uint8Array, graceMs: number): void {
    const c = this.c
    this.got[i] = reply
    let k: string | Uint8Array = reply
    if (this.keys !== undefined) {
      try {
        k = c.key!(reply)
        if (typeof k !== 'string' && !isBytes(k)) throw new InvalidArgumentError('options.key', 'a function returning a string or a Uint8Array', k)
      } catch (err) {
        this.got[i] = undefined
        ;(this.errs ??= new Array<Error | undefined>(this.members.length))[i] = err instanceof Error ? err : new Error(String(err))
        return this.check()
      }
      this.keys[i] = k
    }
    // Replies equal to this one, this one included (at most n compared).
    let count = 1
    for (let j = 0; j < this.got.length; j++) {
      if (j === i) continue
      const other = this.keys !== undefined ? this.keys[j] : this.got[j]
      if (other !== undefined && sameKey(other, k)) count++
    }
    if (count > this.best) this.best = count
    if (count >= c.quorum) return this.finish(undefined, reply)
    if (graceMs <= 0 || c.to !== 'leader') return this.check()
    this.check(false)
    if (!this.settled && this.askTimer === undefined) {
      this.askTimer = setTimeout(() => {
        this.askTimer = undefined
        this.check()
      }, Math.min(graceMs, Math.max(1, c.deadline - Date.now())))
    }
  }

  // Still possible: the largest group, plus every reply not in yet.
  private check(askNow = true): void {
    if (this.settled) return
    const n = this.members.length
    // With 'leader': replicas neither asked nor heard from may still answer.
    let notAsked = 0
    if (this.c.to === 'leader') for (let i = 0; i < n; i++) if (this.state[i] === 0) notAsked++
    if (this.best + this.outstanding + notAsked < this.c.quorum) return this.noQuorum()
    if (this.c.to === 'leader' && this.outstanding === 0 && askNow) {
      while (this.next < n && this.state[(this.c.leader + this.next) % n] !== 0) this.next++
      if (this.next < n) this.ask(this.next)
    }
  }

  private noQuorum(): void {
    const replies: QuorumReply[] = this.members.map((m, i) => {
      const r: QuorumReply = { replica: { host: m.endpoint.host, port: m.endpoint.port } }
      if (this.got[i] !== undefined) r.reply = this.got[i]
      if (this.errs?.[i] !== undefined) r.error = this.errs[i]
      return r
    })
    this.finish(new QuorumError(this.c.quorum, replies))
  }

  private finish(err: Error | undefined, value?: Uint8Array): void {
    if (this.settled) return
    this.settled = true
    if (this.askTimer !== undefined) clearTimeout(this.askTimer)
    this.open.unregister(this.c.id)
    if (this.onAbort !== undefined) this.c.signal?.removeEventListener('abort', this.onAbort)
    // Member calls still running are left to finish, their replies dropped.
    if (err !== undefined) this.reject(err)
    else this.resolve(value!)
  }
}

/** Resolves with the agreed reply; `onFailover(i)` learns of a replica that failed while it was asked first. */
export function quorumCall(members: readonly Member[], c: QuorumCall, open: OpenCalls, onFailover: (next: number) => void): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    new QuorumRun(members, c, open, onFailover, resolve, reject)
  })
}
