// A key-value store on four replicas of which one lies (f = 1), read and
// written through quorum calls. Not a full BFT protocol: the leader (replica
// 1) orders each request it receives by broadcasting its sequence number;
// every replica applies requests in that order and only then answers the
// client, which sends each call to all four and takes the reply two of them
// agree on (f + 1). Replica 4 answers every get with a wrong value: it is
// outvoted.
//   node examples/bft-kv.mjs
import { randomUUID } from 'node:crypto'
import { Client, Replica, generateKeyPair } from 'nexres-rpc'

import { freePorts } from './free-ports.mjs'

const N = 4
const LIAR = 4
const keys = Array.from({ length: N }, () => generateKeyPair())
const ports = await freePorts(2 * N)
const replicas = []
for (let id = 1; id <= N; id++) {
  replicas.push({ id, host: '127.0.0.1', port: ports[2 * id - 2], clientPort: ports[2 * id - 1], publicKey: keys[id - 1].publicKey })
}
const cluster = { id: 'example-bft-kv', replicas }

function startNode(id, replica) {
  const store = new Map()
  const requests = new Map() // request nonce -> { op, ctx }
  const order = [] // nonces in the leader's order
  let nextSeq = 0 // leader: next sequence number to give
  let applied = 0 // requests applied, in order
  const applyReady = () => {
    while (applied < order.length && requests.has(order[applied])) {
      const { op, ctx } = requests.get(order[applied])
      requests.delete(order[applied])
      applied++
      if (op.put) store.set(op.key, op.value)
      const value = op.put ? 'ok' : id === LIAR ? 'a lie' : (store.get(op.key) ?? '(none)')
      ctx.reply(JSON.stringify({ value, seq: applied }))
    }
  }
  // Requests come from the client to every replica; each waits for its order.
  replica.handle('kv', (req, ctx) => {
    const op = JSON.parse(Buffer.from(req).toString())
    requests.set(op.nonce, { op, ctx })
    if (id === 1) {
      order[nextSeq] = op.nonce
      replica.broadcast('order', JSON.stringify({ seq: nextSeq++, nonce: op.nonce }))
    }
    applyReady()
  })
  replica.on('order', (msg) => {
    if (msg.from !== 1) return // only the leader orders
    const { seq, nonce } = JSON.parse(Buffer.from(msg.payload).toString())
    order[seq] = nonce
    applyReady()
  })
}

const nodes = await Promise.all(replicas.map((r) => Replica.start({ id: r.id, cluster, auth: 'mac', privateKey: keys[r.id - 1].privateKey })))
nodes.forEach((node, i) => startNode(i + 1, node))
await Promise.all(nodes.map((n) => n.waitForPeers()))

const client = await Client.connect({ replicas: replicas.map((r) => ({ host: r.host, port: r.clientPort })), f: 1 })
const kv = async (op) => {
  // Replicas agree on the value and on the position in the order.
  const reply = await client.call('kv', JSON.stringify({ ...op, nonce: randomUUID() }), { quorum: 2 })
  return JSON.parse(Buffer.from(reply).toString())
}
console.log('put color', await kv({ put: true, key: 'color', value: 'teal' }))
console.log('put size', await kv({ put: true, key: 'size', value: 'large' }))
const got = await kv({ key: 'color' })
console.log(`get color with quorum 2: ${got.value} (seq ${got.seq})`)
// Asking for all four to agree shows who lied: NO_QUORUM lists each reply
// (decided as soon as the lie arrives: some may not have answered yet).
try {
  await client.call('kv', JSON.stringify({ key: 'color', nonce: randomUUID() }), { quorum: 4 })
} catch (err) {
  console.log(`quorum 4: ${err.code}`)
  err.replies.forEach((r, i) => console.log(`  replica ${i + 1}: ${r.reply ? JSON.parse(Buffer.from(r.reply).toString()).value : (r.error?.code ?? 'no answer yet')}`))
}

await client.close()
await Promise.all(nodes.map((n) => n.close()))
