// replica.sendMany (docs/API.md): several messages to one peer in one call.
// Each is a message of its own, in order, after what was sent before and
// before what is sent after; all or nothing when an argument, a size or the
// queue bound refuses one; backpressure as send; from workers too.
import { fileURLToPath } from 'node:url'

import t from 'tap'

import { Replica } from 'nexres-rpc'

import { keyedPair, loopbackCluster, until } from './helpers.js'

const u32 = (p: Uint8Array): number => new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(0, true)


t.test('each payload a message of its own, in order between send()s; every payload kind, empty, large (by reference) and signed', async (t) => {
  const [a, b] = await keyedPair(t, 'many')
  const seen: { id: number; body: string; signed: boolean }[] = []
  b.on('m', (msg) => seen.push({ id: msg.id, body: Buffer.from(msg.payload).toString('latin1'), signed: msg.signature !== undefined }))
  const large = Buffer.alloc(40 * 1024, 'L')
  const expected: string[] = []
  const signedAt = new Set<number>()
  for (let round = 0; round < 200; round++) {
    a.send(2, 'm', `before ${round}`)
    expected.push(`before ${round}`)
    const batch: (Uint8Array | ArrayBufferView | string)[] = [`s${round}`, Buffer.from(`b${round}`), new Uint16Array([0x6948]), new Uint8Array(0)]
    const want = [`s${round}`, `b${round}`, 'Hi', '']
    if (round % 50 === 0) {
      batch.push(large)
      want.push(large.toString('latin1'))
    }
    const sign = round % 40 === 7
    t.equal(a.sendMany(2, 'm', batch, sign ? { sign: true } : undefined), true)
    for (const w of want) {
      if (sign) signedAt.add(expected.length)
      expected.push(w)
    }
  }
  a.send(2, 'm', 'last')
  expected.push('last')
  await until(() => seen.length === expected.length, 10_000, 'every message')
  t.same(seen.map((s) => s.body), expected, `all ${expected.length} messages, in the order sent`)
  t.ok(seen.every((s, i) => i === 0 || s.id === seen[i - 1]!.id + 1), 'consecutive message ids')
  t.same(
    seen.flatMap((s, i) => (s.signed ? [i] : [])),
    [...signedAt],
    'with { sign: true } every message of that call is signed, and only those',
  )
})

t.test('all or nothing: a bad payload, an oversized one or the queue bound refuses the whole call', async (t) => {
  const cluster = await loopbackCluster(2)
  // Peer 2 is not started: what is queued stays queued (stats show it).
  const a = await Replica.start({ auth: 'none', id: 1, cluster, maxQueueBytes: 64 * 1024, highWaterMark: 16 * 1024, maxFrameBytes: 8 * 1024 })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  const queued = (): number => {
    a.flush()
    return a.stats().peers[0]!.queuedBytes
  }
  t.equal(queued(), 0)
  const code = (f: () => unknown): string => {
    try {
      f()
      return 'no throw'
    } catch (err) {
      const e = err as { code?: string; parameter?: string }
      return `${e.code}${e.parameter !== undefined ? ` ${e.parameter}` : ''}`
    }
  }
  const cases: [string, () => unknown, string][] = [
    ['a string instead of an array', () => a.sendMany(2, 'm', 'abc' as never), 'INVALID_ARGUMENT payloads'],
    ['a Uint8Array instead of an array', () => a.sendMany(2, 'm', new Uint8Array(3) as never), 'INVALID_ARGUMENT payloads'],
    ['undefined', () => a.sendMany(2, 'm', undefined as never), 'INVALID_ARGUMENT payloads'],
    ['an ArrayBuffer in the list', () => a.sendMany(2, 'm', [Buffer.from('ok'), 'ok', new ArrayBuffer(4)] as never), 'INVALID_ARGUMENT payloads[2]'],
    ['a hole in the list', () => a.sendMany(2, 'm', [Buffer.from('ok'), , 'x'] as never), 'INVALID_ARGUMENT payloads[1]'],
    ['a number in the list', () => a.sendMany(2, 'm', ['x', 5] as never), 'INVALID_ARGUMENT payloads[1]'],
    ['one payload over maxFrameBytes', () => a.sendMany(2, 'm', [Buffer.alloc(10), Buffer.alloc(9 * 1024)]), 'PAYLOAD_TOO_LARGE'],
    ['more than maxQueueBytes in all', () => a.sendMany(2, 'm', Array.from({ length: 20 }, () => Buffer.alloc(4000))), 'QUEUE_FULL'],
    ['to: NaN', () => a.sendMany(Number.NaN, 'm', ['x']), 'INVALID_ARGUMENT to'],
    ['to: not a peer', () => a.sendMany(7, 'm', ['x']), 'UNKNOWN_PEER'],
    ['route: empty', () => a.sendMany(2, '', ['x']), 'INVALID_ARGUMENT route'],
    ['options.sign: a string', () => a.sendMany(2, 'm', ['x'], { sign: 'yes' as never }), 'INVALID_ARGUMENT options.sign'],
    ["sign with auth 'none'", () => a.sendMany(2, 'm', ['x'], { sign: true }), 'CONFIG_INVALID'],
    ['an unknown option', () => a.sendMany(2, 'm', ['x'], { signed: true } as never), 'CONFIG_INVALID'],
  ]
  for (const [what, f, want] of cases) {
    t.equal(code(f), want, what)
    t.equal(queued(), 0, `${what}: nothing queued`)
  }
  t.equal(a.sendMany(2, 'm', []), true, 'an empty list queues nothing')
  t.equal(queued(), 0)
  // Under the bound: queued, and false once past highWaterMark.
  t.equal(a.sendMany(2, 'm', Array.from({ length: 3 }, () => Buffer.alloc(4000))), true, 'under highWaterMark: true')
  t.equal(queued(), 3 * (4000 + 24))
  t.equal(a.sendMany(2, 'm', Array.from({ length: 3 }, () => Buffer.alloc(4000))), false, 'past highWaterMark: false (queued all the same)')
  t.equal(queued(), 6 * (4000 + 24))
  t.equal(code(() => a.sendMany(2, 'm', Array.from({ length: 11 }, () => Buffer.alloc(4000)))), 'QUEUE_FULL', 'what would pass maxQueueBytes: refused')
  t.equal(queued(), 6 * (4000 + 24), 'and nothing of it queued')
  await a.close({ timeoutMs: 0 })
  t.equal(code(() => a.sendMany(2, 'm', ['x'])), 'CLOSED', 'after close')
})

