// Main-thread side of `workers: N`: starts the worker threads, restarts one
// that dies (its consumer's deliveries go to the others meanwhile, in
// order), forwards their handler errors and unrouted messages, and stops
// them on close.
import { Worker } from 'node:worker_threads'

import type { ResolvedOptions } from './config.js'
import { ConfigError, TimeoutError } from './errors.js'
import type { PeerSlotEntry } from './native.js'
import type { ReplicaLimits, UnroutedInfo } from './replica-base.js'

/** @internal what a worker thread is started with. */
export interface WorkerBoot {
  key: number
  index: number
  handlers: string
  limits: ReplicaLimits
  data: unknown
}

/** @internal messages from a worker thread. */
export type WorkerReport =
  | { type: 'ready' }
  | { type: 'setup-failed'; message: string }
  | { type: 'error'; name: string; message: string; stack: string | undefined; code: string | undefined; from: number; route: string }
  | ({ type: 'unrouted' } & UnroutedInfo)
  | { type: 'stopped' }
  /** A client's CANCEL reached a worker that does not run that request: every worker is told. */
  | { type: 'cancel'; dest: number; key: number }

/** What the main thread tells workers besides 'stop'. */
export type WorkerOrder =
  | { type: 'stop' }
  | { type: 'cancel'; dest: number; key: number }
  | { type: 'client-closed'; dest: number }
  /** reconfigure(): the slot table now (who each peer slot is, which are members). */
  | { type: 'membership'; slots: PeerSlotEntry[] }

export interface PoolHooks {
  /** The slot table now (a worker starts with it). */
  slots(): PeerSlotEntry[]
  error(err: unknown, info: { from: number; route: string }): void
  unrouted(info: UnroutedInfo): void
}

const READY_TIMEOUT_MS = 30_000
/** Delay before restarting a worker that died after its setup. */
const RESTART_DELAY_MS = 100
/**
 * A restarted worker that fails again during its setup (the handlers module
 * throws or does not load) is retried after a delay doubling from
 * RESTART_DELAY_MS up to this; a setup that succeeds resets it.
 */
const RESTART_MAX_DELAY_MS = 30_000

export class WorkerPool {
  private readonly workers: (Worker | undefined)[]
  /** Per worker: startups in a row that failed (reset when one completes its setup). */
  private readonly startupFailures: number[]
  private readonly entry = new URL('./worker-main.js', import.meta.url)
  private stopping = false
  private readonly readyAll: Promise<void>
  private restarts = 0

  constructor(
    private readonly opts: ResolvedOptions,
    private readonly key: number,
    private readonly hooks: PoolHooks,
  ) {
    this.workers = new Array<Worker | undefined>(opts.workers).fill(undefined)
    this.startupFailures = new Array<number>(opts.workers).fill(0)
    const starting: Promise<void>[] = []
    for (let i = 0; i < opts.workers; i++) starting.push(this.spawn(i, false))
    this.readyAll = Promise.all(starting).then(() => undefined)
    this.readyAll.catch(() => undefined) // observed by ready()
  }

  /** Resolves once every worker has run its setup; rejects if one fails. */
  ready(): Promise<void> {
    return this.readyAll
  }

  /** Worker threads restarted after dying (each attempt counts). */
  get restarted(): number {
    return this.restarts
  }

