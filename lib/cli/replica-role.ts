// The demo's replica role (a child process of `nexres-rpc demo`): starts one
// replica, broadcasts to the others in a loop that waits for 'drain'
// whenever broadcast() returns false, answers echo calls, and reports its
// counters to the parent over IPC (see demo-protocol.ts for the phases).
import { randomBytes } from 'node:crypto'

import type { Replica } from '../index.js'
import { HEADER_BYTES } from '../wire.js'
import {
  type ChildConfig,
  type ChildMessage,
  type ChildStats,
  DRAIN_TIMEOUT_MS,
  PEERS_TIMEOUT_MS,
  REPORT_MS,
  ROUTE_ECHO,
  ROUTE_MSG,
  errorCode,
  errorMessage,
} from './demo-protocol.js'

/** While waiting for 'drain', look at the queues this often (see checkStall). */
const STALL_CHECK_MS = 1_000
/** With auth mac, one broadcast is a signed one this often. */
const SIGN_EVERY_MS = 100
/** Largest payload of a signed broadcast (signed frames have a lower cap than --size). */
const MAX_SIGNED_PAYLOAD = 64 * 1024

type Counters = Pick<
  ChildStats,
  'handled' | 'handledBytes' | 'broadcasts' | 'drainWaits' | 'drainStalls' | 'queueFull' | 'peerDowns' | 'startReconnects' | 'signedSent' | 'signedIn' | 'proofsChecked' | 'proofsFailed' | 'crossSent' | 'crossIn'
>
/** demo --clusters: one broadcast in this many also goes to each other cluster (broadcastTo). */
const CROSS_EVERY = 8

