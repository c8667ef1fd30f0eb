// A peer down past peerDownDeadlineMs: what was queued for it is given up
// and reported ('undelivered' with count, bytes and id range), never
// dropped silently; the queue empties and later messages flow once the peer
// is back.
import t from 'tap'

import { Replica, type UndeliveredInfo } from 'nexres-rpc'

import { loopbackCluster, until } from './helpers.js'

t.test("a peer down past the deadline: its queue is reported in 'undelivered'", async (t) => {
  const cluster = await loopbackCluster(2, 'undelivered')
  const a = await Replica.start({ auth: 'none', id: 1, cluster, peerDownDeadlineMs: 200, reconnect: { minMs: 20, maxMs: 50 } })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const reports: { peer: number; info: UndeliveredInfo }[] = []
  a.events.on('undelivered', (peer, info) => reports.push({ peer, info }))
  for (let i = 0; i < 10; i++) a.send(2, 'x', `m${i}`)
  t.equal(a.lastMessageId, 10, 'ids 1..10 used')
  await until(() => reports.length > 0, 5000, "an 'undelivered' event")
  t.same(reports[0], { peer: 2, info: { cluster: 'undelivered', reason: 'peer down past peerDownDeadlineMs', messages: 10, bytes: 10 * (24 + 2), firstId: 1, lastId: 10 } })
  t.equal(a.stats().peers[0]!.queuedBytes, 0, 'the queue was emptied')
  t.equal(a.stats().peers[0]!.queuedMsgs, 0)

  const b = await Replica.start({ auth: 'none', id: 2, cluster })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  const got: string[] = []
  b.on('x', (msg) => got.push(msg.text()))
  await a.waitForPeers([2], { timeoutMs: 10_000 })
  a.send(2, 'x', 'after')
  await until(() => got.length > 0, 5000, 'the next message')
  await new Promise((r) => setTimeout(r, 100))
  t.same(got, ['after'], 'only the message sent after it came back; the given-up ones were reported, not delivered')
})

t.test('with no deadline (the default) messages wait for the peer', async (t) => {
  const cluster = await loopbackCluster(2, 'no-deadline')
  const a = await Replica.start({ auth: 'none', id: 1, cluster, reconnect: { minMs: 20, maxMs: 50 } })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  let reported = 0
  a.events.on('undelivered', () => reported++)
  a.send(2, 'x', 'kept')
  await new Promise((r) => setTimeout(r, 400))
  const b = await Replica.start({ auth: 'none', id: 2, cluster })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  const got: string[] = []
  b.on('x', (msg) => got.push(msg.text()))
  await until(() => got.length === 1, 10_000, 'the kept message')
  t.same(got, ['kept'])
  t.equal(reported, 0)
})
