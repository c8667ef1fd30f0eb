// Four replicas in one process: each one broadcasts a "prepare" and counts
// the prepares it receives; a client asks replica 1 for its count.
//   node examples/broadcast.mjs
import net from 'node:net'
import { Client, Replica } from 'nexres-rpc'

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })

const replicas = []
for (let id = 1; id <= 4; id++) replicas.push({ id, host: '127.0.0.1', port: await freePort(), clientPort: await freePort() })
const cluster = { id: 'example-broadcast', replicas }

const nodes = await Promise.all(replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster })))
const received = new Map(nodes.map((n) => [n.id, 0]))
for (const node of nodes) {
  node.on('prepare', (msg) => {
    received.set(node.id, received.get(node.id) + 1)
    if (received.get(node.id) <= 3) console.log(`replica ${node.id} <- replica ${msg.from}: ${msg.text()}`)
  })
  node.handle('count', () => String(received.get(node.id)))
}
await Promise.all(nodes.map((n) => n.waitForPeers()))

for (const node of nodes) node.broadcast('prepare', `view 1, seq 1, from ${node.id}`)
await new Promise((r) => setTimeout(r, 100))

const client = await Client.connect({ host: '127.0.0.1', port: nodes[0].clientPort })
const count = Buffer.from(await client.call('count', '', { timeoutMs: 1000 })).toString()
console.log(`replica 1 says it received ${count} prepares (expected 3)`)

await client.close()
await Promise.all(nodes.map((n) => n.close()))
