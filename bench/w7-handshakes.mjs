// W7: an established link's latency while strangers flood the replica port
// with handshakes that reach key exchange (issue 13 item 2). Three roles:
//   recv   replica 1 (auth 'mac'): handler 'honest' records latency (send
//          time stamped from the machine-wide monotonic clock)
//   honest replica 2: one 64-byte message to replica 1 every <intervalMs>
//   attack <loops> parallel loops from 127.0.0.1: connect, a HELLO that
//          claims replica 3 with a fresh nonce and ephemeral key (passing
//          every check before key exchange), wait for the answer, close;
//          counts WELCOMEs (key exchanges done) and refusals
//   node bench/w7-handshakes.mjs recv   <p1> <p2> <p3> <budget: on|off>
//   node bench/w7-handshakes.mjs honest <p1> <p2> <p3> <intervalMs> <warmupMs> <durationMs>
//   node bench/w7-handshakes.mjs attack <p1> <loops> <ms>
// recv prints "ready", then one JSON line once honest is done; attack
// prints one JSON line when its time is up.
import { createHash, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto'
import { connect } from 'node:net'

import { build } from 'hdr-histogram-js'
import { Replica } from 'nexres-rpc'

import { paceHonest } from './honest.mjs'

const [role, ...rest] = process.argv.slice(2)
const watchdog = setTimeout(() => {
  process.stderr.write(`w7 ${role}: still running after 120 s\n`)
  process.exit(2)
}, 120_000)
watchdog.unref()

const seedOf = (id) => createHash('sha256').update(`nexres-bench-replica-${id}`).digest()
const publicOf = (seed) =>
  createPublicKey(
    createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' }),
  ).export({ format: 'jwk' }).x
const clusterOf = (ports) => ({
  id: 'w7',
  replicas: ports.map((port, i) => ({ id: i + 1, host: '127.0.0.1', port, publicKey: publicOf(seedOf(i + 1)) })),
})

if (role === 'recv') {
  const ports = rest.slice(0, 3).map(Number)
  const budget = rest[3] === 'on' ? {} : { handshakesPerSecondPerAddress: 0, handshakesPerSecond: 0 }
  const r = await Replica.start({ auth: 'mac', privateKey: seedOf(1), id: 1, cluster: clusterOf(ports), ...budget })
  const h = build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 })
  let honest = 0
  r.on('honest', (msg) => {
    const p = msg.payload
    const sent = new DataView(p.buffer, p.byteOffset, p.byteLength).getBigUint64(0, true)
    const phase = p[8]
    if (phase === 1) {
      h.recordValue(Math.max(1, Math.round(Number(process.hrtime.bigint() - sent) / 1000)))
      honest++
    } else if (phase === 2) {
      const s = r.stats()
      process.stdout.write(
        JSON.stringify({
          honest,
          p50: h.getValueAtPercentile(50),
          p99: h.getValueAtPercentile(99),
          max: h.maxValue,
          rateLimited: s.rejectsByReason.RATE_LIMITED ?? 0,
          badAuth: s.rejectsByReason.BAD_AUTH ?? 0,
        }) + '\n',
      )
      void r.close({ timeoutMs: 0 }).then(() => process.exit(0))
    }
  })
  process.stdout.write('ready\n')
} else if (role === 'honest') {
  const ports = rest.slice(0, 3).map(Number)
  const [intervalMs, warmupMs, durationMs] = rest.slice(3, 6).map(Number)
  const r = await Replica.start({ auth: 'mac', privateKey: seedOf(2), id: 2, cluster: clusterOf(ports) })
  await r.waitForPeers([1], { timeoutMs: 20_000 })
  await paceHonest(r, 1, 'honest', intervalMs, warmupMs, durationMs)
  await r.close({ timeoutMs: 5000 })
  process.exit(0)
} else if (role === 'attack') {
  const [port, loops, ms] = rest.map(Number)
  const cid = Buffer.from('w7')
  // HELLO (PROTOCOL.md §2, §2a): claims replica 3, auth mac.
  const hello = () => {
    const h = Buffer.alloc(32 + cid.length + 64)
    h.write('NXRP', 0, 'latin1')
    h.writeUInt16LE(1, 4)
    h.writeUInt16LE(1, 6)
    h.writeUInt16LE(1, 8)
    h[10] = cid.length
    h.writeUInt32LE(3, 12)
    randomBytes(8).copy(h, 16)
    h.writeUInt32LE(cid.length + 64, 24)
    cid.copy(h, 32)
    randomBytes(64).copy(h, 32 + cid.length)
    return h
  }
  const end = Date.now() + ms
  let attempts = 0
  let welcomes = 0
  let refused = 0
  const loop = async () => {
    while (Date.now() < end && attempts < 5_000_000) {
      attempts++
      await new Promise((resolve) => {
        const s = connect({ host: '127.0.0.1', port })
        let done = false
        const finish = () => {
          if (done) return
          done = true
          s.destroy()
          resolve()
        }
        s.on('connect', () => s.write(hello()))
        s.on('data', (d) => {
          if (d.length >= 4 && d.toString('latin1', 0, 4) === 'NXRP') welcomes++
          else refused++
          finish()
        })
        s.on('error', finish)
        s.on('close', finish)
        setTimeout(finish, 2000)
      })
    }
  }
  await Promise.all(Array.from({ length: loops }, loop))
  process.stdout.write(JSON.stringify({ attempts, welcomes, refused, seconds: ms / 1000 }) + '\n')
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
