// A client connected with `f`: one single-replica client per replica, kept
// connected (each reconnects on its next call after a failure). Calls with
// a quorum go through quorum.ts; calls without one go to the current
// leader, which moves on when it fails (as a client with several replicas
// moves on). Client (client.ts) holds one of these when connected with f.
import type { EventEmitter } from 'node:events'

import type { CallOptions } from './call-options.js'
import type { Endpoint } from './client-handshake.js'
import { ConnectionLostError } from './errors.js'
import { type Member, type MemberSink, type OpenCalls, type QuorumRun, quorumCall } from './quorum.js'

/** A member's events (Client's ClientEvents). */
export type MemberEvents = { connect: [Endpoint]; disconnect: [Endpoint, string]; 'handler-error': [unknown, string] }

/** What the cluster needs of each replica's client (a Client). */
export interface MemberClient {
  readonly connected: boolean
  readonly inFlight: number
  readonly limits: { maxRequestBytes: number; maxInFlight: number }
  readonly events: EventEmitter<MemberEvents>
  call(route: string, body: Uint8Array, options?: CallOptions): Promise<Uint8Array>
  callMember(route: string, body: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined, id: number, sink: MemberSink, index: number): void
  /** Replies to ids this replica's connection was not asked (replyTo from another replica's request). */
  onUnsolicited: ((id: number, reply: Uint8Array | Error) => void) | undefined
  close(): Promise<void>
}

export class ClusterMembers implements OpenCalls {
  private leader = 0
  private readonly members: Member[]
  // Quorum calls by their request id (the same on every replica's
  // connection), for replies a replica sends to a request another replica
  // was asked (replica.replyTo).
  private readonly open = new Map<number, QuorumRun>()
  private nextId = 0x80000000

  private constructor(
    readonly clients: MemberClient[],
    endpoints: Endpoint[],
    private readonly f: number,
  ) {
    this.members = clients.map((c, i) => ({ endpoint: endpoints[i]!, call: (r, b, t, s, id, sink, index) => c.callMember(r, b, t, s, id, sink, index) }))
    clients.forEach((c, i) => {
      c.onUnsolicited = (id, reply) => this.open.get(id)?.unsolicited(i, reply)
    })
  }

  /**
   * Connects to every replica; resolves once f + 1 are connected (the
   * others go on trying in the background, and again on their next call).
   * Rejects with CONNECTION_LOST, each replica's cause in `errors`, once
   * f + 1 can no longer connect.
   */
  static async connect(
    endpoints: Endpoint[],
    f: number,
    make: (ep: Endpoint, index: number) => { client: MemberClient; connect: () => Promise<void> },
    events: EventEmitter<MemberEvents>,
  ): Promise<ClusterMembers> {
    const made = endpoints.map((ep, i) => make(ep, i))
    const cluster = new ClusterMembers(
      made.map((m) => m.client),
      endpoints,
      f,
    )
    for (const m of made) {
      m.client.events.on('connect', (ep) => events.emit('connect', ep))
      m.client.events.on('disconnect', (ep, why) => events.emit('disconnect', ep, why))
      m.client.events.on('handler-error', (err, route) => events.emit('handler-error', err, route))
    }
    const need = f + 1
    const errors: Error[] = endpoints.map(() => new Error('not tried'))
    await new Promise<void>((resolve, reject) => {
      let up = 0
      let failed = 0
      made.forEach((m, i) => {
        m.connect().then(
          () => {
            if (++up === need) resolve()
          },
          (err: unknown) => {
            errors[i] = err instanceof Error ? err : new Error(String(err))
            if (++failed === endpoints.length - need + 1) {
              const list = endpoints.map((ep, j) => `${ep.host}:${ep.port}: ${errors[j]!.message}`).join('; ')
              reject(new ConnectionLostError(`fewer than f + 1 = ${need} of ${endpoints.length} replicas accepted a connection (${list})`, errors[i], { errors }))
            }
          },
        )
      })
    }).catch(async (err: unknown) => {
      await cluster.close()
      throw err
    })
    return cluster
  }

  call(route: string, body: Uint8Array, options: CallOptions, timeoutMs: number): Promise<Uint8Array> {
    const n = this.members.length
    if (options.quorum === undefined && options.to === undefined && options.key === undefined) {
      // One replica: the leader; when it fails, the next call goes to the next one.
      const i = this.leader
      return this.clients[i]!.call(route, body, options).catch((err: unknown) => {
        if (err instanceof ConnectionLostError && this.leader === i) this.leader = (i + 1) % n
        throw err
      })
    }
    let id = this.nextId
    while (this.open.has(id)) id = (id + 1) >>> 0
    this.nextId = (id + 1) >>> 0
    return quorumCall(
      this.members,
      {
        id,
        route,
        body,
        quorum: options.quorum ?? this.f + 1,
        to: options.to ?? 'all',
        key: options.key,
        deadline: Date.now() + (options.timeoutMs ?? timeoutMs),
        signal: options.signal,
        leader: this.leader,
      },
      this,
      (next) => {
        this.leader = next
      },
    )
  }

  /** OpenCalls: quorum calls by id, for the replies replicas send unasked. */
  register(id: number, call: QuorumRun): void {
    this.open.set(id, call)
  }

  unregister(id: number): void {
    this.open.delete(id)
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.close()))
  }
}
