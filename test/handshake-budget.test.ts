// The handshake budget (issue 13 item 2, SECURITY.md "Handshake budget"):
// key exchanges per remote address and in all are bounded before any
// public-key operation; past the budget a handshake is refused RATE_LIMITED
// at once. Raw replica handshakes from 127.0.0.1 flood one replica while an
// honest link streams to it; another loopback address keeps its own
// bucket; keyed client handshakes are bounded the same way, clients without
// a key are not.
import { Socket } from 'node:net'
import { randomBytes } from 'node:crypto'

import t from 'tap'

import { Client, Replica, generateKeyPair } from 'nexres-rpc'

import { readExactly } from './byzantine-peer.js'
import { HOST, connectClient, startServer, utf8 } from './client-support.js'
import { honestStream, keyedCluster, timeBound } from './helpers.js'
import { hello } from './wire-peer.js'

const RATE_LIMITED = 19

/**
 * One replica handshake (auth 'mac') claiming replica 3, from `local`:
 * 'welcome' when the replica did key exchange, else the REJECT's code.
 */
async function attempt(port: number, clusterId: string, local = HOST): Promise<'welcome' | number> {
  const s = new Socket()
  s.on('error', () => {})
  try {
    await new Promise<void>((res, rej) => {
      s.once('error', rej)
      s.connect({ port, host: HOST, localAddress: local }, () => res())
    })
    s.write(hello({ sender: 3, clusterId, auth: 1, ext: randomBytes(64), incarnation: 1n }))
    // A WELCOME's fixed part, or a REJECT frame (24-byte header, u16 code, text).
    const head = await readExactly(s, 26, timeBound(5000))
    if (head.subarray(0, 4).toString('latin1') === 'NXRP') return 'welcome'
    return head.readUInt16LE(24)
  } finally {
    s.destroy()
  }
}

t.test('a flood of key exchanges from one address is refused RATE_LIMITED past its budget; links stream on', async (t) => {
  const k = await keyedCluster(3, 'hs-budget')
  const start = (id: number) =>
    Replica.start({ id, cluster: k.cluster, privateKey: k.keys[id - 1]!.privateKey, handshakesPerSecondPerAddress: 20, handshakesPerSecond: 1000 })
  const a = await start(1)
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const b = await start(2)
  t.teardown(() => b.close({ timeoutMs: 0 }))
  await Promise.all([a.waitForPeers([2]), b.waitForPeers([1])])
  const honest = honestStream(t, b, a)
  const began = Date.now()
  const results: ('welcome' | number)[] = []
  // 12 loops of 25 attempts each, in parallel.
  await Promise.all(
    Array.from({ length: 12 }, async () => {
      for (let i = 0; i < 25; i++) results.push(await attempt(a.port, 'hs-budget'))
    }),
  )
  const seconds = (Date.now() - began) / 1000
  const welcomed = results.filter((r) => r === 'welcome').length
  const limited = results.filter((r) => r === RATE_LIMITED).length
  t.equal(welcomed + limited, 300, 'every attempt got a WELCOME or RATE_LIMITED')
  // The bucket starts full (20) and refills at 20 per second.
  t.ok(welcomed <= 20 + Math.ceil(20 * seconds) + 1, `${welcomed} key exchanges in ${seconds.toFixed(2)} s (budget 20 + 20/s)`)
  t.ok(limited >= 300 - (20 + Math.ceil(20 * seconds) + 1), `${limited} refused at once`)
  t.equal(a.stats().rejectsByReason.RATE_LIMITED, limited, 'counted in rejectsByReason.RATE_LIMITED')
  // Another loopback address has a bucket of its own.
  t.equal(await attempt(a.port, 'hs-budget', '127.0.0.2'), 'welcome', '127.0.0.2 still gets its key exchange')
  await honest.finish()
  t.ok(a.isConnected(2) && b.isConnected(1), 'the established links stayed up')
})

t.test('keyed client handshakes share the budget; clients without a key do not take from it', async (t) => {
  const server = await startServer(t, { handshakesPerSecondPerAddress: 5, handshakesPerSecond: 1000 })
  server.replica.handle('echo', (req) => req)
  const outcomes = await Promise.allSettled(
    Array.from({ length: 30 }, () => Client.connect({ ...server.endpoint, privateKey: generateKeyPair().privateKey, connectTimeoutMs: timeBound(5000) })),
  )
  const ok = outcomes.filter((o) => o.status === 'fulfilled')
  const refused = outcomes.filter((o) => o.status === 'rejected' && (o.reason as { reasonCode?: string }).reasonCode === 'RATE_LIMITED')
  for (const o of ok) await (o as PromiseFulfilledResult<Client>).value.close()
  t.ok(ok.length >= 5 && ok.length <= 8, `${ok.length} of 30 keyed clients connected at once (budget 5 per second)`)
  t.equal(ok.length + refused.length, 30, 'the others were refused RATE_LIMITED')
  const plain = await Promise.all(Array.from({ length: 30 }, () => connectClient(t, server.endpoint)))
  t.equal(utf8(await plain[29]!.call('echo', 'x')), 'x', '30 clients without a key connect meanwhile')
})
