// Hostile or broken connections to a replica's port (docs/PROTOCOL.md §2-§4):
// each is refused with the right REJECT code and closed, and the honest
// stream from another replica keeps arriving exactly once and in order.
//
// Cluster for every test: replicas 1, 2 and 3 in the configuration, only 1
// and 2 running. Replica 1 streams numbered messages to replica 2 the whole
// time; a raw node:net socket plays the hostile side against replica 2's
// port. When it claims to be replica 3 (a real member id whose process is not
// running) it disturbs no real session.
import { randomBytes } from 'node:crypto'

import t from 'tap'


import { type Tap, until } from './helpers.js'
import { type HostileSetup, hostileSetup, DEADLINE, type FrameFields, HELLO_FIXED, KIND_ACK, KIND_REJECT, MAGIC, RawPeer, TYPE_WELCOME, dataFrame, frameHeader, hello, parseFrame, routeId } from './wire-peer.js'

// ---------------------------------------------------------------- wire format

const CODE = {
  BAD_MAGIC: 1,
  BAD_VERSION: 2,
  WRONG_CLUSTER: 3,
  UNKNOWN_PEER: 4,
  FRAME_TOO_LARGE: 5,
  BAD_FRAME: 6,
  BAD_SENDER: 7,
  HANDSHAKE_TIMEOUT: 8,
  BAD_AUTH: 10,
} as const
type CodeName = keyof typeof CODE

type Setup = HostileSetup

async function setup(t: Tap, opts2: Parameters<typeof hostileSetup>[2] = {}): Promise<Setup> {
  const s = await hostileSetup(t, 'test', opts2)
  t.equal(s.r2.port, s.port2, 'replica 2 listens on its configured port')
  return s
}

/** Honest traffic keeps flowing after the hostile part, then every message arrived exactly once, in order. */
async function checkHonest(t: Tap, s: Setup): Promise<void> {
  const mark = s.stream.received
  await until(() => s.stream.received >= mark + 100, DEADLINE, 'honest stream to go on after the hostile activity')
  s.stream.stop()
  const sent = s.stream.sent
  await until(() => s.stream.received >= sent, DEADLINE, `all ${sent} honest messages`)
  // Anything duplicated would show up now.
  await new Promise((r) => setTimeout(r, 50))
  t.equal(s.stream.received, sent, 'every honest message arrived exactly once')
  t.same(s.stream.outOfOrder, [], 'honest messages arrived in send order')
  t.equal(s.r2.stats().peers.find((p) => p.id === 1)?.msgsIn, sent, 'replica 2 counted every message from replica 1')
  t.same(s.downs1, [], "replica 1's link to replica 2 never went down")
  t.same(s.rejects1, [], 'replica 1 saw no reject')
}

/** Reads the REJECT (skipping ACKs), then waits for the server to close the connection. */
async function expectReject(
  t: Tap,
  s: Setup,
  p: RawPeer,
  code: CodeName,
  opts: { peer?: number } = {},
): Promise<void> {
  const { frame } = await p.readNonAck(`REJECT ${code}`)
  t.equal(frame.kind, KIND_REJECT, 'frame kind is REJECT')
  t.ok(frame.length >= 2 && frame.length <= 2 + 512, `REJECT body length ${frame.length} is u16 code + at most 512 bytes`)
  const got = frame.body.readUInt16LE(0)
  t.equal(got, CODE[code], `REJECT code ${got} is ${CODE[code]} (${code})`)
  const text = frame.body.subarray(2)
  t.equal(Buffer.from(text.toString('utf8'), 'utf8').equals(text), true, 'REJECT text is UTF-8')
  await p.waitServerClose(`server to close after REJECT ${code}`)
  t.equal(p.rx.length, p.pos, 'nothing after the REJECT frame')

  const port = p.localPort
  await until(
    () => s.rejects2.some((r) => r.remote.endsWith(`:${port}`)),
    DEADLINE,
    `'reject' event for the connection from port ${port}`,
  )
  const ev = s.rejects2.filter((r) => r.remote.endsWith(`:${port}`))
  t.equal(ev.length, 1, "one 'reject' event for this connection")
  t.equal(ev[0]!.code, code, `'reject' event code is ${code}`)
  if (opts.peer !== undefined) t.equal(ev[0]!.peer, opts.peer, `'reject' event names the claimed replica ${opts.peer}`)
  t.ok((s.r2.stats().rejectsByReason[code] ?? 0) >= 1, `stats().rejectsByReason.${code} counts it`)
}

