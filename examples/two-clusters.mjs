// Two clusters of three replicas, each replica linked to the other cluster
// (remoteClusters): cluster "east" commits a block and broadcasts it to
// "west"; every west replica answers the sender, which counts the answers.
// Then east adds a fourth replica while running (reconfigure, epoch 1).
//   node examples/two-clusters.mjs
import { Replica, generateKeyPair } from 'nexres-rpc'

import { freePorts } from './free-ports.mjs'

const ports = await freePorts(7)
const make = (id, n, at) => {
  const keys = Array.from({ length: n }, () => generateKeyPair())
  const replicas = keys.map((k, i) => ({ id: i + 1, host: '127.0.0.1', port: ports[at + i], publicKey: k.publicKey }))
  return { cluster: { id, replicas }, keys }
}
const east = make('east', 3, 0)
const west = make('west', 3, 3)
const start = (own, other, i) =>
  Replica.start({ id: i + 1, cluster: own.cluster, auth: 'mac', privateKey: own.keys[i].privateKey, remoteClusters: [other.cluster] })
const easts = await Promise.all([0, 1, 2].map((i) => start(east, west, i)))
const wests = await Promise.all([0, 1, 2].map((i) => start(west, east, i)))

// West replicas acknowledge blocks to whoever sent them: msg.cluster and
// msg.from name the sender (replica 1 of east is not replica 1 of west).
for (const w of wests) {
  w.on('block', (msg) => w.sendTo({ cluster: msg.cluster, id: msg.from }, 'ack', `west/${w.id} has ${msg.text()}`))
}
const acks = []
const gotAll = new Promise((resolve) => {
  easts[0].on('ack', (msg) => {
    acks.push(`${msg.text()} (from ${msg.cluster}/${msg.from})`)
    if (acks.length === 3) resolve()
  })
})
const linked = (r) => r.stats().peers.every((p) => p.connected)
while (![...easts, ...wests].every(linked)) await new Promise((r) => setTimeout(r, 10))

easts[0].broadcastTo('west', 'block', 'block 1')
await gotAll
for (const a of acks.sort()) console.log(a)

// East grows to four replicas: a new configuration, epoch 1, on every member.
const k4 = generateKeyPair()
const grown = { id: 'east', epoch: 1, replicas: [...east.cluster.replicas, { id: 4, host: '127.0.0.1', port: ports[6], publicKey: k4.publicKey }] }
const e4 = await Replica.start({ id: 4, cluster: grown, auth: 'mac', privateKey: k4.privateKey, remoteClusters: [west.cluster] })
for (const e of easts) e.reconfigure(grown)
await e4.waitForPeers()
console.log(`east replica 4 joined at epoch ${e4.epoch}: peers ${e4.peers.join(', ')}`)

await Promise.all([...easts, e4, ...wests].map((r) => r.close()))
