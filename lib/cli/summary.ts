// The demo's closing summary: a table per replica and one line per figure,
// then notes for anything that did not go as it should.
import { type DemoOptions, OUTSTANDING } from './args.js'
import { type ChildStats, type DemoChild, DRAIN_TIMEOUT_MS, EXIT_TIMEOUT_MS, type LoadState } from './demo-protocol.js'
import type { LatencyRecorders } from './latency.js'
import { type Output, bytes, count, ms, rate, table } from './output.js'

type Summed = Omit<ChildStats, 'handledBytes' | 'broadcasts' | 'msgsOut' | 'bytesOut' | 'queuedBytes' | 'up'> & { msgsOut: number; bytesOut: number }

function lastStats(c: DemoChild): Partial<ChildStats> {
  return c.got.closed?.s ?? c.got.stopped?.s ?? c.latest ?? {}
}

export function printSummary(
  out: Output,
  opts: DemoOptions,
  children: readonly DemoChild[],
  latency: LatencyRecorders,
  load: LoadState,
  tTraffic: number,
  tLoad: number,
  killed: readonly string[],
): void {
  const keys = ['msgsIn', 'msgsOut', 'bytesIn', 'bytesOut', 'reconnects', 'rejects', 'handled', 'startReconnects', 'drainWaits', 'drainStalls', 'queueFull', 'peerDowns', 'handlerErrors', 'unrouted', 'duplicates', 'signedSent', 'signedIn', 'proofsChecked', 'proofsFailed', 'crossSent', 'crossIn', 'remoteUp'] as const
  const sum = Object.fromEntries(keys.map((k) => [k, 0])) as Summed
  const rows: Array<Array<string | number>> = children.map((c) => {
    const s = lastStats(c)
    for (const k of keys) sum[k] += s[k] ?? 0
    // Reconnects while the cluster was starting (connection attempts to a
    // peer not listening yet) are left out of the table, and noted below.
    const reconnects = (s.reconnects ?? 0) - (s.startReconnects ?? 0)
    return [c.id, count(s.msgsIn ?? 0), count(s.msgsOut ?? 0), bytes(s.bytesIn ?? 0), bytes(s.bytesOut ?? 0), count(reconnects), count(s.rejects ?? 0)]
  })
  rows.push(['total', count(sum.msgsIn), count(sum.msgsOut), bytes(sum.bytesIn), bytes(sum.bytesOut), count(sum.reconnects - sum.startReconnects), count(sum.rejects)])
  const notes: string[] = []
  const secs = tTraffic / 1000
  const loadSecs = tLoad / 1000
  const label = (s: string): string => s.padEnd(13)
  out.line('')
  out.line(table(['replica', 'msgs in', 'msgs out', 'bytes in', 'bytes out', 'reconnects', 'rejects'], rows))
  out.line('')
  out.line(`${label('messages')}${count(sum.msgsIn)} delivered in ${secs.toFixed(2)} s: ${rate(sum.msgsIn / secs)} msgs/s, ${bytes(sum.bytesIn / secs)}/s (${count(opts.size)}-byte payloads, every replica broadcasting)`)
  if (opts.clusters > 1) {
    // Each cross-cluster broadcast reaches every replica of each other cluster.
    const expected = sum.crossSent * opts.replicas
    out.line(`${label('clusters')}${opts.clusters} clusters (epoch 0): ${count(sum.crossSent)} broadcasts to other clusters (broadcastTo), ${count(sum.crossIn)} of their ${count(expected)} copies delivered with msg.cluster set to the sender's cluster`)
    if (sum.crossIn !== expected) notes.push(`${count(expected)} cross-cluster copies sent, ${count(sum.crossIn)} received`)
  }
  out.line(`${label('requests')}${count(load.requests)} echo calls in ${loadSecs.toFixed(2)} s: ${rate(load.requests / loadSecs)} req/s (${OUTSTANDING} outstanding over ${opts.replicas} client connections)`)
  if (opts.byzantine > 0) {
    const liars = children.slice(children.length - opts.byzantine).map((c) => c.id)
    out.line(`${label('byzantine')}replica${liars.length > 1 ? 's' : ''} ${liars.join(', ')} answered every call wrong; quorum calls (f = ${opts.byzantine}, ${opts.byzantine + 1} equal replies) outvoted ${count(load.liesSeen)} lies seen; ${count(load.mismatches)} wrong answers accepted`)
  }
  out.line(`${label('latency')}p50 ${ms(latency.total.percentile(50))}  p99 ${ms(latency.total.percentile(99))}  max ${ms(latency.total.max())}  (${latency.kind})`)
  out.line(`${label('backpressure')}the broadcast loops waited for 'drain' ${count(sum.drainWaits)} times (high-water mark ${bytes(children[0]?.got.ready?.highWaterMark ?? 0)} per peer)`)
  if (opts.auth !== 'none') {
    const frames = opts.auth === 'seal' ? 'encrypted frames (AES-256-GCM)' : "MAC'ed frames"
    out.line(`${label('auth')}${opts.auth}: Ed25519 replica identities, ${frames}; ${count(sum.signedSent)} signed broadcasts sent, ${count(sum.signedIn)} signatures verified on receipt`)
  } else {
    out.line(`${label('auth')}none: replica connections not authenticated (run with --auth mac, the default, for keys and MACs)`)
  }
  if (sum.startReconnects > 0) notes.push(`reconnects: ${count(sum.startReconnects)} more while the cluster was starting (a peer not listening yet), not counted above`)
  if (opts.auth !== 'none' && sum.signedIn !== sum.signedSent * (opts.replicas - 1)) {
    notes.push(`${count(sum.signedSent)} signed broadcasts to ${opts.replicas - 1} peers each, but ${count(sum.signedIn)} signatures received`)
  }
  if (sum.proofsFailed > 0) notes.push(`verifySigned() rejected ${count(sum.proofsFailed)} of ${count(sum.proofsChecked)} received signatures`)
  if (sum.handled !== sum.msgsIn) notes.push(`handlers saw ${count(sum.handled)} messages, the engine counted ${count(sum.msgsIn)} in`)
  if (sum.duplicates > 0) notes.push(`${count(sum.duplicates)} resent duplicates dropped`)
  if (sum.peerDowns > 0) notes.push(`${count(sum.peerDowns)} peer-down events during the run`)
  if (sum.drainStalls > 0) notes.push(`${count(sum.drainStalls)} times a replica waited for 'drain' with its queues already below half the high-water mark (resumed without the event)`)
  if (sum.queueFull > 0) notes.push(`${count(sum.queueFull)} broadcasts refused with QUEUE_FULL`)
  if (sum.handlerErrors > 0 || sum.unrouted > 0) notes.push(`${count(sum.handlerErrors)} handler errors, ${count(sum.unrouted)} unrouted messages`)
  if (load.errors > 0) notes.push(`${count(load.errors)} calls failed (last: ${load.lastError})`)
  if (load.mismatches > 0) notes.push(`${count(load.mismatches)} echo replies differ from the request`)
  const undelivered = children.flatMap((c) => Object.entries(c.got.closed?.undelivered ?? {}).map(([peer, b]) => `${c.id}->${peer} ${bytes(b)}`))
  if (undelivered.length > 0) notes.push(`undelivered at close: ${undelivered.join(', ')}`)
  const undrained = children.filter((c) => c.got.stopped && !c.got.stopped.drained).map((c) => c.id)
  if (undrained.length > 0) notes.push(`replicas ${undrained.join(', ')} still had unacknowledged messages ${DRAIN_TIMEOUT_MS / 1000} s after the traffic stopped`)
  if (killed.length > 0) notes.push(`replicas ${killed.join(', ')} did not exit within ${EXIT_TIMEOUT_MS / 1000} s of closing and were killed`)
  const unclean = children
    .filter((c) => !killed.includes(c.id) && c.exit && (c.exit.code !== 0 || c.exit.signal))
    .map((c) => `${c.id} (${c.exit?.signal ?? `code ${c.exit?.code}`})`)
  if (unclean.length > 0) notes.push(`replicas exited with an error: ${unclean.join(', ')}`)
  for (const note of notes) out.line(`${label('note')}${note}`)
}
