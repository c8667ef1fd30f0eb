// sendAsync waits for room under the high-water mark: with the peer down it
// waits, an AbortSignal ends the wait with nothing queued, and once the peer
// is up every awaited message is delivered in order.
import t from 'tap'

import { Replica } from 'nexres-rpc'

import { loopbackCluster, until } from './helpers.js'

t.test('sendAsync waits for drain, honours AbortSignal and close()', async (t) => {
  const cluster = await loopbackCluster(2, 'send-async')
  const HWM = 64 * 1024
  const a = await Replica.start({ auth: 'none', id: 1, cluster, highWaterMark: HWM })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const payload = Buffer.alloc(1000)
  let sent = 0
  const producer = (async () => {
    for (let i = 0; i < 200; i++) {
      payload.writeUInt32LE(i, 0)
      await a.sendAsync(2, 'seq', payload)
      sent++
    }
  })()
  await until(() => sent > 0, 5000, 'some sends')
  await new Promise((r) => setTimeout(r, 200))
  const stuckAt = sent
  t.ok(stuckAt < 200 && stuckAt >= HWM / 1100, `waits at the high-water mark with the peer down (${stuckAt} queued)`)
  t.ok(a.stats().peers[0]!.queuedBytes < HWM + 2048, 'queue held near the mark')

  const ac = new AbortController()
  const aborted = a.sendAsync(2, 'seq', 'never', { signal: ac.signal })
  ac.abort(new Error('changed my mind'))
  await t.rejects(aborted, { code: 'ABORTED' }, 'an aborted wait rejects with ABORTED')

  const b = await Replica.start({ auth: 'none', id: 2, cluster })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  const got: number[] = []
  const others: string[] = []
  b.on('seq', (msg) => {
    if (msg.size === 1000) got.push(Buffer.from(msg.payload).readUInt32LE(0))
    else others.push(msg.text())
  })
  await producer
  await until(() => got.length === 200, 15_000, 'all 200 messages')
  t.same(got, Array.from({ length: 200 }, (_, i) => i), 'every awaited message, in order')
  t.same(others, [], 'the aborted message was never queued')
})

t.test('sendAsync rejects with CLOSED when the replica closes while it waits', async (t) => {
  const cluster = await loopbackCluster(2, 'send-async-close')
  const a = await Replica.start({ auth: 'none', id: 1, cluster, highWaterMark: 1000 })
  await a.sendAsync(2, 'x', Buffer.alloc(2000)) // queue now above the mark (peer down)
  const waiting = a.sendAsync(2, 'x', 'more')
  const closing = a.close({ timeoutMs: 0 })
  await t.rejects(waiting, { code: 'CLOSED' })
  await closing
})