t.test('a list longer than the staging buffer (handed to native in the middle of the call) is counted once toward maxQueueBytes', async (t) => {
  const cluster = await loopbackCluster(2)
  const a = await Replica.start({ auth: 'none', id: 1, cluster, maxQueueBytes: 4 * 1024 * 1024, highWaterMark: 4 * 1024 * 1024 })
  t.teardown(() => a.close({ timeoutMs: 0 }))
  // 8,000-byte payloads are copied into the 1 MiB stage: 300 of them fill it twice.
  const list = (n: number): Buffer[] => Array.from({ length: n }, () => Buffer.alloc(8000, 7))
  t.equal(a.sendMany(2, 'm', list(300)), true)
  t.equal(a.sendMany(2, 'm', list(200)), true, 'the second list fits: 500 x 8,024 bytes are under 4 MiB')
  t.equal(a.send(2, 'm', Buffer.alloc(100_000)), true, 'and a send that fits too')
  a.flush()
  t.equal(a.stats().peers[0]!.queuedBytes, 500 * 8024 + 100_024, 'every byte counted once')
  t.throws(() => a.sendMany(2, 'm', list(30)), { code: 'QUEUE_FULL' }, 'past the bound: refused')
})

t.test('what is checked is what is sent: each element is read once (a getter or a Proxy that changes its answer)', async (t) => {
  const [a, b] = await keyedPair(t, 'many', { maxFrameBytes: 1024 })
  const got: string[] = []
  b.on('m', (msg) => got.push(msg.payload.length > 100 ? `large ${msg.payload.length}` : msg.text()))
  let reads = 0
  const tricky: Uint8Array[] = [Buffer.from('first'), Buffer.from('second')]
  // Small when first read, over maxFrameBytes afterwards.
  Object.defineProperty(tricky, 1, { get: () => (reads++ === 0 ? Buffer.from('small') : Buffer.alloc(64 * 1024)) })
  t.equal(a.sendMany(2, 'm', tricky), true)
  const proxied = new Proxy([Buffer.from('p1'), Buffer.from('p2')], {
    get: (target, key, receiver) => (key === 'length' && reads++ > 1 ? 1000 : Reflect.get(target, key, receiver)),
  })
  t.equal(a.sendMany(2, 'm', proxied), true)
  a.send(2, 'm', 'end')
  await until(() => got.includes('end'), 10_000, 'the messages')
  t.same(got, ['first', 'small', 'p1', 'p2', 'end'], 'the values read once were sent, nothing else')
})

t.test("backpressure: 'drain' after a false, then everything arrives in order", async (t) => {
  const [a, b] = await keyedPair(t, 'many', { highWaterMark: 64 * 1024 })
  let got = 0
  let bad = 0
  b.on('n', (msg) => {
    if (u32(msg.payload) !== got) bad++
    got++
  })
  const N = 100_000
  let sent = 0
  let falses = 0
  while (sent < N) {
    const list = Array.from({ length: Math.min(100, N - sent) }, (_, i) => {
      const p = Buffer.alloc(100)
      p.writeUInt32LE(sent + i, 0)
      return p
    })
    const ok = a.sendMany(2, 'n', list)
    sent += list.length
    if (!ok) {
      falses++
      await new Promise((r) => a.events.once('drain', r))
    }
  }
  await until(() => got === N, 20_000, 'every message')
  t.equal(bad, 0, 'in order')
  t.ok(falses > 0, `false ${falses} times, each followed by 'drain'`)
})

t.test('from workers: each worker answers with sendMany, every reply in order', async (t) => {
  const cluster = await loopbackCluster(2)
  const handlers = fileURLToPath(new URL('./fixtures/worker-handlers.mjs', import.meta.url))
  const a = await Replica.start({ auth: 'none', id: 1, cluster })
  const b = await Replica.start({ auth: 'none', id: 2, cluster, workers: 2, handlers })
  t.teardown(() => Promise.all([a.close({ timeoutMs: 0 }), b.close({ timeoutMs: 0 })]))
  await a.waitForPeers()
  const back: string[] = []
  a.on('many-back', (msg) => back.push(msg.payload.length === 4 ? String(u32(msg.payload)) : msg.text().split(' ')[2]!))
  const ask = Buffer.alloc(4)
  ask.writeUInt32LE(500, 0)
  a.send(2, 'many', ask)
  await until(() => back.length === 500, 10_000, 'the replies')
  t.same(back, Array.from({ length: 500 }, (_, i) => String(i)), '500 messages from one sendMany in a worker, in order')
})