export async function replicaRole(): Promise<number> {
  const raw = process.env.NEXRES_DEMO_REPLICA
  const sendToParent = process.send?.bind(process)
  if (sendToParent === undefined || !raw) {
    process.stderr.write('nexres-rpc: "replica" is an internal role of "nexres-rpc demo"; run "nexres-rpc demo" instead\n')
    return 2
  }
  const cfg = JSON.parse(raw) as ChildConfig
  const report = (msg: ChildMessage, then?: () => void): void => {
    if (process.connected) sendToParent(msg, undefined, undefined, () => then?.())
  }
  // Ctrl-C reaches the whole process group: the parent coordinates the stop.
  process.on('SIGINT', () => {})

  // Listen to the parent from the start: a 'close' may come before the
  // replica is up, and losing the parent (IPC closed) closes the replica.
  let replica: Replica | undefined
  let closeWanted = false
  let closing = false
  let running = false
  let waiting = false
  let pumpScheduled = false
  let reportTimer: NodeJS.Timeout | undefined
  let stallTimer: NodeJS.Timeout | undefined
  let signTimer: NodeJS.Timeout | undefined
  let signDue = false
  const n: Counters = { handled: 0, handledBytes: 0, broadcasts: 0, drainWaits: 0, drainStalls: 0, queueFull: 0, peerDowns: 0, startReconnects: 0, signedSent: 0, signedIn: 0, proofsChecked: 0, proofsFailed: 0, crossSent: 0, crossIn: 0 }
  let touched = 0
  // The counters reported at 'final' (every replica stopped and drained,
  // none closed yet): close() reports these again, so the summary describes
  // the run, not the shutdown (a replica that closes first would show at
  // the others as a peer-down and a reconnect).
  let finalStats: ChildStats | undefined
  const remotes = cfg.remoteClusters ?? []

  const snapshot = (r: Replica): ChildStats => {
    const st = r.stats()
    // The replica's own rejects count: per-peer rejects are a subset of it.
    const s: ChildStats = { ...n, msgsIn: 0, bytesIn: 0, msgsOut: 0, bytesOut: 0, queuedBytes: 0, reconnects: 0, duplicates: 0, up: 0, remoteUp: 0, rejects: st.rejects, handlerErrors: st.handlerErrors, unrouted: st.unrouted }
    for (const p of st.peers) {
      s.msgsIn += p.msgsIn
      s.bytesIn += p.bytesIn
      s.msgsOut += p.msgsOut
      s.bytesOut += p.bytesOut
      s.queuedBytes += p.queuedBytes
      s.reconnects += p.reconnects
      s.duplicates += p.duplicates
      if (p.connected) s.up++
      if (p.connected && p.cluster !== undefined) s.remoteUp++
    }
    return s
  }

  const close = async (): Promise<void> => {
    closeWanted = true
    if (closing || replica === undefined) return
    closing = true
    running = false
    clearInterval(reportTimer)
    clearInterval(signTimer)
    clearTimeout(stallTimer)
    const s = finalStats ?? snapshot(replica)
    let undelivered: Record<string, number> = {}
    try {
      undelivered = (await replica.close({ timeoutMs: 1000 })).undeliveredBytes
    } catch (err) {
      process.stderr.write(`close failed: ${errorMessage(err)}\n`)
      process.exitCode = 1
    }
    process.off('message', onMessage)
    report({ t: 'closed', s, undelivered }, () => process.connected && process.disconnect())
  }

  // Bounded, backpressure-respecting broadcast loop: a burst of broadcasts
  // per turn of the event loop (so handlers, timers and IPC still run), and
  // as soon as broadcast() returns false, nothing more until 'drain'.
  const payload = randomBytes(cfg.size)
  // auth mac: now and then (SIGN_EVERY_MS) the next broadcast is a signed
  // one, on the same route, through the same backpressure.
  const signedPayload = payload.subarray(0, MAX_SIGNED_PAYLOAD)
  const burst = Math.max(1, Math.min(1024, Math.floor((256 * 1024) / (HEADER_BYTES + cfg.size))))
  const schedule = (): void => {
    if (pumpScheduled) return
    pumpScheduled = true
    setImmediate(pump)
  }
  const waitForDrain = (): void => {
    waiting = true
    n.drainWaits++
    clearTimeout(stallTimer)
    stallTimer = setTimeout(checkStall, STALL_CHECK_MS)
  }
  // Waiting for 'drain' may take a while on a loaded machine; but if every
  // queue is already at or below half the mark (where 'drain' fires), the
  // event was missed: count it, so it shows in the summary, and go on.
  const checkStall = (): void => {
    if (!waiting || !running || replica === undefined) return
    const half = cfg.highWaterMark / 2
    if (replica.stats().peers.every((p) => p.queuedBytes <= half)) {
      n.drainStalls++
      waiting = false
      schedule()
    } else {
      stallTimer = setTimeout(checkStall, STALL_CHECK_MS)
    }
  }
  const pump = (): void => {
    pumpScheduled = false
    if (!running || waiting || replica === undefined) return
    for (let i = 0; i < burst; i++) {
      let below: boolean
      const sign = signDue
      try {
        below = sign ? replica.broadcast(ROUTE_MSG, signedPayload, { sign: true }) : replica.broadcast(ROUTE_MSG, payload)
        if (remotes.length > 0 && (n.broadcasts + 1) % CROSS_EVERY === 0) {
          // The same payload to every replica of each other cluster.
          for (const rc of remotes) {
            if (!replica.broadcastTo(rc.id, ROUTE_MSG, payload)) below = false
            n.crossSent++
          }
        }
      } catch (err) {
        if (errorCode(err) === 'QUEUE_FULL') {
          n.queueFull++
          waitForDrain()
          return
        }
        report({ t: 'fatal', message: `broadcast failed: ${errorCode(err) ?? ''} ${errorMessage(err)}` })
        running = false
        return
      }
      n.broadcasts++
      if (sign) {
        signDue = false
        n.signedSent++
      }
      if (!below) {
        waitForDrain()
        return
      }
    }
    schedule()
  }

  const onMessage = async (m: unknown): Promise<void> => {
    const t = typeof m === 'object' && m !== null ? (m as { t?: unknown }).t : undefined
    if (t === 'close') return close()
    if (replica === undefined || closing) return
    if (t === 'go') {
      n.startReconnects = snapshot(replica).reconnects
      running = true
      if (cfg.auth !== 'none') {
        signDue = true
        signTimer = setInterval(() => (signDue = true), SIGN_EVERY_MS)
      }
      schedule()
    } else if (t === 'stop') {
      running = false
      waiting = false
      clearInterval(signTimer)
      signDue = false
      clearTimeout(stallTimer)
      const deadline = Date.now() + DRAIN_TIMEOUT_MS
      let s = snapshot(replica)
      while (s.queuedBytes > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10))
        if (closing) return
        s = snapshot(replica)
      }
      report({ t: 'stopped', s, drained: s.queuedBytes === 0 })
    } else if (t === 'final') {
      finalStats = snapshot(replica)
      report({ t: 'final', s: finalStats })
    }
  }
  process.on('message', onMessage)
  process.on('disconnect', () => void close())

  let nexres: typeof import('../index.js')
  let r: Replica
  try {
    nexres = await import('../index.js')
    r = await nexres.Replica.start({
      id: cfg.id,
      cluster: cfg.cluster,
      auth: cfg.auth,
      ...(cfg.privateKey !== undefined ? { privateKey: cfg.privateKey } : {}), // auth mac: this replica's key, from the parent
      ioThreads: cfg.ioThreads,
      highWaterMark: cfg.highWaterMark,
      maxQueueBytes: cfg.maxQueueBytes,
      ...(remotes.length > 0 ? { remoteClusters: remotes } : {}),
    })
  } catch (err) {
    const code = errorCode(err)
    report({ t: 'fatal', code, message: `failed to start: ${code !== undefined ? `${code} ` : ''}${errorMessage(err)}` })
    process.off('message', onMessage)
    if (process.connected) process.disconnect()
    return 1
  }
  replica = r
  r.on(ROUTE_MSG, (msg) => {
    n.handled++
    if (msg.cluster !== cfg.cluster.id) n.crossIn++
    n.handledBytes += msg.size
    if (msg.size > 0) touched ^= msg.payload[msg.size - 1]! // read the payload, as a real handler would
    const signature = msg.signature
    if (signature !== undefined) {
      // Already verified by the engine against the sender's public key. Check
      // a few again the way a replica would check a forwarded proof.
      n.signedIn++
      if (n.proofsChecked < 3) {
        n.proofsChecked++
        if (!nexres.verifySigned(cfg.cluster, { from: msg.from, route: ROUTE_MSG, id: msg.id, incarnation: msg.incarnation!, payload: msg.payload, signature })) n.proofsFailed++
      }
    }
  })
  // demo --byzantine: a liar answers every call with the request's bytes flipped.
  r.handle(ROUTE_ECHO, cfg.liar === true ? (req) => req.map((b) => b ^ 0xff) : (req) => req)
  r.events.on('drain', () => {
    if (!waiting) return
    waiting = false
    clearTimeout(stallTimer)
    schedule()
  })
  r.events.on('peer-down', () => n.peerDowns++)
  r.events.on('error', (err, where) => process.stderr.write(`handler for ${where.route} threw: ${errorMessage(err)}\n`))
  report({ t: 'ready', clientPort: r.clientPort ?? 0, highWaterMark: cfg.highWaterMark })
  reportTimer = setInterval(() => report({ t: 'stats', s: snapshot(r), touched }), REPORT_MS)
  if (closeWanted) {
    void close()
    return 0
  }
  try {
    await r.waitForPeers(undefined, { timeoutMs: PEERS_TIMEOUT_MS })
    // --clusters: the links to the other clusters' replicas too.
    const remoteCount = remotes.reduce((k, c) => k + c.replicas.length, 0)
    const until = Date.now() + PEERS_TIMEOUT_MS
    while (snapshot(r).remoteUp < remoteCount) {
      if (Date.now() > until) throw new Error(`${remoteCount - snapshot(r).remoteUp} links to other clusters not up after ${PEERS_TIMEOUT_MS} ms`)
      await new Promise((res) => setTimeout(res, 10))
    }
    report({ t: 'up' })
  } catch (err) {
    if (!closing) report({ t: 'fatal', code: errorCode(err), message: `could not connect to every peer: ${errorMessage(err)}` })
  }
  return 0
}
