// The replica as a worker thread sees it (`workers: N`): registers handlers
// (`on`, `handle`, `serve`) and sends (`send`, `broadcast`, `sendAsync`) on
// the same links as the main thread. Messages and requests come from the
// shared native input queue.
import { EventEmitter } from 'node:events'
import { parentPort } from 'node:worker_threads'

import { ReplicaBase, type ReplicaLimits, type UnroutedInfo } from './replica-base.js'
import { type NativeConsumer, type PeerSlotEntry, addon } from './native.js'
import type { WorkerReport } from './workers.js'

export interface WorkerReplicaEvents {
  /** A handler threw (or its promise rejected); also reported on the main thread's `replica.events`. */
  error: [err: unknown, msg: { from: number; route: string }]
  unrouted: [info: UnroutedInfo]
}

/** How often a waiting `sendAsync` looks at the queue depth again, in ms. */
const DRAIN_POLL_MS = 2

/**
 * Handed to the handlers module's setup function in each worker thread.
 *
 * @example
 * // handlers.mjs
 * export default function setup(replica) {
 *   replica.on('prepare', (msg) => replica.send(msg.from, 'ack', msg.payload.subarray(0, 8)))
 *   replica.handle('sha', (req) => createHash('sha256').update(req).digest())
 * }
 */
export class WorkerReplica extends ReplicaBase {
  readonly events = new EventEmitter<WorkerReplicaEvents>()
  /** This worker's index, 0 .. workers - 1. */
  readonly workerIndex: number
  /** The `workerData` option given to `Replica.start`. */
  readonly workerData: unknown
  private readonly consumer: NativeConsumer

  /** @internal */
  constructor(limits: ReplicaLimits, key: number, index: number, data: unknown) {
    super(limits)
    this.workerIndex = index
    this.workerData = data
    this.stampIds = true
    this.consumer = new addon.Consumer(key, index, this.meta, this.depths, this.onDeliveries)
    this.attach(this.consumer)
  }

  /** @internal starts taking deliveries (after setup). */
  /** @internal the main thread relays a client's CANCEL another worker received. */
  cancelRequest(dest: number, key: number): void {
    this.openRequestCancel(dest, key)
  }

  /** @internal the main thread's reconfigure(): the slot table now. */
  membership(slots: PeerSlotEntry[]): void {
    this.applySlots(slots)
  }

  /** @internal the main thread relays that a client connection closed. */
  clientConnectionClosed(dest: number): void {
    this.clientClosed(dest)
  }

  /** A CANCEL for a request this worker does not run: every worker is told. */
  protected override cancelElsewhere(dest: number, key: number): void {
    report({ type: 'cancel', dest, key })
  }

  startConsuming(): void {
    this.consumer.start()
  }

  /** @internal stops taking deliveries, hands over what is staged. */
  stop(): void {
    if (this.closing !== undefined) return
    this.outbox.flush()
    this.closing = Promise.resolve()
    this.lifetime.abort()
    this.consumer.stop()
    this.closed = true
  }

  protected waitForDrain(_to: number, signal: AbortSignal | undefined): Promise<void> {
    // Drain events go to the main thread; a worker looks at the depth again.
    return this.waitFor(signal, (done) => {
      const timer = setTimeout(done, DRAIN_POLL_MS)
      return () => clearTimeout(timer)
    })
  }

  protected emitUnrouted(info: UnroutedInfo): void {
    if (this.events.listenerCount('unrouted') > 0) this.events.emit('unrouted', info)
    report({ type: 'unrouted', ...info })
  }

  protected emitError(err: unknown, info: { from: number; route: string }): void {
    if (this.events.listenerCount('error') > 0) this.events.emit('error', err, info)
    const e = err instanceof Error ? err : new Error(String(err))
    const code = (e as Error & { code?: unknown }).code
    report({
      type: 'error',
      name: e.name,
      message: e.message,
      stack: e.stack,
      code: typeof code === 'string' ? code : undefined,
      from: info.from,
      route: info.route,
    })
  }
}

function report(m: WorkerReport): void {
  parentPort?.postMessage(m)
}