function nothingFrom3(t: Tap, s: Setup, exceptEmpty = false): void {
  t.same([...s.others, ...s.unrouted], [], 'nothing delivered except the honest stream')
  if (!exceptEmpty) t.same(s.empties, [], "nothing delivered on 'empty'")
  if (!exceptEmpty) t.equal(s.r2.stats().peers.find((p) => p.id === 3)?.msgsIn, 0, 'replica 2 counted no message from replica 3')
}

// ---------------------------------------------------------------------- tests

t.test('handshake refusals', async (t) => {
  const variants: { name: string; code: CodeName; hello: (cid: string) => Buffer }[] = [
    { name: 'unknown replica id 99', code: 'UNKNOWN_PEER', hello: (cid) => hello({ clusterId: cid, sender: 99 }) },
    { name: "the receiver's own id 2", code: 'UNKNOWN_PEER', hello: (cid) => hello({ clusterId: cid, sender: 2 }) },
    { name: 'replica id 0', code: 'UNKNOWN_PEER', hello: (cid) => hello({ clusterId: cid, sender: 0 }) },
    { name: 'wrong cluster id, other length', code: 'WRONG_CLUSTER', hello: () => hello({ clusterId: 'other-cluster', sender: 3 }) },
    { name: 'wrong cluster id, same length', code: 'WRONG_CLUSTER', hello: (cid) => hello({ clusterId: cid.toUpperCase(), sender: 3 }) },
    { name: 'protocol version 2', code: 'BAD_VERSION', hello: (cid) => hello({ clusterId: cid, sender: 3, version: 2 }) },
    { name: 'protocol version 0', code: 'BAD_VERSION', hello: (cid) => hello({ clusterId: cid, sender: 3, version: 0 }) },
    { name: 'protocol version 0xffff', code: 'BAD_VERSION', hello: (cid) => hello({ clusterId: cid, sender: 3, version: 0xffff }) },
    { name: 'a WELCOME instead of a HELLO', code: 'BAD_FRAME', hello: (cid) => hello({ clusterId: cid, sender: 3, type: TYPE_WELCOME }) },
    { name: 'auth mode 1', code: 'BAD_AUTH', hello: (cid) => hello({ clusterId: cid, sender: 3, auth: 1 }) },
    { name: 'body_length 4097', code: 'BAD_FRAME', hello: (cid) => hello({ clusterId: cid, sender: 3, bodyLength: 4097 }) },
    {
      name: 'cluster_id_length above body_length',
      code: 'BAD_FRAME',
      hello: (cid) => hello({ clusterId: cid, sender: 3, clusterIdLength: cid.length + 1 }),
    },
  ]
  for (const v of variants) {
    t.test(`${v.name} -> ${v.code}`, async (t) => {
      const s = await setup(t)
      const p = await s.raw()
      await p.write(v.hello(s.cluster.id))
      await expectReject(t, s, p, v.code)
      nothingFrom3(t, s)
      await checkHonest(t, s)
    })
  }
})

t.test('garbage instead of a handshake -> BAD_MAGIC', async (t) => {
  const garbage = randomBytes(4096)
  if (garbage.subarray(0, 4).equals(MAGIC)) garbage[0] ^= 0xff
  const http = Buffer.from(
    'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n',
  )
  for (const [name, bytes] of [
    ['4 KiB of random bytes', garbage],
    ['an HTTP request', http],
  ] as const) {
    t.test(name, async (t) => {
      const s = await setup(t)
      const p = await s.raw()
      await p.write(bytes)
      await expectReject(t, s, p, 'BAD_MAGIC')
      nothingFrom3(t, s)
      await checkHonest(t, s)
    })
  }
})

