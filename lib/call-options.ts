// A call's options, shared by the client and typed services (service.ts)
// without either importing the other's module.

export interface CallOptions {
  /** Rejects with `TIMEOUT` after this many ms (default: the client's `timeoutMs`). */
  timeoutMs?: number
  /** Rejects with `ABORTED` when it fires; the reply, if it comes, is dropped. */
  signal?: AbortSignal
}
