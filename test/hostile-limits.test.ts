// Hostile-input limits on the replica port (docs/SECURITY.md "Connection
// limits", docs/PROTOCOL.md §4): connection floods, slowloris trickles and
// PING floods are refused with TOO_MANY_CONNECTIONS, READ_TIMEOUT and
// TOO_MANY_PINGS, counted by reason, while an honest replica's numbered
// stream keeps arriving, every message once and in order.
//
// Cluster for every test: replicas 1, 2 and 3 in the configuration. Replica 1
// streams to replica 2 the whole time; raw node:net sockets attack replica
// 2's port from 127.0.0.1, the same address the honest replicas use.
import { readdirSync } from 'node:fs'

import t from 'tap'


import { Replica } from 'nexres-rpc'

import { type Tap, fdSoftLimit, until, timeBound } from './helpers.js'
import { type HostileSetup, hostileSetup, DEADLINE, HonestStream, KIND_DATA, KIND_PING, KIND_PONG, RawPeer, frameHeader, hello, routeId } from './wire-peer.js'

// ---------------------------------------------------------------- wire format

const CODE = { TOO_MANY_CONNECTIONS: 13, READ_TIMEOUT: 15, TOO_MANY_PINGS: 16 } as const
type CodeName = keyof typeof CODE

/** A frame of `kind` with `body` (PROTOCOL.md §3). */
function frame(kind: number, sender: number, msgId: bigint, route = 0, body: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([frameHeader({ length: body.length, route, sender, kind, msgId }), body])
}

// -------------------------------------------------------------------- cluster

type Setup = HostileSetup

/** The shared hostile-test cluster; replica 1's stream never ends by itself here. */
function setup(t: Tap, opts2: Parameters<typeof hostileSetup>[2] = {}): Promise<Setup> {
  return hostileSetup(t, 'limits', opts2, (r1) => new HonestStream(r1, 4, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER))
}

/** The honest stream goes on, then every message arrived once and in order. */
async function checkHonest(t: Tap, s: Setup): Promise<void> {
  const mark = s.stream.received
  await until(() => s.stream.received >= mark + 100, DEADLINE, 'honest stream to go on')
  s.stream.stop()
  const sent = s.stream.sent
  await until(() => s.stream.received >= sent, DEADLINE, `all ${sent} honest messages`)
  await new Promise((r) => setTimeout(r, 50))
  t.equal(s.stream.received, sent, `all ${sent} honest messages arrived exactly once`)
  t.same(s.stream.outOfOrder, [], 'honest messages arrived in send order')
  t.same(s.others, [], 'nothing delivered from the hostile connections')
}

function rejectsOf(s: Setup, code: CodeName): number {
  return s.r2.stats().rejectsByReason[code] ?? 0
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length
}


// ---------------------------------------------------------------------- tests

// Both ends of every idle connection live in this process: 2 descriptors each.
const SOFT = fdSoftLimit()
const IDLE = SOFT >= 4096 ? 1000 : Math.max(100, Math.floor((SOFT - 400) / 2.5))

