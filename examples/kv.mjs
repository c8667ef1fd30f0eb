// A small replicated key-value service with typed requests: a client sends
// `put` to replica 1, which broadcasts the write to the other replicas and
// replies once every replica has applied it; `get` reads from any replica.
//   node examples/kv.mjs
import { Client, Replica, codecs, defineService, generateKeyPair } from 'nexres-rpc'

import { freePorts } from './free-ports.mjs'

const KV = defineService('kv', {
  put: { request: codecs.json(), response: codecs.json() }, // { key, value } -> { applied }
  get: { request: codecs.json(), response: codecs.msgpack() }, // { key } -> { value }
})

// One key pair per replica: public keys in the cluster config, each private
// key to its replica only (auth 'mac'; `npx nexres-rpc keygen` prints pairs).
const keys = [1, 2, 3].map(() => generateKeyPair())
const replicas = []
const ports = await freePorts(6)
for (let id = 1; id <= 3; id++) {
  replicas.push({ id, host: '127.0.0.1', port: ports[2 * id - 2], clientPort: ports[2 * id - 1], publicKey: keys[id - 1].publicKey })
}
const cluster = { id: 'example-kv', replicas }
const nodes = await Promise.all(replicas.map((r) => Replica.start({ id: r.id, cluster, auth: 'mac', privateKey: keys[r.id - 1].privateKey })))

for (const node of nodes) {
  const store = new Map()
  const waiting = new Map() // write id -> { acks, done }
  let nextWrite = 0
  node.on('write', (msg) => {
    const { id, key, value } = JSON.parse(msg.text())
    store.set(key, value)
    node.send(msg.from, 'applied', JSON.stringify({ id }))
  })
  node.on('applied', (msg) => {
    const w = waiting.get(JSON.parse(msg.text()).id)
    if (w && --w.acks === 0) w.done()
  })
  node.serve(KV, {
    // Replies later, once the others applied the write (ctx.reply could do the same).
    put: ({ key, value }) =>
      new Promise((resolve) => {
        const id = ++nextWrite
        store.set(key, value)
        waiting.set(id, { acks: node.peers.length, done: () => resolve({ applied: node.peers.length + 1 }) })
        node.broadcast('write', JSON.stringify({ id, key, value }))
      }),
    get: ({ key }) => ({ value: store.get(key) }),
  })
}
await Promise.all(nodes.map((n) => n.waitForPeers()))

const client = await Client.connect({ replicas: [{ host: '127.0.0.1', port: nodes[0].clientPort }] })
const kv = client.service(KV)
console.log('put', await kv.put({ key: 'color', value: 'teal' }, { timeoutMs: 2000 }))
const fromThree = await Client.connect({ host: '127.0.0.1', port: nodes[2].clientPort })
console.log('get from replica 3', await fromThree.service(KV).get({ key: 'color' }))

await Promise.all([client.close(), fromThree.close()])
await Promise.all(nodes.map((n) => n.close()))
