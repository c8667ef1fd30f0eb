// A receiver replica in its own process is killed (SIGKILL) while a sender
// streams numbered messages to it, stays down while the sender goes on, and is
// restarted on the same id and port. docs/PROTOCOL.md §5: every message the
// old process had not acknowledged is delivered to the new one, in order and
// exactly once; what it had acknowledged is not resent.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import t from 'tap'

import { Replica } from 'nexres-rpc'

import { type Child, spawnFixture } from './child-helpers.js'
import { loopbackCluster, until } from './helpers.js'

/** Counters recorded by one receiver incarnation (8 bytes LE each, in handling order). */
function readCounters(path: string): number[] {
  const buf = readFileSync(path)
  const out: number[] = []
  for (let o = 0; o + 8 <= buf.length; o += 8) out.push(Number(buf.readBigUInt64LE(o)))
  return out
}

function fileBytes(path: string): number {
  try {
    return statSync(path).size
  } catch {
    return 0
  }
}

/** Index of the first place where `xs` is not `start, start+1, ...`, or -1. */
function firstBreak(xs: number[], start: number): number {
  for (let i = 0; i < xs.length; i++) if (xs[i] !== start + i) return i
  return -1
}

interface Scenario {
  name: string
  /** Payload size; the counter is in its first 8 bytes. */
  payloadBytes: number
  /** Messages per 1 ms tick of the sender. */
  perTick: number
  /** Counters to send before the kill / while down / after the restart. */
  before: number
  whileDown: number
  after: number
  /** SIGSTOP the receiver first and build this much unacknowledged backlog, then SIGKILL it. */
  freezeBacklogBytes?: number
}

const scenarios: Scenario[] = [
  {
    name: 'receiver killed with SIGKILL mid-stream and restarted on the same port gets everything it had not acknowledged',
    payloadBytes: 8,
    perTick: 40,
    before: 8000,
    whileDown: 6000,
    after: 4000,
  },
  {
    name: 'receiver frozen with a large unacknowledged backlog, then killed and restarted: the backlog is resent in order',
    payloadBytes: 4096,
    perTick: 10,
    before: 2000,
    whileDown: 2000,
    after: 2000,
    freezeBacklogBytes: 8 * 1024 * 1024,
  },
]

