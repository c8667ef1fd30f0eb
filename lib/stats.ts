// Statistics shapes shared by the addon's view (native.ts) and the public
// API (replica.ts): defined once, at the bottom of the import graph.

export interface PeerStats {
  id: number
  /** The peer's cluster when it is a remote one (`remoteClusters`); absent for this cluster's replicas. */
  cluster?: string
  connected: boolean
  msgsIn: number
  bytesIn: number
  msgsOut: number
  bytesOut: number
  /** Bytes accepted by `send`/`broadcast` and not yet acknowledged by the peer. */
  queuedBytes: number
  queuedMsgs: number
  unackedBytes: number
  reconnects: number
  rejects: number
  /** Resent frames the duplicate filter dropped after a reconnect. */
  duplicates: number
  /** Last heartbeat round trip in µs (0 before the first). */
  heartbeatRttUs: number
  /** Receive-side depth: bytes read from the peer, not yet handled (bounded by maxChunksPerConnection × receiveChunkBytes). */
  receivePendingBytes: number
}

/** One open connection on the client port. */
export interface ClientConnectionStats {
  /** The id handlers see as `ctx.client.connectionId`. */
  connectionId: number
  /** Remote `host:port`. */
  address: string
  /** Complete requests read, and their bytes (headers included). */
  requests: number
  bytesIn: number
  /** Replies (and error replies) sent back, and their bytes. */
  replies: number
  bytesOut: number
  /** Requests read and not answered yet (its socket is not read past `maxClientInFlight`). */
  inFlight: number
  /** Reply bytes not yet taken by its socket (past 8 MiB its requests are no longer read). */
  replyBacklogBytes: number
  /** True while its socket is not read (in-flight cap or reply backlog). */
  paused: boolean
  /** True while it has bytes to read and waits for client receive memory (`maxClientReceiveBytes` is taken). */
  waitingForMemory: boolean
}
