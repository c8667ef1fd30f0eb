// auth 'mac', one-sided key mismatch: replica 1 holds a wrong public key for
// replica 2 (replica 2's configuration is right). Both sides learn why
// ('reject' with BAD_AUTH on each), neither ever reports the link up, and
// the links retry with exponential backoff up to reconnect.maxMs instead of
// coming up and dropping in a tight loop.
import t from 'tap'

import { type ClusterConfig, Replica, generateKeyPair } from 'nexres-rpc'

import { freePorts } from './helpers.js'

const HOST = '127.0.0.1'

interface RejectInfo {
  peer: number | undefined
  code: string
  message: string
  remote: string
}

/**
 * The most connection attempts one link can make within `windowMs` under
 * the reconnect schedule: after each failure it waits at least half the
 * current delay (full jitter in [d/2, d]), the delay doubling from minMs up
 * to maxMs. Handshakes take time too, so real attempts are fewer.
 */
function maxAttempts(windowMs: number, minMs: number, maxMs: number): number {
  let attempts = 1
  let elapsed = 0
  let d = minMs
  for (;;) {
    elapsed += d / 2
    if (elapsed > windowMs) return attempts
    attempts++
    d = Math.min(d * 2, maxMs)
  }
}

t.test('a wrong public key on one side: both sides get BAD_AUTH rejects, no peer-up, retries back off', async (t) => {
  const ports = await freePorts(2)
  const k1 = generateKeyPair()
  const k2 = generateKeyPair()
  const wrong = generateKeyPair()
  const cluster = (keyOf2: string): ClusterConfig => ({
    id: 'mismatch',
    replicas: [
      { id: 1, host: HOST, port: ports[0]!, publicKey: k1.publicKey },
      { id: 2, host: HOST, port: ports[1]!, publicKey: keyOf2 },
    ],
  })
  const reconnect = { minMs: 50, maxMs: 400 }
  const windowMs = 3000
  const r1 = await Replica.start({ id: 1, cluster: cluster(wrong.publicKey), auth: 'mac', privateKey: k1.privateKey, reconnect })
  const r2 = await Replica.start({ id: 2, cluster: cluster(k2.publicKey), auth: 'mac', privateKey: k2.privateKey, reconnect })
  t.teardown(() => Promise.all([r1.close({ timeoutMs: 0 }), r2.close({ timeoutMs: 0 })]))
  const started = Date.now()
  const rejects = new Map<Replica, RejectInfo[]>([
    [r1, []],
    [r2, []],
  ])
  const flaps: string[] = []
  for (const r of [r1, r2]) {
    r.events.on('reject', (info: RejectInfo) => rejects.get(r)!.push(info))
    r.events.on('peer-up', (p: number) => flaps.push(`replica ${r.id}: peer-up ${p}`))
    r.events.on('peer-down', (p: number) => flaps.push(`replica ${r.id}: peer-down ${p}`))
  }
  // Keep a message queued both ways, so the links have something to deliver.
  r1.send(2, 'm', new Uint8Array(8))
  r2.send(1, 'm', new Uint8Array(8))

  await new Promise((r) => setTimeout(r, windowMs))
  const elapsed = Date.now() - started
  const seen1 = rejects.get(r1)!.slice()
  const seen2 = rejects.get(r2)!.slice()

  t.same(flaps, [], 'no peer-up (or peer-down) on either side')
  t.notOk(r1.isConnected(2) || r2.isConnected(1), 'neither link counts as connected')
  t.ok(seen1.length > 0 && seen1.every((e) => e.code === 'BAD_AUTH'), `replica 1 (the wrong key) gets BAD_AUTH rejects (${seen1.length})`)
  t.ok(seen2.length > 0 && seen2.every((e) => e.code === 'BAD_AUTH'), `replica 2 (configured right) gets BAD_AUTH rejects (${seen2.length})`)
  t.ok(
    seen2.some((e) => /refused by (replica 1|peer)/.test(e.message)),
    `replica 2 is told that replica 1 refused it: ${seen2[0]?.message}`,
  )
  t.ok(seen2.every((e) => e.peer === 1), 'replica 2 names replica 1 in every reject')

  // Each attempt of each link (1 -> 2 and 2 -> 1) is one reject on each
  // side: at most two links' worth of attempts under the backoff schedule.
  const bound = 2 * maxAttempts(elapsed, reconnect.minMs, reconnect.maxMs)
  t.ok(seen1.length <= bound, `replica 1: ${seen1.length} rejects in ${elapsed} ms, at most ${bound} under the backoff schedule`)
  t.ok(seen2.length <= bound, `replica 2: ${seen2.length} rejects in ${elapsed} ms, at most ${bound} under the backoff schedule`)
  t.ok(seen1.length >= 4 && seen2.length >= 4, 'both links keep retrying')
  const s1 = r1.stats().peers.find((p) => p.id === 2)!
  const s2 = r2.stats().peers.find((p) => p.id === 1)!
  t.equal(s1.connected || s2.connected, false, 'stats: not connected')
  t.ok(s1.queuedBytes > 0 && s2.queuedBytes > 0, 'what was queued stays queued (nothing delivered to an unproven peer)')
})