t.test('1,000 idle connections that never handshake', async (t) => {
  if (IDLE < 1000) t.comment(`fd soft limit is ${SOFT} (< 4096): scaled down to ${IDLE} idle connections`)
  const variants = [
    { name: 'default limits: maxConnectionsPerAddress (64) binds', opts: {}, limit: 64 },
    {
      name: 'maxReplicaConnections binds',
      opts: { maxReplicaConnections: Math.min(200, Math.floor(IDLE / 4)), maxConnectionsPerAddress: 1_000_000 },
      limit: Math.min(200, Math.floor(IDLE / 4)),
    },
  ]
  for (const v of variants) {
    t.test(v.name, async (t) => {
      // A long handshake deadline: the idle connections stay until the limits act.
      const s = await setup(t, { handshakeTimeoutMs: 120_000, ...v.opts })
      const baseline = openFds()
      const rxBefore = s.r2.stats().receiveBytesAllocated
      const rssBefore = process.memoryUsage().rss
      const before = rejectsOf(s, 'TOO_MANY_CONNECTIONS')
      const started = Date.now()
      const idle = await Promise.all(Array.from({ length: IDLE }, () => s.raw()))
      const over = IDLE - v.limit
      await until(() => idle.filter((p) => p.serverClosed).length >= over, 20_000, `${over} refusals`)
      await new Promise((r) => setTimeout(r, 200))
      t.comment(`${IDLE} connections opened and ${over} refused in ${Date.now() - started} ms`)
      const refused = idle.filter((p) => p.serverClosed)
      t.equal(refused.length, over, `${over} of ${IDLE} idle connections refused, ${v.limit} kept`)
      // Connections that never handshake hold no receive buffers.
      t.ok(
        s.r2.stats().receiveBytesAllocated <= rxBefore + 2 * 1024 * 1024,
        `receive buffers do not grow with idle connections (${rxBefore} -> ${s.r2.stats().receiveBytesAllocated} bytes)`,
      )
      t.equal(rejectsOf(s, 'TOO_MANY_CONNECTIONS') - before, over, `stats().rejectsByReason.TOO_MANY_CONNECTIONS counts ${over}`)
      t.ok(
        refused.every((p) => p.rejectCode() === CODE.TOO_MANY_CONNECTIONS),
        'each refused connection got a REJECT TOO_MANY_CONNECTIONS frame before the close',
      )
      // The refused ones are the oldest: the newest connections are the ones kept.
      t.ok(idle.slice(-Math.floor(v.limit / 2)).every((p) => !p.serverClosed), 'the newest idle connections are kept')
      const events = s.rejects2.filter((r) => r.code === 'TOO_MANY_CONNECTIONS')
      t.equal(events.length, over, "one 'reject' event per refusal")
      t.match(events[0]?.message ?? '', v.limit === 64 ? /maxConnectionsPerAddress/ : /maxReplicaConnections/, 'the event names the limit')

      // Honest traffic goes on; honest peers still get in from the same address.
      const mark = s.stream.received
      await until(() => s.stream.received >= mark + 200, DEADLINE, 'honest stream during the flood')
      const r3 = await Replica.start({ auth: 'none', id: 3, cluster: s.cluster })
      s.started.push(r3)
      await r3.waitForPeers([2], { timeoutMs: DEADLINE })
      await s.r2.waitForPeers([3], { timeoutMs: DEADLINE })
      let from3 = 0
      const bad3: string[] = []
      s.r2.on('three', (msg) => {
        const n = Buffer.from(msg.payload).readUInt32LE(0)
        if (n !== from3) bad3.push(`expected ${from3}, got ${n}`)
        from3++
      })
      for (let i = 0; i < 100; i++) {
        const b = Buffer.alloc(4)
        b.writeUInt32LE(i, 0)
        r3.send(2, 'three', b)
      }
      await until(() => from3 === 100, DEADLINE, '100 messages from the new replica 3')
      t.same(bad3, [], 'a replica started during the flood connects and delivers in order')

      // Restart the honest sender: its new connection gets in too, nothing is lost.
      s.stream.stop()
      const r1 = s.r1
      const closed = await r1.close()
      t.same(closed.undeliveredBytes, {}, 'the old replica 1 had everything acknowledged')
      const r1b = await Replica.start({ auth: 'none', id: 1, cluster: s.cluster })
      s.started.push(r1b)
      await r1b.waitForPeers([2], { timeoutMs: DEADLINE })
      s.stream.sender = r1b
      s.r1 = r1b
      s.stream.start()
      const mark2 = s.stream.received
      await until(() => s.stream.received >= mark2 + 200, DEADLINE, 'honest stream from the restarted replica 1')
      t.ok(idle.filter((p) => !p.serverClosed).length >= v.limit - 4, 'the attacker still holds its connections')
      await checkHonest(t, s)
      t.same(s.downs1, [], "replica 1's link never went down")

      // Everything goes away: descriptors back to the baseline.
      for (const p of idle) p.destroy()
      await r3.close({ timeoutMs: 0 })
      let fds = openFds()
      const end = Date.now() + DEADLINE
      while (fds > baseline && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 50))
        fds = openFds()
      }
      t.ok(fds <= baseline, `open descriptors back to baseline (${fds}, baseline ${baseline})`)
      // Memory: the whole episode (1,000 connections in two processes' worth of
      // sockets, refusals, restarts) leaves the process within a few MiB.
      const rssGrowth = process.memoryUsage().rss - rssBefore
      t.ok(rssGrowth < 64 * 1024 * 1024, `resident memory grew by ${(rssGrowth / 2 ** 20).toFixed(1)} MiB (< 64 MiB)`)
    })
  }
})

