// Main-thread side of `workers: N`: starts the worker threads, restarts one
// that dies (its consumer's deliveries go to the others meanwhile, in
// order), forwards their handler errors and unrouted messages, and stops
// them on close.
import { Worker } from 'node:worker_threads'

import type { ResolvedOptions } from './config.js'
import { ConfigError, TimeoutError } from './errors.js'
import type { EndpointLimits, UnroutedInfo } from './endpoint.js'

/** @internal what a worker thread is started with. */
export interface WorkerBoot {
  key: number
  index: number
  handlers: string
  limits: EndpointLimits
  data: unknown
}

/** @internal messages from a worker thread. */
export type WorkerReport =
  | { type: 'ready' }
  | { type: 'setup-failed'; message: string }
  | { type: 'error'; name: string; message: string; stack: string | undefined; code: string | undefined; from: number; route: string }
  | ({ type: 'unrouted' } & UnroutedInfo)
  | { type: 'stopped' }

export interface PoolHooks {
  error(err: unknown, info: { from: number; route: string }): void
  unrouted(info: UnroutedInfo): void
}

const READY_TIMEOUT_MS = 30_000
const RESTART_DELAY_MS = 100

export class WorkerPool {
  private readonly workers: (Worker | undefined)[]
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
    const starting: Promise<void>[] = []
    for (let i = 0; i < opts.workers; i++) starting.push(this.spawn(i))
    this.readyAll = Promise.all(starting).then(() => undefined)
    this.readyAll.catch(() => undefined) // observed by ready()
  }

  /** Resolves once every worker has run its setup; rejects if one fails. */
  ready(): Promise<void> {
    return this.readyAll
  }

  /** Worker threads restarted after dying. */
  get restarted(): number {
    return this.restarts
  }

  private spawn(index: number): Promise<void> {
    const boot: WorkerBoot = {
      key: this.key,
      index,
      handlers: this.opts.handlers!,
      limits: {
        id: this.opts.id,
        peers: this.opts.peers,
        maxFrameBytes: this.opts.maxFrameBytes,
        maxQueueBytes: this.opts.maxQueueBytes,
        highWaterMark: this.opts.highWaterMark,
        canSign: this.opts.auth === 'mac',
      },
      data: this.opts.workerData,
    }
    const w = new Worker(this.entry, { workerData: boot, name: `nexres-worker-${index}` })
    this.workers[index] = w
    return new Promise<void>((resolve, reject) => {
      let settled = false
      const timer = setTimeout(() => {
        settle(new TimeoutError(`worker ${index}: handlers module did not finish setup in ${READY_TIMEOUT_MS} ms`))
      }, READY_TIMEOUT_MS)
      const settle = (err?: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (err) reject(err)
        else resolve()
      }
      w.on('message', (m: WorkerReport) => {
        switch (m.type) {
          case 'ready':
            settle()
            break
          case 'setup-failed':
            settle(new ConfigError('handlers', `worker ${index} could not set up ${this.opts.handlers}: ${m.message}`))
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
          case 'stopped':
            break
        }
      })
      w.on('error', (err) => {
        // An uncaught exception ended the worker: report it; 'exit' restarts.
        settle(err)
        this.hooks.error(err, { from: 0, route: '' })
      })
      w.on('exit', () => {
        if (this.workers[index] === w) this.workers[index] = undefined
        settle(new ConfigError('handlers', `worker ${index} exited during setup`))
        if (this.stopping || !settled) return
        setTimeout(() => {
          if (this.stopping || this.workers[index] !== undefined) return
          this.restarts++
          this.spawn(index).catch((err: unknown) => this.hooks.error(err, { from: 0, route: '' }))
        }, RESTART_DELAY_MS).unref()
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
}