for (const sc of scenarios) t.test(sc.name, async (t) => {
  const cluster = await loopbackCluster(2, 'restart')
  const dir = mkdtempSync(join(tmpdir(), 'nexres-restart-'))
  const children: Child[] = []
  t.teardown(async () => {
    await Promise.all(children.map((c) => c.kill()))
    rmSync(dir, { recursive: true, force: true })
  })
  const receiverOptions = JSON.stringify({ reconnect: { minMs: 20, maxMs: 200 } })
  const startB = async (file: string): Promise<Child> => {
    const c = spawnFixture('receiver.mjs', [], {
      NEXRES_CLUSTER: JSON.stringify(cluster),
      NEXRES_ID: '2',
      NEXRES_OUT: file,
      NEXRES_OPTIONS: receiverOptions,
    })
    children.push(c)
    await c.waitLine(/^ready \d+$/, 15_000, 'receiver ready')
    return c
  }

  const file1 = join(dir, 'b1.bin')
  const file2 = join(dir, 'b2.bin')
  const b1 = await startB(file1)
  const a = await Replica.start({ auth: 'none', id: 1, cluster, reconnect: { minMs: 20, maxMs: 200 } })
  let loop: NodeJS.Timeout | undefined
  t.teardown(async () => {
    clearTimeout(loop)
    await a.close({ timeoutMs: 0 })
  })
  await a.waitForPeers([2], { timeoutMs: 15_000 })

  // Sender: numbered messages every millisecond until told to stop.
  let sent = 0
  let sending = true
  let sendErrors = 0
  const payload = new Uint8Array(sc.payloadBytes)
  const dv = new DataView(payload.buffer)
  const tick = (): void => {
    if (!sending) return
    for (let i = 0; i < sc.perTick; i++) {
      dv.setBigUint64(0, BigInt(sent), true)
      try {
        a.send(2, 'seq', payload) // the return value (high-water mark) is ignored: far below the cap
        sent++
      } catch {
        sendErrors++
      }
    }
    loop = setTimeout(tick, 1)
  }

  // Track the link to B: counters sent at the moment it went down and came back.
  let downAt = -1
  let ackedAtDown = -1
  let upAgainAt = -1
  const downs: string[] = []
  a.events.on('peer-down', (peer, info) => {
    downs.push(`${peer}:${info.code}`)
    if (peer !== 2 || downAt !== -1) return
    a.flush() // so that stats count every message sent so far
    const st = a.stats().peers.find((p) => p.id === 2)!
    downAt = sent
    // ACKs are cumulative and acknowledged segments leave the queue in order:
    // the messages no longer queued are the ones the old process acknowledged.
    ackedAtDown = sent - st.queuedMsgs
  })
  a.events.on('peer-up', (peer) => {
    if (peer === 2 && downAt !== -1 && upAgainAt === -1) upAgainAt = sent
  })

  tick()
  // Let B1 receive a good part of the stream, then kill it mid-stream.
  await until(() => sent >= sc.before && fileBytes(file1) >= 8 * (sc.before / 4), 20_000, 'first receiver to get messages')
  if (sc.freezeBacklogBytes !== undefined) {
    t.ok(b1.proc.kill('SIGSTOP'), 'SIGSTOP sent to the receiver')
    const backlog = sc.freezeBacklogBytes
    await until(() => a.stats().peers.find((p) => p.id === 2)!.queuedBytes >= backlog, 20_000, 'unacknowledged backlog')
    const st = a.stats().peers.find((p) => p.id === 2)!
    t.comment(`backlog at the kill: ${st.queuedMsgs} messages, ${st.queuedBytes} bytes, ${st.unackedBytes} written and unacknowledged`)
  }
  t.ok(b1.proc.kill('SIGKILL'), 'SIGKILL sent to the receiver')
  await b1.waitExit(10_000)
  await until(() => downAt !== -1, 10_000, "sender's peer-down for the killed receiver")
  t.ok(ackedAtDown >= 0 && ackedAtDown <= downAt, `acknowledged prefix ${ackedAtDown} of ${downAt} sent`)

  // Keep sending while it is down.
  await until(() => sent >= downAt + sc.whileDown, 20_000, 'messages sent while the receiver is down')
  t.equal(a.isConnected(2), false, 'the receiver is still down')
  const sentWhileDownBeforeRestart = sent - downAt

  // Restart B: same id, same port (SO_REUSEADDR), new incarnation.
  const b2 = await startB(file2)
  await until(() => upAgainAt !== -1, 15_000, 'sender to reconnect to the restarted receiver')
  await until(() => sent >= upAgainAt + sc.after, 20_000, 'messages sent after the restart')
  sending = false
  clearTimeout(loop)
  const total = sent
  t.equal(sendErrors, 0, 'no send threw')
  t.comment(
    `sent ${total}: ${downAt} before the sender saw the kill (${ackedAtDown} acknowledged), ` +
      `${upAgainAt - downAt} while down (${sentWhileDownBeforeRestart} before the new process started), ${total - upAgainAt} after`,
  )

  // Everything the new process must get: [ackedAtDown, total).
  const expected2 = total - ackedAtDown
  await until(() => a.stats().peers.find((p) => p.id === 2)!.queuedBytes === 0, 20_000, 'all messages acknowledged')
  await until(() => fileBytes(file2) >= expected2 * 8, 20_000, `restarted receiver to handle ${expected2} messages`)
  await new Promise((r) => setTimeout(r, 200)) // would show extra deliveries
  b2.proc.kill('SIGTERM')
  const exit2 = await b2.waitExit(10_000)
  t.equal(exit2.code, 0, 'restarted receiver closed cleanly')

  const got1 = readCounters(file1)
  const got2 = readCounters(file2)
  t.comment(`old process handled ${got1.length}, new process handled ${got2.length}`)

  // The old process: messages in send order, each once, from 0.
  t.equal(firstBreak(got1, 0), -1, 'old process got 0, 1, 2, ... in order without gaps or duplicates')
  t.ok(got1.length <= downAt, 'old process got nothing sent after the sender saw it die')

  // Sent while the receiver was down: each exactly once, in order, at the new process.
  const down = new Map<number, number>()
  const downSeq: number[] = []
  for (const v of got2) {
    if (v >= downAt && v < upAgainAt) {
      down.set(v, (down.get(v) ?? 0) + 1)
      downSeq.push(v)
    }
  }
  let missingDown = 0
  let dupDown = 0
  for (let v = downAt; v < upAgainAt; v++) {
    const n = down.get(v) ?? 0
    if (n === 0) missingDown++
    if (n > 1) dupDown++
  }
  t.equal(missingDown, 0, `none of the ${upAgainAt - downAt} messages sent while down is missing at the new process`)
  t.equal(dupDown, 0, 'none of them is delivered twice')
  t.equal(firstBreak(downSeq, downAt), -1, 'they arrive in send order')

  // The new process gets exactly what was not acknowledged: [ackedAtDown, total), in order, once.
  const brk = firstBreak(got2, ackedAtDown)
  t.equal(brk, -1, `new process got ${ackedAtDown}..${total - 1} in order, each once` +
    (brk === -1 ? '' : ` (first difference at index ${brk}: ${got2[brk]} instead of ${ackedAtDown + brk})`))
  t.equal(got2.length, expected2, 'and nothing else')

  // Together the two incarnations cover every message sent. Messages the old
  // process acknowledged are legitimately not resent; the sender's view of
  // what was acknowledged is ackedAtDown.
  const seen = new Uint8Array(total)
  for (const v of got1) if (v < total) seen[v] = 1
  for (const v of got2) if (v < total) seen[v] = 1
  let lostUnacked = 0
  let ackedNotHandled = 0
  for (let v = 0; v < total; v++) {
    if (seen[v]) continue
    if (v >= ackedAtDown) lostUnacked++
    else ackedNotHandled++
  }
  t.equal(lostUnacked, 0, 'no message that was not acknowledged by the old process is lost')
  if (ackedNotHandled > 0) {
    t.comment(
      `${ackedNotHandled} messages were acknowledged by the old process (accepted into its input queue) ` +
        'but it was killed before its handler ran; PROTOCOL.md §3/§5 allow this',
    )
  }
  const st = a.stats().peers.find((p) => p.id === 2)!
  t.equal(st.msgsOut >= total, true, 'sender wrote every message (resends included)')
})

