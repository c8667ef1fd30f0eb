// W2 request/response through nexres-rpc: a replica serving the client port
// with a TypeScript handler `handle('echo', (req) => req)`, and a process
// using `Client.call` promises in a closed loop (bench/w2-loop.mjs).
//   node bench/w2-nexres.mjs server <replicaPort> [ioSpinMicros] -> prints "ready <clientPort>"
//   node bench/w2-nexres.mjs client <clientPort> <C> <size> <warmupMs> <durationMs> <maxCalls>
//   node bench/w2-nexres.mjs quorum <p1,p2,p3,p4> <C> <size> <warmupMs> <durationMs> <maxCalls>
//     (W6: Client.connect({ replicas, f: 1 }), calls with { quorum: 2 }, to 'all')
//   client-key / quorum-key: the same with a client key (PROTOCOL.md §6a:
//     proved in the handshake, every batch MAC'd both ways)
//   client-seal: the same with seal: true (§6b: every batch encrypted both ways)
import { Client, Replica, generateKeyPair } from 'nexres-rpc'

import { clientArgs, runClient } from './w2-loop.mjs'

const [role, ...rest] = process.argv.slice(2)

if (role === 'server') {
  const port = Number(rest[0])
  const cluster = { id: 'w2', replicas: [{ id: 1, host: '127.0.0.1', port, clientPort: 0 }] }
  const ioSpinMicros = rest[1] === undefined ? 0 : Number(rest[1])
  const r = await Replica.start({ auth: 'none', id: 1, cluster, ioSpinMicros })
  r.handle('echo', (req) => req)
  process.once('SIGTERM', () => {
    r.close({ timeoutMs: 0 }).finally(() => process.exit(0))
  })
  process.stdout.write(`ready ${r.clientPort}\n`)
} else if (role === 'client' || role === 'client-key' || role === 'client-seal') {
  const a = clientArgs(rest)
  const key = role === 'client-key' ? { privateKey: generateKeyPair().privateKey } : role === 'client-seal' ? { seal: true } : {}
  const c = await Client.connect({ host: '127.0.0.1', port: a.port, ...key })
  await runClient(a, (payload) => c.call('echo', payload))
  await c.close()
  process.exit(0)
} else if (role === 'quorum' || role === 'quorum-key') {
  const ports = rest[0].split(',').map(Number)
  const a = clientArgs([ports[0], ...rest.slice(1)])
  const key = role === 'quorum-key' ? { privateKey: generateKeyPair().privateKey } : {}
  const c = await Client.connect({ replicas: ports.map((port) => ({ host: '127.0.0.1', port })), f: 1, ...key })
  await runClient(a, (payload) => c.call('echo', payload, { quorum: 2 }))
  await c.close()
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