  // Starts worker `index`. The first start of each worker rejects the
  // returned promise (and so Replica.start) if its setup fails; a restart's
  // setup failure is reported as 'error' and retried with backoff.
  private spawn(index: number, restart: boolean): Promise<void> {
    const boot: WorkerBoot = {
      key: this.key,
      index,
      handlers: this.opts.handlers!,
      limits: {
        id: this.opts.id,
        clusterId: this.opts.cluster.id,
        peers: this.opts.peers,
        maxPeers: this.opts.maxPeers,
        slots: this.hooks.slots(),
        maxFrameBytes: this.opts.maxFrameBytes,
        maxQueueBytes: this.opts.maxQueueBytes,
        highWaterMark: this.opts.highWaterMark,
        canSign: this.opts.auth !== 'none',
      },
      data: this.opts.workerData,
    }
    const w = new Worker(this.entry, { workerData: boot, name: `nexres-worker-${index}` })
    this.workers[index] = w
    return new Promise<void>((resolve, reject) => {
      let settled = false
      let ready = false
      let failure: Error | undefined
      const timer = setTimeout(() => {
        settle(new TimeoutError(`worker ${index}: handlers module did not finish setup in ${READY_TIMEOUT_MS} ms`))
        void w.terminate()
      }, READY_TIMEOUT_MS)
      const settle = (err?: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        failure = err
        if (err) reject(err)
        else resolve()
      }
      w.on('message', (m: WorkerReport) => {
        switch (m.type) {
          case 'ready':
            ready = true
            this.startupFailures[index] = 0
            settle()
            break
          case 'setup-failed':
            settle(new ConfigError('handlers', `worker ${index} could not set up ${this.opts.handlers}: ${m.message}`))
            // Whatever the module left running (a timer, a socket) must not keep it alive.
            void w.terminate()
            break
          case 'error': {
            const err = new Error(m.message)
            err.name = m.name
            if (m.stack !== undefined) err.stack = m.stack
            if (m.code !== undefined) (err as Error & { code?: string }).code = m.code
            this.hooks.error(err, { from: m.from, route: m.route })
            break
          }
          case 'unrouted':
            this.hooks.unrouted(
              m.routeName === undefined
                ? { from: m.from, route: m.route, size: m.size }
                : { from: m.from, route: m.route, routeName: m.routeName, size: m.size },
            )
            break
          case 'cancel':
            this.tell({ type: 'cancel', dest: m.dest, key: m.key })
            break
          case 'stopped':
            break
        }
      })
      w.on('error', (err) => {
        // An uncaught exception ended the worker. After its setup: report it
        // ('exit' restarts it). During its setup: that is a failed start.
        if (ready) this.hooks.error(err, { from: 0, route: '' })
        else settle(err)
      })
      w.on('exit', () => {
        clearTimeout(timer)
        if (this.workers[index] === w) this.workers[index] = undefined
        settle(new ConfigError('handlers', `worker ${index} exited during setup`))
        if (this.stopping) return
        // A first start that failed fails Replica.start (which closes): no restart.
        if (!ready && !restart) return
        let delay = RESTART_DELAY_MS
        if (!ready) {
          const failures = ++this.startupFailures[index]!
          delay = Math.min(RESTART_DELAY_MS * 2 ** failures, RESTART_MAX_DELAY_MS)
          // (A ConfigError's message starts with its field: keep the rest.)
          const why = failure instanceof ConfigError ? failure.message.slice(failure.field.length + 2) : (failure?.message ?? 'exited during setup')
          this.hooks.error(
            new ConfigError('handlers', `restarted worker ${index} failed during setup (${failures} in a row): ${why}; next attempt in ${delay} ms`),
            { from: 0, route: '' },
          )
        }
        setTimeout(() => {
          if (this.stopping || this.workers[index] !== undefined) return
          this.restarts++
          // A failed setup is reported when that worker exits (above).
          this.spawn(index, true).catch(() => undefined)
        }, delay).unref()
      })
    })
  }

  /**
   * Asks every worker to stop taking deliveries and flush what it staged;
   * terminates those that have not exited after `timeoutMs`.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true
    const live = this.workers.filter((w): w is Worker => w !== undefined)
    await Promise.all(
      live.map(
        (w) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              void w.terminate()
            }, timeoutMs)
            w.once('exit', () => {
              clearTimeout(timer)
              resolve()
            })
            w.postMessage({ type: 'stop' })
          }),
      ),
    )
    this.workers.fill(undefined)
  }

  /** Tells every live worker (a client's CANCEL or closed connection). */
  tell(order: WorkerOrder): void {
    for (const w of this.workers) w?.postMessage(order)
  }
}