t.test('sender killed with SIGKILL and restarted: its new incarnation (message ids from 1 again) is delivered in full', async (t) => {
  const cluster = await loopbackCluster(2, 'sender-restart')
  const children: Child[] = []
  t.teardown(() => Promise.all(children.map((c) => c.kill())))
  // The receiver is the test process (replica 2); the sender is replica 1 in a child.
  const b = await Replica.start({ auth: 'none', id: 2, cluster, reconnect: { minMs: 20, maxMs: 200 } })
  t.teardown(() => b.close({ timeoutMs: 0 }))
  const got: { tag: number; n: number }[] = []
  b.on('seq', (msg) => {
    const p = Buffer.from(msg.payload.buffer, msg.payload.byteOffset, 16)
    got.push({ n: Number(p.readBigUInt64LE(0)), tag: Number(p.readBigUInt64LE(8)) })
  })
  const startA = (tag: number, count?: number): Child => {
    const c = spawnFixture('sender.mjs', [], {
      NEXRES_CLUSTER: JSON.stringify(cluster),
      NEXRES_ID: '1',
      NEXRES_TO: '2',
      NEXRES_TAG: String(tag),
      ...(count !== undefined ? { NEXRES_COUNT: String(count) } : {}),
    })
    children.push(c)
    return c
  }

  const a1 = startA(1)
  await a1.waitLine(/^up$/, 15_000, 'first sender connected')
  await until(() => got.length >= 6000, 20_000, 'messages of the first sender')
  t.ok(a1.proc.kill('SIGKILL'), 'first sender killed')
  await a1.waitExit(10_000)
  const fromFirst = got.length

  const N2 = 5000
  const a2 = startA(2, N2)
  await a2.waitLine(/^up$/, 15_000, 'restarted sender connected')
  await a2.waitLine(new RegExp(`^done ${N2}$`), 20_000, 'restarted sender: all acknowledged')
  await until(() => got.filter((m) => m.tag === 2).length >= N2, 10_000, 'messages of the restarted sender')
  await new Promise((r) => setTimeout(r, 200))

  const first = got.filter((m) => m.tag === 1).map((m) => m.n)
  const second = got.filter((m) => m.tag === 2).map((m) => m.n)
  t.comment(`first incarnation: ${first.length} delivered (${fromFirst} when it was killed); second: ${second.length}`)
  t.equal(firstBreak(first, 0), -1, 'first incarnation: in order, no gap, no duplicate')
  t.equal(second.length, N2, `second incarnation: all ${N2} delivered (not dropped as duplicates of the first)`)
  t.equal(firstBreak(second, 0), -1, 'second incarnation: in order, each once')
  const firstOfSecond = got.findIndex((m) => m.tag === 2)
  t.equal(got.slice(firstOfSecond).filter((m) => m.tag === 1).length, 0, 'nothing of the old connection after the new one took over')
})
