// W3: a CPU-heavy request handler (SHA-256 of the 64-byte request, 50 times
// over) served with its handlers on the main thread (workers = 0) or in
// worker threads (workers = 1, 2), driven by the W2 closed loop spread over
// several client connections (requests of one connection are handled in
// order, one worker at a time, so parallelism comes from connections).
//   node bench/w3-workers.mjs server <replicaPort> <workers> [peer|none]  -> "ready <clientPort>"
//   node bench/w3-workers.mjs client <clientPort> <C> <size> <warmupMs> <durationMs> <maxCalls> <connections>
import { Client, Replica } from 'nexres-rpc'

import { clientArgs, runClient } from './w2-loop.mjs'
import { work } from './w3-handlers.mjs'

const [role, ...rest] = process.argv.slice(2)

if (role === 'server') {
  const port = Number(rest[0])
  const workers = Number(rest[1])
  const cluster = { id: 'w3', replicas: [{ id: 1, host: '127.0.0.1', port, clientPort: 0 }] }
  const r = await Replica.start({ auth: 'none',
    id: 1,
    cluster,
    ...(workers > 0 ? { workers, handlers: new URL('./w3-handlers.mjs', import.meta.url), ordering: rest[2] ?? 'peer' } : {}),
  })
  if (workers === 0) r.handle('work', work)
  process.once('SIGTERM', () => {
    r.close({ timeoutMs: 0 }).finally(() => process.exit(0))
  })
  process.stdout.write(`ready ${r.clientPort}\n`)
} else if (role === 'client') {
  const a = clientArgs(rest.slice(0, 6))
  const connections = Number(rest[6] ?? 8)
  const clients = await Promise.all(Array.from({ length: connections }, () => Client.connect({ host: '127.0.0.1', port: a.port })))
  let next = 0
  await runClient(a, (payload) => clients[next++ % connections].call('work', payload))
  await Promise.all(clients.map((c) => c.close()))
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
