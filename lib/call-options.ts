// A call's options, shared by the client and typed services (service.ts)
// without either importing the other's module.

export interface CallOptions {
  /** Rejects with `TIMEOUT` after this many ms (default: the client's `timeoutMs`). */
  timeoutMs?: number
  /** Rejects with `ABORTED` when it fires; the reply, if it comes, is dropped. */
  signal?: AbortSignal
  /**
   * A client connected with `f` (to every replica): resolve with the reply
   * this many distinct replicas returned equal (default f + 1); reject with
   * `NO_QUORUM` (a `QuorumError`) once that cannot happen.
   */
  quorum?: number
  /**
   * With `quorum`: send to every replica at once (`'all'`, the default), or
   * to one at a time from the current leader (`'leader'`), moving on until
   * `quorum` equal replies are in; every reply counts either way.
   */
  to?: 'all' | 'leader'
  /** With `quorum`: compare replies by this key (default: their bytes). */
  key?: (reply: Uint8Array) => string | Uint8Array
}
