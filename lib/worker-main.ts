// Entry point of each worker thread started by `workers: N`: loads the
// handlers module, lets it register handlers, then starts taking deliveries.
import { parentPort, workerData } from 'node:worker_threads'

import { WorkerReplica } from './worker.js'
import type { WorkerBoot, WorkerOrder, WorkerReport } from './workers.js'

const boot = workerData as WorkerBoot
const port = parentPort!
const post = (m: WorkerReport): void => port.postMessage(m)

const replica = new WorkerReplica(boot.limits, boot.key, boot.index, boot.data)
try {
  const mod = (await import(boot.handlers)) as { default?: unknown; setup?: unknown }
  const setup = typeof mod.default === 'function' ? mod.default : mod.setup
  if (typeof setup !== 'function') throw new Error('the module exports neither a default function nor setup()')
  await (setup as (r: WorkerReplica) => unknown)(replica)
  replica.startConsuming()
  post({ type: 'ready' })
  port.on('message', (m: WorkerOrder) => {
    if (m.type === 'cancel') return replica.cancelRequest(m.dest, m.key)
    if (m.type === 'client-closed') return replica.clientConnectionClosed(m.dest)
    if (m.type === 'membership') return replica.membership(m.slots)
    replica.stop()
    post({ type: 'stopped' })
    port.close()
  })
} catch (err) {
  replica.stop()
  post({ type: 'setup-failed', message: err instanceof Error ? err.message : String(err) })
  port.close()
}
