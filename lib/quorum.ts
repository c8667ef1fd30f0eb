// Calls to a replicated service in which up to f replicas may lie
// (BFT-SMaRt's ServiceProxy, ResilientDB's client: f + 1 matching replies).
// A quorum call asks the replicas and resolves with the reply `quorum`
// distinct replicas returned equal; it rejects with NO_QUORUM as soon as
// the replies in and the ones still possible cannot make one. Each replica
// counts at most once: its one call settles once.
import type { Endpoint } from './client-handshake.js'
import { AbortedError, InvalidArgumentError, QuorumError, type QuorumReply } from './errors.js'

/** What a quorum call needs of each replica's connection. */
export interface Member {
  readonly endpoint: Endpoint
  call(route: string, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined, id: number): Promise<Uint8Array>
}

export interface QuorumCall {
  /** The request id, the same on every replica's connection. */
  id: number
  /**
   * Registers (or with undefined, removes) the taker of replies replica
   * `member` sends to this id unasked (replyTo: the request reached it
   * through another replica).
   */
  register(accept: ((member: number, reply: Uint8Array | Error) => void) | undefined): void
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

/** With 'leader': the least wait for unasked replies before asking the next replica. */
const LEADER_GRACE_MIN_MS = 20

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  if (a.length > 64) return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function sameKey(a: string | Uint8Array, b: string | Uint8Array): boolean {
  if (typeof a === 'string' || typeof b === 'string') return a === b
  return bytesEqual(a, b)
}

/** Resolves with the agreed reply; `onFailover(i)` learns of a replica that failed while it was asked first. */
export function quorumCall(members: readonly Member[], c: QuorumCall, onFailover: (next: number) => void): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const n = members.length
    // What each replica answered (reported only when the call fails), and
    // the distinct replies (or keys) seen with their counts: at most n, so
    // a linear search, no string made of a reply.
    const got: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(n)
    const errs: (Error | undefined)[] = new Array<Error | undefined>(n)
    const keys: (string | Uint8Array)[] = []
    const counts: number[] = []
    const firsts: Uint8Array[] = []
    // Member calls still running when the call is decided are left to
    // finish, their replies dropped: aborting them cost two errors (and
    // their stacks) per call, 35x the throughput of W6.
    let settled = false
    let outstanding = 0
    let best = 0
    let next = 0 // with 'leader': members asked so far
    // Each replica counts once: asked (its call settles once) or answered
    // unasked (its first reply only).
    const asked: boolean[] = new Array<boolean>(n).fill(false)
    const answered: boolean[] = new Array<boolean>(n).fill(false)
    // With 'leader': after a reply short of the quorum, the next replica is
    // asked only if the others' replies (replyTo) do not come first.
    let askTimer: NodeJS.Timeout | undefined
    const finish = (err: Error | undefined, value?: Uint8Array): void => {
      if (settled) return
      settled = true
      if (askTimer !== undefined) clearTimeout(askTimer)
      c.register(undefined)
      c.signal?.removeEventListener('abort', onAbort)
      if (err !== undefined) reject(err)
      else resolve(value!)
    }
    const noQuorum = (): void => {
      const replies: QuorumReply[] = members.map((m, i) => {
        const r: QuorumReply = { replica: { host: m.endpoint.host, port: m.endpoint.port } }
        if (got[i] !== undefined) r.reply = got[i]
        if (errs[i] !== undefined) r.error = errs[i]
        return r
      })
      finish(new QuorumError(c.quorum, replies))
    }
    const onAbort = (): void => finish(new AbortedError(c.signal?.reason))
    c.signal?.addEventListener('abort', onAbort, { once: true })
    // Still possible: the largest group, plus every reply not in yet.
    const check = (askNow = true): void => {
      // With 'leader': replicas neither asked nor heard from may still answer.
      let notAsked = 0
      if (c.to === 'leader') for (let i = 0; i < n; i++) if (!asked[i] && !answered[i]) notAsked++
      if (best + outstanding + notAsked < c.quorum) return noQuorum()
      if (c.to === 'leader' && outstanding === 0 && askNow && !settled) {
        while (next < n && answered[(c.leader + next) % n]) next++
        if (next < n) ask(next)
      }
    }
    // Replica i answered `reply` (its call, or unasked): counted once.
    // `graceMs`: how long to wait for unasked replies before asking another.
    const take = (i: number, reply: Uint8Array, graceMs = 0): void => {
      got[i] = reply
      let k: string | Uint8Array
      try {
        k = c.key === undefined ? reply : c.key(reply)
        if (typeof k !== 'string' && !(k instanceof Uint8Array)) throw new InvalidArgumentError('options.key', 'a function returning a string or a Uint8Array', k)
      } catch (err) {
        errs[i] = err instanceof Error ? err : new Error(String(err))
        return check()
      }
      let g = 0
      while (g < keys.length && !sameKey(keys[g]!, k)) g++
      if (g === keys.length) {
        keys.push(k)
        counts.push(0)
        firsts.push(reply)
      }
      const count = ++counts[g]!
      if (count > best) best = count
      if (count >= c.quorum) return finish(undefined, firsts[g])
      if (graceMs <= 0 || c.to !== 'leader') return check()
      check(false)
      if (!settled && askTimer === undefined) {
        askTimer = setTimeout(() => {
          askTimer = undefined
          check()
        }, Math.min(graceMs, Math.max(1, c.deadline - Date.now())))
      }
    }
    const ask = (j: number): void => {
      const i = (c.leader + j) % n
      next = j + 1
      asked[i] = true
      outstanding++
      const started = Date.now()
      const timeoutMs = Math.max(1, c.deadline - started)
      members[i]!.call(c.route, c.body, timeoutMs, c.signal, c.id).then(
        (reply) => {
          if (settled) return
          outstanding--
          if (answered[i]) return check() // it answered unasked first: counted then
          answered[i] = true
          // The others' replyTo answers (forwarded by it) take longer than its own.
          take(i, reply, Math.max(LEADER_GRACE_MIN_MS, 4 * (Date.now() - started)))
        },
        (err: unknown) => {
          if (settled) return
          outstanding--
          if (!answered[i]) errs[i] = err instanceof Error ? err : new Error(String(err))
          answered[i] = true
          if (c.to === 'leader' && j === 0) onFailover((c.leader + 1) % n)
          check()
        },
      )
    }
    // A reply replica i sent to this id unasked (replyTo): only a replica
    // not asked, once; an error reply counts as its failure.
    c.register((i, reply) => {
      if (settled || asked[i] || answered[i]) return
      answered[i] = true
      if (reply instanceof Error) {
        errs[i] = reply
        return check()
      }
      take(i, reply)
    })
    if (c.signal?.aborted) {
      c.register(undefined)
      return onAbort()
    }
    if (c.to === 'all') for (let j = 0; j < n; j++) ask(j)
    else ask(0)
  })
}