t.test('slowloris: a frame or handshake trickled a byte at a time -> READ_TIMEOUT', async (t) => {
  const timeoutMs = 300
  const s = await setup(t, { frameReadTimeoutMs: timeoutMs })

  const expectTimeout = async (p: RawPeer, firstByteAt: Promise<number>, what: string): Promise<void> => {
    await p.waitServerClose(what)
    const elapsed = p.closedAt - (await firstByteAt)
    t.equal(p.rejectCode(), CODE.READ_TIMEOUT, `${what}: REJECT READ_TIMEOUT`)
    t.ok(elapsed >= timeoutMs - 20 && elapsed < timeoutMs + timeBound(700), `${what}: refused ${elapsed} ms after its first byte (deadline ${timeoutMs} ms)`)
    await until(() => s.rejects2.some((r) => r.remote.endsWith(`:${p.localPort}`)), DEADLINE, `'reject' event for ${what}`)
    t.same(
      s.rejects2.filter((r) => r.remote.endsWith(`:${p.localPort}`)).map((r) => r.code),
      ['READ_TIMEOUT'],
      `${what}: one 'reject' event, READ_TIMEOUT`,
    )
  }

  // A HELLO, one byte every 40 ms: 36 bytes would take 1.4 s.
  const a = await s.raw()
  const ta = a.trickle(hello({ clusterId: s.cluster.id, sender: 3 }), 40)
  await expectTimeout(a, ta.firstByteAt, 'trickled HELLO')
  await ta.done

  // A valid handshake, then a DATA frame trickled the same way.
  const b = await s.raw()
  await b.handshake(s.cluster.id, 3)
  const body = Buffer.alloc(8)
  const tb = b.trickle(frame(KIND_DATA, 3, 1n, routeId('empty'), body), 40)
  await expectTimeout(b, tb.firstByteAt, 'trickled DATA frame')
  await tb.done
  t.equal(rejectsOf(s, 'READ_TIMEOUT'), 2, 'stats().rejectsByReason.READ_TIMEOUT counts both')

  // Slow but whole frames are fine: each frame comes in two halves 150 ms
  // apart, for far longer than the deadline in total.
  const c = await s.raw()
  await c.handshake(s.cluster.id, 3)
  let delivered = 0
  s.r2.on('slow', () => delivered++)
  for (let i = 1; i <= 8; i++) {
    const f = frame(KIND_DATA, 3, BigInt(i), routeId('slow'), Buffer.alloc(16, i))
    await c.write(f.subarray(0, 10))
    await new Promise((r) => setTimeout(r, 150))
    await c.write(f.subarray(10))
  }
  await until(() => delivered === 8, DEADLINE, '8 slow frames')
  t.notOk(c.serverClosed, 'a peer whose every frame completes within the deadline is not refused')
  t.equal(rejectsOf(s, 'READ_TIMEOUT'), 2, 'no further READ_TIMEOUT')
  await checkHonest(t, s)
})

