import { execSync } from 'node:child_process'
import { createServer } from 'node:net'

import { type ClusterConfig, Replica, type ReplicaOptions, generateKeyPair } from 'nexres-rpc'
import type tap from 'tap'

import * as wire from '../lib/wire.js'

/** A tap test object, as handed to t.test callbacks. */
export type Tap = Parameters<Parameters<typeof tap.test>[0]>[0]

/**
 * The one factor by which the tests' upper time bounds are scaled
 * (NEXRES_TEST_TIME_SCALE, default 1): raise it on a machine much slower or
 * busier than 2 vCPUs (valgrind, emulation). Lower bounds ("not before the
 * deadline") are orderings and are never scaled.
 */
export const TIME_SCALE = Math.max(1, Number(process.env.NEXRES_TEST_TIME_SCALE ?? '1') || 1)

/** An upper bound of `ms` milliseconds on this machine (see TIME_SCALE). */
export function timeBound(ms: number): number {
  return ms * TIME_SCALE
}

// Replica ports must be known before any replica of a cluster starts (every
// replica gets the whole config), so they cannot all be port 0. Ports the OS
// hands out for port 0 come from the ephemeral range, where a released one
// may be taken meanwhile as the source port of any outgoing connection
// (this test's own clients and links): a race. Ports here come from below
// the ephemeral range (Linux: 32768-60999), which the OS never hands out by
// itself, in a block of this process's own (by pid), each checked bindable.
const PORT_BASE = 20_000
const PORT_BLOCK = 256
const PORT_BLOCKS = 48 // 20000 .. 32287
let nextPort = 0

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** `n` ports on 127.0.0.1 that nothing listens on, from outside the ephemeral range. */
export async function freePorts(n: number): Promise<number[]> {
  const base = PORT_BASE + (process.pid % PORT_BLOCKS) * PORT_BLOCK
  const ports: number[] = []
  for (let tries = 0; ports.length < n; tries++) {
    if (tries > PORT_BLOCK) throw new Error(`no free port in ${base}..${base + PORT_BLOCK - 1}`)
    const port = base + (nextPort++ % PORT_BLOCK)
    if (await bindable(port)) ports.push(port)
  }
  return ports
}

/** A loopback cluster of `n` replicas with ids 1..n on free ports. */
export async function loopbackCluster(n: number, id = 'test'): Promise<ClusterConfig> {
  const ports = await freePorts(n)
  return { id, replicas: ports.map((port, i) => ({ id: i + 1, host: '127.0.0.1', port })) }
}

/** `n` replicas (auth none) of a loopback cluster, linked, closed at the end of the test. */
export async function plainReplicas(t: Tap, n: number, name: string): Promise<Replica[]> {
  const cluster = await loopbackCluster(n, name)
  const replicas = await Promise.all(cluster.replicas.map((r) => Replica.start({ id: r.id, cluster, auth: 'none' })))
  t.teardown(() => Promise.all(replicas.map((r) => r.close({ timeoutMs: 0 }))))
  await Promise.all(replicas.map((r) => r.waitForPeers()))
  return replicas
}

/** Bytes as hex, for comparing payloads in assertions. */
export const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')

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
 * Replicas 1 and 2 of a fresh keyed cluster `name` (auth 'mac'), linked,
 * closed at the end of the test; `first` adds options to replica 1.
 */
export async function keyedPair(t: Tap, name: string, first: Partial<ReplicaOptions> = {}): Promise<[Replica, Replica]> {
  const k = await keyedCluster(2, name)
  const a = await Replica.start({ id: 1, cluster: k.cluster, privateKey: k.keys[0]!.privateKey, ...first })
  const b = await Replica.start({ id: 2, cluster: k.cluster, privateKey: k.keys[1]!.privateKey })
  t.teardown(() => Promise.all([a.close({ timeoutMs: 0 }), b.close({ timeoutMs: 0 })]))
  await a.waitForPeers()
  return [a, b]
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