t.test('valid HELLO as replica 3, then a truncated frame and the client goes away', async (t) => {
  const variants = [
    { name: 'body cut short (length 1000, 10 bytes), FIN', headerOnly: false, reset: false },
    { name: 'body cut short (length 1000, 10 bytes), RST', headerOnly: false, reset: true },
    { name: 'header cut short (10 of 24 bytes), FIN', headerOnly: true, reset: false },
  ]
  for (const v of variants) {
    t.test(v.name, async (t) => {
      const s = await setup(t)
      const p = await s.raw()
      await p.handshake(s.cluster.id, 3, 2)
      const frame = Buffer.concat([
        frameHeader({ length: 1000, route: routeId('seq'), sender: 3, msgId: 1n }),
        Buffer.alloc(10, 0xab),
      ])
      await p.write(v.headerOnly ? frame.subarray(0, 10) : frame)
      // Let the server read the partial frame before we go.
      await new Promise((r) => setTimeout(r, 50))
      if (v.reset) p.sock.resetAndDestroy()
      else p.sock.end()
      await until(() => p.closed, DEADLINE, 'raw socket to close')

      // Replica 2 is alive and still accepts a fresh connection from replica 3.
      const again = await s.raw()
      await again.handshake(s.cluster.id, 3, 2)
      again.destroy()

      await checkHonest(t, s)
      nothingFrom3(t, s)
      t.same(
        s.rejects2.filter((r) => r.remote.endsWith(`:${p.localPort}`) && r.code !== 'CONNECTION_LOST'),
        [],
        'no refusal reported for a connection that simply went away',
      )
    })
  }
})

t.test('frames over maxFrameBytes -> FRAME_TOO_LARGE, only that connection closes', async (t) => {
  const maxFrameBytes = 64 * 1024
  const s = await setup(t, { maxFrameBytes })
  for (const length of [maxFrameBytes + 1, 0xffffffff]) {
    const p = await s.raw()
    await p.handshake(s.cluster.id, 3, 2)
    // Only the header: the limit must be enforced before any body is read.
    await p.write(frameHeader({ length, route: routeId('seq'), sender: 3, msgId: 1n }))
    await expectReject(t, s, p, 'FRAME_TOO_LARGE', { peer: 3 })
    t.ok(s.stream.received > 0 && s.r1.isConnected(2), `honest link up after a ${length}-byte header`)
  }
  // A frame exactly at the limit is legal on the same replica.
  const p = await s.raw()
  await p.handshake(s.cluster.id, 3, 2)
  await p.write(dataFrame(3, 'empty', 1n, Buffer.alloc(maxFrameBytes, 7)))
  await until(() => s.empties.length === 1, DEADLINE, 'frame of exactly maxFrameBytes')
  t.same(s.empties, [{ from: 3, route: 'empty', size: maxFrameBytes }], 'frame of exactly maxFrameBytes delivered')
  t.equal(s.r2.stats().rejectsByReason.FRAME_TOO_LARGE, 2, 'two FRAME_TOO_LARGE refusals')
  t.same(s.others, [], 'nothing else delivered from replica 3')
  await checkHonest(t, s)
})

t.test('DATA frame with a forged sender -> BAD_SENDER', async (t) => {
  for (const forged of [1, 2, 99]) {
    t.test(`sender field ${forged} on replica 3's connection`, async (t) => {
      const s = await setup(t)
      const p = await s.raw()
      await p.handshake(s.cluster.id, 3, 2)
      // A plausible 'seq' payload: if it leaked as from replica 1 the order check would break.
      const body = Buffer.alloc(8)
      body.writeBigUInt64LE(BigInt(s.stream.sent + 1_000_000), 0)
      await p.write(dataFrame(forged, 'seq', 1_000_000n, body))
      await expectReject(t, s, p, 'BAD_SENDER', { peer: 3 })
      nothingFrom3(t, s)
      await checkHonest(t, s)
      nothingFrom3(t, s)
    })
  }
})

t.test('after the handshake, a frame that is not DATA or has reserved bits set -> BAD_FRAME', async (t) => {
  const variants: { name: string; header: FrameFields }[] = [
    { name: 'kind ACK', header: { length: 0, sender: 3, kind: KIND_ACK, msgId: 1n } },
    { name: 'kind REJECT', header: { length: 0, sender: 3, kind: KIND_REJECT, msgId: 1n } },
    // A PING with no body is a heartbeat (answered with a PONG, test/heartbeat.test.ts); with a body it is not.
    { name: 'kind PING with a body', header: { length: 4, sender: 3, kind: 4, msgId: 1n } },
    { name: 'kind 0', header: { length: 0, sender: 3, kind: 0, msgId: 1n } },
    { name: 'kind 255', header: { length: 0, sender: 3, kind: 255, msgId: 1n } },
    { name: 'DATA with reserved field 1', header: { length: 0, route: routeId('empty'), sender: 3, reserved: 1, msgId: 1n } },
  ]
  for (const v of variants) {
    t.test(v.name, async (t) => {
      const s = await setup(t)
      const p = await s.raw()
      await p.handshake(s.cluster.id, 3, 2)
      await p.write(frameHeader(v.header))
      await expectReject(t, s, p, 'BAD_FRAME', { peer: 3 })
      nothingFrom3(t, s)
      await checkHonest(t, s)
    })
  }
})

