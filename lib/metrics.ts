// Prometheus metrics through prom-client, the registry Node services already
// use: the collector reads replica.stats() at scrape time; nothing is
// counted twice on the hot path. A separate entry point
// (`nexres-rpc/metrics`) so prom-client stays an optional peer dependency.
import { Counter, Gauge, type Registry } from 'prom-client'

import type { Replica, ReplicaStats } from './replica.js'

export interface MetricsOptions {
  /** The registry to register in (yours). */
  registry: Registry
  /** Metric name prefix (default `nexres_`). */
  prefix?: string
}

type Labels = Record<string, string>

/**
 * Registers nexres-rpc metrics for these replicas in `registry`: per peer
 * connected, messages and bytes in/out, queued bytes, reconnects, rejects,
 * heartbeat round trip; per replica rejects by reason, unrouted messages,
 * handler errors, input-queue depth.
 *
 * @example
 * import { Registry } from 'prom-client'
 * import { collectReplicaMetrics } from 'nexres-rpc/metrics'
 * const registry = new Registry()
 * collectReplicaMetrics([replica], { registry })
 * // expose `await registry.metrics()` on your /metrics endpoint
 */
export function collectReplicaMetrics(replicas: Replica | Replica[], options: MetricsOptions): void {
  const list = Array.isArray(replicas) ? replicas : [replicas]
  const prefix = options.prefix ?? 'nexres_'
  const registers = [options.registry]
  // One stats() read per replica per scrape, shared by every metric.
  let snapshot: ReplicaStats[] = []
  let takenAt = -1
  const stats = (): ReplicaStats[] => {
    const now = Date.now()
    if (now - takenAt > 50) {
      snapshot = list.map((r) => r.stats())
      takenAt = now
    }
    return snapshot
  }
  // A peer is (cluster, id): remote clusters' replicas may share ids with this one's.
  const peerLabels = ['replica', 'cluster', 'peer']
  const peerOf = (s: ReplicaStats, p: ReplicaStats['peers'][number]): Labels => ({ replica: String(s.id), cluster: p.cluster ?? s.cluster, peer: String(p.id) })

  const perPeerCounter = (name: string, help: string, pick: (p: ReplicaStats['peers'][number]) => number): void => {
    const last = new Map<string, number>()
    new Counter({
      name: prefix + name,
      help,
      labelNames: peerLabels,
      registers,
      collect() {
        for (const s of stats()) {
          for (const p of s.peers) {
            const labels = peerOf(s, p)
            const key = `${s.id}/${labels.cluster}/${p.id}`
            const v = pick(p)
            const prev = last.get(key) ?? 0
            if (v > prev) this.inc(labels, v - prev)
            else this.inc(labels, 0)
            last.set(key, Math.max(v, prev))
          }
        }
      },
    })
  }
  const perPeerGauge = (name: string, help: string, pick: (p: ReplicaStats['peers'][number]) => number): void => {
    new Gauge({
      name: prefix + name,
      help,
      labelNames: peerLabels,
      registers,
      collect() {
        // Peers that left the configuration (reconfigure) leave the gauge.
        this.reset()
        for (const s of stats()) for (const p of s.peers) this.set(peerOf(s, p), pick(p))
      },
    })
  }

  perPeerGauge('peer_connected', 'Whether the link to the peer is up (1) or not (0).', (p) => (p.connected ? 1 : 0))
  perPeerCounter('peer_messages_in_total', 'Messages received from the peer.', (p) => p.msgsIn)
  perPeerCounter('peer_messages_out_total', 'Messages written to the peer.', (p) => p.msgsOut)
  perPeerCounter('peer_bytes_in_total', 'Bytes received from the peer.', (p) => p.bytesIn)
  perPeerCounter('peer_bytes_out_total', 'Bytes written to the peer.', (p) => p.bytesOut)
  perPeerGauge('peer_queued_bytes', 'Bytes queued for the peer and not yet acknowledged.', (p) => p.queuedBytes)
  perPeerCounter('peer_reconnects_total', 'Links to the peer re-established after a failure.', (p) => p.reconnects)
  perPeerCounter('peer_rejects_total', 'Connections claiming to be the peer that were refused.', (p) => p.rejects)
  perPeerGauge('peer_heartbeat_rtt_seconds', 'Last heartbeat round trip to the peer.', (p) => p.heartbeatRttUs / 1e6)
  perPeerGauge('peer_receive_pending_bytes', 'Bytes read from the peer and not yet handled.', (p) => p.receivePendingBytes)

  const lastReason = new Map<string, number>()
  new Counter({
    name: prefix + 'rejects_total',
    help: 'Connections refused by the replica, by reason code (docs/PROTOCOL.md §4).',
    labelNames: ['replica', 'reason'],
    registers,
    collect() {
      for (const s of stats()) {
        for (const [reason, v] of Object.entries(s.rejectsByReason)) {
          const key = `${s.id}/${reason}`
          const prev = lastReason.get(key) ?? 0
          this.inc({ replica: String(s.id), reason }, Math.max(0, v - prev))
          lastReason.set(key, Math.max(v, prev))
        }
      }
    },
  })
  const replicaCounter = (name: string, help: string, pick: (s: ReplicaStats) => number): void => {
    const last = new Map<number, number>()
    new Counter({
      name: prefix + name,
      help,
      labelNames: ['replica'],
      registers,
      collect() {
        for (const s of stats()) {
          const prev = last.get(s.id) ?? 0
          const v = pick(s)
          this.inc({ replica: String(s.id) }, Math.max(0, v - prev))
          last.set(s.id, Math.max(v, prev))
        }
      },
    })
  }
  replicaCounter('unrouted_messages_total', 'Messages for a route with no handler.', (s) => s.unrouted)
  replicaCounter('handler_errors_total', 'Handler calls that threw or rejected.', (s) => s.handlerErrors)
  replicaCounter('worker_restarts_total', 'Handler worker threads restarted after one died (workers option).', (s) => s.workerRestarts)
  const replicaGauge = (name: string, help: string, pick: (s: ReplicaStats) => number): void => {
    new Gauge({
      name: prefix + name,
      help,
      labelNames: ['replica'],
      registers,
      collect() {
        for (const s of stats()) this.set({ replica: String(s.id) }, pick(s))
      },
    })
  }
  replicaGauge('configuration_epoch', 'The configuration epoch (cluster.epoch, replica.reconfigure).', (s) => s.epoch)
  replicaGauge('input_queue_depth', 'Runs of frames waiting in the input queue (MIQ).', (s) => s.miqDepth)
  replicaGauge('client_connections', 'Open connections on the client port.', (s) => s.clients.length)
  replicaGauge('client_requests_in_flight', 'Client requests read and not yet answered, over every connection.', (s) =>
    s.clients.reduce((n, c) => n + c.inFlight, 0),
  )
  replicaGauge('client_connections_paused', 'Client connections whose socket is not read (in-flight bound or reply backlog).', (s) =>
    s.clients.filter((c) => c.paused).length,
  )
  replicaGauge('client_connections_waiting_for_memory', 'Client connections with a request to read and no client receive memory for it yet.', (s) =>
    s.clients.filter((c) => c.waitingForMemory).length,
  )
  replicaGauge('receive_buffer_bytes', 'Bytes of replica-port receive buffers allocated.', (s) => s.receiveBytesAllocated)
  replicaGauge('client_receive_buffer_bytes', 'Bytes of client-port receive buffers allocated.', (s) => s.clientReceiveBytesAllocated)
}
