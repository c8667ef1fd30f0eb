// Calls to a replicated service in which up to f replicas may lie
// (BFT-SMaRt's ServiceProxy, ResilientDB's client: f + 1 matching replies).
// A quorum call asks the replicas and resolves with the reply `quorum`
// distinct replicas returned equal; it rejects with NO_QUORUM as soon as
// the replies in and the ones still possible cannot make one. Each replica
// counts at most once: its one call settles once.
import type { Endpoint } from './client-handshake.js'
import { AbortedError, QuorumError, type QuorumReply } from './errors.js'

/** What a quorum call needs of each replica's connection. */
export interface Member {
  readonly endpoint: Endpoint
  call(route: string, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined): Promise<Uint8Array>
}

export interface QuorumCall {
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

function bytesKey(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1')
}

/** Resolves with the agreed reply; `onFailover(i)` learns of a replica that failed while it was asked first. */
export function quorumCall(members: readonly Member[], c: QuorumCall, onFailover: (next: number) => void): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const n = members.length
    const replies: QuorumReply[] = members.map((m) => ({ replica: { host: m.endpoint.host, port: m.endpoint.port } }))
    const groups = new Map<string, { count: number; reply: Uint8Array }>()
    // Member calls still running when the call is decided are left to
    // finish, their replies dropped: aborting them cost two errors (and
    // their stacks) per call, 35x the throughput of W6.
    let settled = false
    let outstanding = 0
    let next = 0 // with 'leader': members asked so far
    const finish = (err: Error | undefined, value?: Uint8Array): void => {
      if (settled) return
      settled = true
      c.signal?.removeEventListener('abort', onAbort)
      if (err !== undefined) reject(err)
      else resolve(value!)
    }
    const onAbort = (): void => finish(new AbortedError(c.signal?.reason))
    c.signal?.addEventListener('abort', onAbort, { once: true })
    // Still possible: the largest group, plus every reply not in yet.
    const check = (): void => {
      let best = 0
      for (const g of groups.values()) best = Math.max(best, g.count)
      const notAsked = c.to === 'all' ? 0 : n - next
      if (best + outstanding + notAsked < c.quorum) return finish(new QuorumError(c.quorum, replies))
      if (c.to === 'leader' && outstanding === 0 && next < n) ask(next)
    }
    const ask = (j: number): void => {
      const i = (c.leader + j) % n
      next = j + 1
      outstanding++
      const timeoutMs = Math.max(1, c.deadline - Date.now())
      members[i]!.call(c.route, c.body, timeoutMs, c.signal).then(
        (reply) => {
          if (settled) return
          outstanding--
          replies[i]!.reply = reply
          let k: string
          try {
            const derived = c.key === undefined ? reply : c.key(reply)
            k = typeof derived === 'string' ? `s${derived}` : `b${bytesKey(derived)}`
          } catch (err) {
            replies[i]!.error = err instanceof Error ? err : new Error(String(err))
            return check()
          }
          const g = groups.get(k) ?? { count: 0, reply }
          g.count++
          groups.set(k, g)
          if (g.count >= c.quorum) return finish(undefined, g.reply)
          check()
        },
        (err: unknown) => {
          if (settled) return
          outstanding--
          replies[i]!.error = err instanceof Error ? err : new Error(String(err))
          if (c.to === 'leader' && j === 0) onFailover((c.leader + 1) % n)
          check()
        },
      )
    }
    if (c.signal?.aborted) return onAbort()
    if (c.to === 'all') for (let j = 0; j < n; j++) ask(j)
    else ask(0)
  })
}
