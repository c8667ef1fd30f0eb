import { execSync } from 'node:child_process'
import { createServer } from 'node:net'

import { type ClusterConfig, type Replica, generateKeyPair } from 'nexres-rpc'
import type tap from 'tap'

import * as wire from '../lib/wire.js'

/** A tap test object, as handed to t.test callbacks. */
export type Tap = Parameters<Parameters<typeof tap.test>[0]>[0]

/** Ports the OS handed out on 127.0.0.1 (bound then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<import('node:net').Server>((resolve, reject) => {
        const s = createServer()
        s.once('error', reject)
        s.listen(0, '127.0.0.1', () => resolve(s))
      }),
    ),
  )
  const ports = servers.map((s) => {
    const a = s.address()
    if (a === null || typeof a === 'string') throw new Error('no port')
    return a.port
  })
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

/** A loopback cluster of `n` replicas with ids 1..n on free ports. */
export async function loopbackCluster(n: number, id = 'test'): Promise<ClusterConfig> {
  const ports = await freePorts(n)
  return { id, replicas: ports.map((port, i) => ({ id: i + 1, host: '127.0.0.1', port })) }
}

/** Resolves when `cond()` holds, polling; rejects after `ms` (`what` may be a function, read at the time out, to report state). */
export async function until(cond: () => boolean, ms = 10_000, what: string | (() => string) = 'condition'): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** Soft RLIMIT_NOFILE of this process (children inherit it). */
export function fdSoftLimit(): number {
  try {
    const v = execSync('ulimit -n', { shell: '/bin/sh', encoding: 'utf8' }).trim()
    return v === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(v)
  } catch {
    return 1024
  }
}

/** What an 'honest' route has seen (stream-peer.mjs honest mode: u64 counter + f64 send time). */
export interface HonestCount {
  /** Messages seen (the next counter expected). */
  next: number
  /** Counters out of order or repeated. */
  bad: number
  /** Latency of each message in ms (send time to handler). */
  lat: number[]
}

/** Registers the 'honest' route on `replica`, counting order and latency. */
export function countHonest(replica: Replica): HonestCount {
  const c: HonestCount = { next: 0, bad: 0, lat: [] }
  replica.on('honest', (msg) => {
    const dv = new DataView(msg.payload.buffer, msg.payload.byteOffset, 16)
    if (Number(dv.getBigUint64(0, true)) !== c.next) c.bad++
    c.next++
    c.lat.push(performance.timeOrigin + performance.now() - dv.getFloat64(8, true))
  })
  return c
}

/** A CLIENT_HELLO without a cluster id (docs/PROTOCOL.md §6). */
export function clientHello(): Buffer {
  const h = Buffer.alloc(wire.HELLO_FIXED_BYTES)
  h.writeUInt32LE(wire.HELLO_MAGIC, 0)
  h.writeUInt16LE(wire.PROTOCOL_VERSION, 4)
  h.writeUInt16LE(wire.HELLO_CLIENT, 6)
  return h
}

/** A REQUEST frame header declaring `length` body bytes, request id `id`, route 0x12345678. */
export function requestHeader(length: number, id: number): Buffer {
  const h = Buffer.alloc(wire.HEADER_BYTES)
  h.writeUInt32LE(length, wire.OFFSET_LENGTH)
  h.writeUInt32LE(0x12345678, wire.OFFSET_ROUTE)
  h[wire.OFFSET_KIND] = wire.KIND_REQUEST
  h.writeUInt32LE(id, wire.OFFSET_MSG_ID)
  return h
}

export interface Keyed {
  cluster: ClusterConfig
  keys: { publicKey: string; privateKey: string }[]
}

/** A loopback cluster of `n` replicas with fresh Ed25519 keys (auth 'mac'). */
export async function keyedCluster(n: number, name: string): Promise<Keyed> {
  const ports = await freePorts(n)
  const keys = ports.map(() => generateKeyPair())
  return {
    keys,
    cluster: { id: name, replicas: ports.map((port, i) => ({ id: i + 1, host: '127.0.0.1', port, publicKey: keys[i]!.publicKey })) },
  }
}

/**
 * `sender` sends `receiver` numbered messages (4-byte LE counter) until
 * stopped; the receiver checks order. `finish()` stops sending and waits for
 * every message to arrive.
 */
export function honestStream(t: Tap, sender: Replica, receiver: Replica, route = 'n') {
  let sent = 0
  let got = 0
  let outOfOrder = 0
  let stopped = false
  receiver.on(route, (m) => {
    const v = new DataView(m.payload.buffer, m.payload.byteOffset, 4).getUint32(0, true)
    if (v !== got + 1) outOfOrder++
    got = v
  })
  const body = Buffer.alloc(64)
  const timer = setInterval(() => {
    if (stopped) return
    for (let i = 0; i < 50; i++) {
      body.writeUInt32LE(sent + 1, 0)
      try {
        sender.send(receiver.id, route, body)
      } catch {
        stopped = true // the replica closed (test teardown)
        return
      }
      sent++
    }
  }, 2)
  t.teardown(() => {
    stopped = true
    clearInterval(timer)
  })
  return {
    get got() {
      return got
    },
    async finish(): Promise<void> {
      stopped = true
      clearInterval(timer)
      await until(() => got === sent, 15_000, `all ${sent} honest messages (have ${got})`)
      t.equal(outOfOrder, 0, `all ${sent} honest messages arrived in order, exactly once`)
    },
  }
}

