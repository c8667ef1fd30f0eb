// Four replicas in one process, authenticated with their keys (auth 'mac'):
// each one broadcasts a signed "prepare" and counts the prepares it
// receives; a client asks replica 1 for its count.
//   node examples/broadcast.mjs
import { Client, Replica, generateKeyPair } from 'nexres-rpc'

import { freePorts } from './free-ports.mjs'

// One key pair per replica (or `npx nexres-rpc keygen`): the public keys go
// into the cluster config, each private key to its replica only.
const keys = [1, 2, 3, 4].map(() => generateKeyPair())
const replicas = []
const ports = await freePorts(8)
for (let id = 1; id <= 4; id++) {
  replicas.push({ id, host: '127.0.0.1', port: ports[2 * id - 2], clientPort: ports[2 * id - 1], publicKey: keys[id - 1].publicKey })
}
const cluster = { id: 'example-broadcast', replicas }

const nodes = await Promise.all(replicas.map((r) => Replica.start({ id: r.id, cluster, auth: 'mac', privateKey: keys[r.id - 1].privateKey })))
const received = new Map(nodes.map((n) => [n.id, 0]))
for (const node of nodes) {
  node.on('prepare', (msg) => {
    received.set(node.id, received.get(node.id) + 1)
    const signed = msg.signature ? ' (signature verified)' : ''
    if (received.get(node.id) <= 3) console.log(`replica ${node.id} <- replica ${msg.from}: ${msg.text()}${signed}`)
  })
  node.handle('count', () => String(received.get(node.id)))
}
await Promise.all(nodes.map((n) => n.waitForPeers()))

for (const node of nodes) node.broadcast('prepare', `view 1, seq 1, from ${node.id}`, { sign: true })
await new Promise((r) => setTimeout(r, 100))

const client = await Client.connect({ host: '127.0.0.1', port: nodes[0].clientPort })
const count = Buffer.from(await client.call('count', '', { timeoutMs: 1000 })).toString()
console.log(`replica 1 says it received ${count} prepares (expected 3)`)

await client.close()
await Promise.all(nodes.map((n) => n.close()))