t.test('a burst of 50 hostile connections at once: each refused, honest traffic intact', async (t) => {
  const s = await setup(t)
  const peers = await Promise.all(Array.from({ length: 50 }, () => s.raw()))
  await Promise.all(
    peers.map((p, i) =>
      p.write(i % 2 === 0 ? randomBytes(512).fill(0, 0, 1) : hello({ clusterId: s.cluster.id, sender: 1000 + i })),
    ),
  )
  await until(() => peers.every((p) => p.serverClosed), DEADLINE, 'the server to close every hostile connection')
  for (const [i, p] of peers.entries()) {
    const f = parseFrame(p.rx, 0)
    const want = i % 2 === 0 ? CODE.BAD_MAGIC : CODE.UNKNOWN_PEER
    if (f === undefined || f.kind !== KIND_REJECT || f.body.readUInt16LE(0) !== want) {
      t.fail(`connection ${i}: expected REJECT ${want}, got ${p.rx.toString('hex').slice(0, 120)}`)
    }
  }
  await until(() => s.rejects2.length >= 50, DEADLINE, "50 'reject' events")
  const st = s.r2.stats()
  t.equal(st.rejectsByReason.BAD_MAGIC, 25, '25 BAD_MAGIC')
  t.equal(st.rejectsByReason.UNKNOWN_PEER, 25, '25 UNKNOWN_PEER')
  nothingFrom3(t, s)
  await checkHonest(t, s)
})

t.test('a connection that does not complete the handshake -> HANDSHAKE_TIMEOUT', async (t) => {
  const variants: { name: string; bytes: (cid: string) => Buffer }[] = [
    { name: 'sends nothing', bytes: () => Buffer.alloc(0) },
    { name: 'sends 10 bytes of HELLO', bytes: (cid) => hello({ clusterId: cid, sender: 3 }).subarray(0, 10) },
    { name: 'sends the fixed part, never the cluster id', bytes: (cid) => hello({ clusterId: cid, sender: 3 }).subarray(0, HELLO_FIXED) },
  ]
  for (const v of variants) {
    t.test(v.name, async (t) => {
      const s = await setup(t, { handshakeTimeoutMs: 300 })
      const p = await s.raw()
      const at = Date.now()
      const b = v.bytes(s.cluster.id)
      if (b.length > 0) await p.write(b)
      await expectReject(t, s, p, 'HANDSHAKE_TIMEOUT')
      t.ok(Date.now() - at >= 250, `refused after the deadline, not before (${Date.now() - at} ms)`)
      nothingFrom3(t, s)
      await checkHonest(t, s)
    })
  }
})

t.test('zero-length DATA frame from replica 3 is delivered as an empty payload', async (t) => {
  const s = await setup(t)
  const p = await s.raw()
  await p.handshake(s.cluster.id, 3, 2)
  await p.write(Buffer.concat([dataFrame(3, 'empty', 1n), dataFrame(3, 'empty', 2n, Buffer.from('after'))]))
  await until(() => s.empties.length >= 2, DEADLINE, "two messages on 'empty'")
  t.same(
    s.empties,
    [
      { from: 3, route: 'empty', size: 0 },
      { from: 3, route: 'empty', size: 5 },
    ],
    'empty payload, then the next frame, both from replica 3',
  )
  // Cumulative ACK covering both frames (PROTOCOL.md §3).
  let acked = 0n
  while (acked < 2n) {
    const f = await p.readFrame('ACK')
    t.equal(f.kind, KIND_ACK, 'only ACK frames come back on the data connection')
    if (f.kind !== KIND_ACK) break
    t.equal(f.length, 0, 'ACK has no body')
    acked = f.msgId
  }
  t.equal(acked, 2n, 'ACK covers msg id 2')
  t.equal(s.r2.stats().peers.find((x) => x.id === 3)?.msgsIn, 2, 'replica 2 counted two messages from replica 3')
  t.same(s.others, [], 'nothing else delivered')
  t.notOk(p.serverClosed, 'the connection stays open')
  await checkHonest(t, s)
})
