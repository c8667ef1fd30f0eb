// What the demo's parent and its replica children tell each other over IPC,
// and the constants both sides use.
//
// Phases (parent -> children, children answer):
//   start        child: Replica.start()           -> 'ready' { clientPort }
//                child: waitForPeers()             -> 'up'
//   'go'         child: broadcast loop, 'stats' every REPORT_MS
//   'stop'       child: stops sending, waits until its queues are
//                acknowledged                      -> 'stopped' { s, drained }
//   'final'      (once every child has stopped, so every message sent has
//                been acknowledged, and before any child closes, so no
//                peer has gone yet) child: its counters for the summary
//                                                  -> 'final' { s }
//   'close'      child: replica.close()            -> 'closed' { s (as at
//                'final'), undelivered },
//                then disconnects IPC and exits by itself (the parent waits
//                with a timeout and kills stragglers).
import type { ChildProcess } from 'node:child_process'

import type { ClusterConfig } from '../index.js'
import type { AuthMode } from './args.js'

export const ROUTE_MSG = 'demo.msg'
export const ROUTE_ECHO = 'echo'

/** Children report their counters this often. */
export const REPORT_MS = 100
/** Every link up within this. */
export const PEERS_TIMEOUT_MS = 15_000
/** After 'stop', a replica waits this long at most for its queues to be acknowledged. */
export const DRAIN_TIMEOUT_MS = 5_000
/** After 'close', the parent waits this long for the children to exit before SIGKILL. */
export const EXIT_TIMEOUT_MS = 10_000

/** The child's configuration (JSON in NEXRES_DEMO_REPLICA). */
export interface ChildConfig {
  id: number
  cluster: ClusterConfig
  /** demo --clusters: the other clusters, linked to with remoteClusters. */
  remoteClusters?: ClusterConfig[]
  size: number
  highWaterMark: number
  maxQueueBytes: number
  ioThreads: number
  auth: AuthMode
  privateKey?: string | undefined
  /** Answer every echo call with wrong bytes (demo --byzantine). */
  liar?: boolean
}

/** A child's counters: its replica's stats summed over peers, and what its loops counted. */
export interface ChildStats {
  handled: number
  handledBytes: number
  broadcasts: number
  drainWaits: number
  drainStalls: number
  queueFull: number
  peerDowns: number
  startReconnects: number
  signedSent: number
  signedIn: number
  proofsChecked: number
  proofsFailed: number
  /** demo --clusters: broadcasts to the other clusters (broadcastTo), and messages from them. */
  crossSent: number
  crossIn: number
  /** Links up to replicas of other clusters. */
  remoteUp: number
  msgsIn: number
  bytesIn: number
  msgsOut: number
  bytesOut: number
  queuedBytes: number
  reconnects: number
  duplicates: number
  up: number
  rejects: number
  handlerErrors: number
  unrouted: number
}

export type ParentMessage = { t: 'go' } | { t: 'stop' } | { t: 'final' } | { t: 'close' }

export type ChildMessage =
  | { t: 'ready'; clientPort: number; highWaterMark: number }
  | { t: 'up' }
  | { t: 'stats'; s: ChildStats; touched: number }
  | { t: 'stopped'; s: ChildStats; drained: boolean }
  | { t: 'final'; s: ChildStats }
  | { t: 'closed'; s: ChildStats; undelivered: Record<string, number> }
  | { t: 'fatal'; message: string; code?: string | undefined }

/** The `code` of an error, if it has a string one. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const c = (err as { code?: unknown }).code
  return typeof c === 'string' ? c : undefined
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

// The parent's view of its children and of the client load.

export type Got = {
  ready?: Extract<ChildMessage, { t: 'ready' }>
  up?: Extract<ChildMessage, { t: 'up' }>
  stopped?: Extract<ChildMessage, { t: 'stopped' }>
  final?: Extract<ChildMessage, { t: 'final' }>
  closed?: Extract<ChildMessage, { t: 'closed' }>
}

/** One replica process, as the parent sees it. */
export interface DemoChild {
  /** Its name in output: the replica id, or cluster/id with --clusters. */
  id: string
  proc: ChildProcess
  got: Got
  latest: ChildStats | undefined
  failure: string | undefined
  failureCode: string | undefined
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined
  exited: Promise<unknown>
}

/** The client load: running while true; what completed and failed. */
export interface LoadState {
  running: boolean
  requests: number
  errors: number
  mismatches: number
  /** --byzantine: replies seen that differ from the request (outvoted lies). */
  liesSeen: number
  lastError: string
  endedAt: number
}