t.test('PING flood -> TOO_MANY_PINGS; a moderate PING rate is answered', async (t) => {
  const s = await setup(t)
  // 20 PINGs per second for 1.5 s: under the default maxPingsPerSecond (100).
  const calm = await s.raw()
  await calm.handshake(s.cluster.id, 3)
  for (let i = 1; i <= 30; i++) {
    await calm.write(frame(KIND_PING, 3, BigInt(i)))
    await new Promise((r) => setTimeout(r, 50))
  }
  await until(() => calm.frames().filter((f) => f.kind === KIND_PONG && f.msgId !== 0n).length === 30, DEADLINE, '30 PONGs')
  t.notOk(calm.serverClosed, 'a peer pinging 20 times a second is answered, not refused')
  calm.destroy()

  // 1,000 PINGs at once.
  const flood = await s.raw()
  await flood.handshake(s.cluster.id, 3)
  const pings = Buffer.concat(Array.from({ length: 1000 }, (_, i) => frame(KIND_PING, 3, BigInt(i + 1))))
  await flood.write(pings)
  await flood.waitServerClose('server to close the flooding connection')
  t.equal(flood.rejectCode(), CODE.TOO_MANY_PINGS, 'REJECT TOO_MANY_PINGS')
  const pongs = flood.frames().filter((f) => f.kind === KIND_PONG).length
  t.ok(pongs <= 100, `at most maxPingsPerSecond PINGs answered (${pongs})`)
  t.equal(rejectsOf(s, 'TOO_MANY_PINGS'), 1, 'stats().rejectsByReason.TOO_MANY_PINGS counts it')
  await until(() => s.rejects2.some((r) => r.code === 'TOO_MANY_PINGS'), DEADLINE, "'reject' event")
  t.equal(s.rejects2.find((r) => r.code === 'TOO_MANY_PINGS')?.peer, 3, "the 'reject' event names the claimed replica")
  await checkHonest(t, s)
})

t.test('many half-open handshakes from one address -> maxConnectionsPerAddress refusals reported', async (t) => {
  const perAddress = 16
  const s = await setup(t, { maxConnectionsPerAddress: perAddress, handshakeTimeoutMs: 60_000 })
  const n = 50
  const half = await Promise.all(Array.from({ length: n }, () => s.raw()))
  // Each sends the first 10 bytes of a HELLO and stops.
  for (const p of half) await p.write(hello({ clusterId: s.cluster.id, sender: 3 }).subarray(0, 10))
  await until(() => half.filter((p) => p.serverClosed).length >= n - perAddress, DEADLINE, `${n - perAddress} refusals`)
  await new Promise((r) => setTimeout(r, 100))
  t.equal(half.filter((p) => p.serverClosed).length, n - perAddress, `${n - perAddress} refused, ${perAddress} kept`)
  t.equal(rejectsOf(s, 'TOO_MANY_CONNECTIONS'), n - perAddress, 'stats().rejectsByReason.TOO_MANY_CONNECTIONS counts them')
  const events = s.rejects2.filter((r) => r.code === 'TOO_MANY_CONNECTIONS')
  t.equal(events.length, n - perAddress, "one 'reject' event each")
  t.ok(events.every((e) => /maxConnectionsPerAddress \(16\).*127\.0\.0\.1/.test(e.message) && e.remote.startsWith('127.0.0.1:')), 'each names the per-address limit and the address')
  t.ok(half.filter((p) => p.serverClosed).every((p) => p.rejectCode() === CODE.TOO_MANY_CONNECTIONS), 'each got a REJECT TOO_MANY_CONNECTIONS frame')

  // An honest handshake from the same address still completes (the oldest
  // half-open one makes room), and an established session does not count.
  const honest = await s.raw()
  await honest.handshake(s.cluster.id, 3)
  await honest.write(frame(KIND_DATA, 3, 1n, routeId('ok3'), Buffer.alloc(4)))
  let got = 0
  s.r2.on('ok3', () => got++)
  await until(() => got === 1, DEADLINE, 'a frame on the honest connection')
  t.equal(half.filter((p) => !p.serverClosed).length, perAddress - 1, 'it took the place of one half-open connection')
  const more = await Promise.all(Array.from({ length: perAddress }, () => s.raw()))
  await until(() => half.every((p) => p.serverClosed), DEADLINE, 'the remaining half-open connections to be refused')
  t.notOk(honest.serverClosed, 'the established session is not refused to make room')
  for (const p of more) p.destroy()
  await checkHonest(t, s)
})
