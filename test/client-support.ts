// What the client-port tests share (client-calls, client-deadlines,
// client-limits, client-failover, client-services, client-hostile): waits
// that report how a promise settled, a one-replica server, a connected
// client torn down with the test, and a raw client-port connection.
import { type Socket, connect } from 'node:net'

import * as wire from '../lib/wire.js'

import { Client, type ClientOptions, type ClusterConfig, type Endpoint, RemoteError, Replica, type ReplicaOptions, type RequestContext } from 'nexres-rpc'

import { type Tap, clientHello, freePorts, until } from './helpers.js'
import { FRAME_HEADER, HELLO_FIXED, KIND_REJECT, frameHeader } from './wire-peer.js'

export type { Tap }

export type CodedError = Error & { code?: string; remoteCode?: string }

export const HOST = '127.0.0.1'

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export const utf8 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8')

export type Outcome<T> = { state: 'fulfilled'; value: T } | { state: 'rejected'; error: unknown } | { state: 'pending' }

/** How `p` settled within `ms` (or that it did not). */
export async function settleWithin<T>(p: Promise<T>, ms: number): Promise<Outcome<T>> {
  let timer: NodeJS.Timeout | undefined
  const pending = new Promise<Outcome<T>>((r) => {
    timer = setTimeout(() => r({ state: 'pending' }), ms)
  })
  try {
    return await Promise.race([
      p.then(
        (value): Outcome<T> => ({ state: 'fulfilled', value }),
        (error: unknown): Outcome<T> => ({ state: 'rejected', error }),
      ),
      pending,
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** The value of `p`; throws if it rejects or is still pending after `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const o = await settleWithin(p, ms)
  if (o.state === 'fulfilled') return o.value
  if (o.state === 'rejected') {
    const e = o.error as CodedError
    throw new Error(`${what}: rejected with ${e?.code ?? ''} ${e?.message ?? String(e)}`, { cause: o.error })
  }
  throw new Error(`${what}: still pending after ${ms} ms`)
}

export interface Want {
  code: string
  remoteCode?: string
  message?: RegExp
}

/**
 * Checks that `p` rejects within `ms` with `want`; records a failure (and
 * returns undefined) when it resolves or hangs.
 */
export async function expectReject(t: Tap, p: Promise<unknown>, want: Want, ms: number, what: string): Promise<CodedError | undefined> {
  const o = await settleWithin(p, ms)
  if (o.state === 'pending') {
    t.fail(`${what}: still pending after ${ms} ms, expected ${want.code}`)
    return undefined
  }
  if (o.state === 'fulfilled') {
    t.fail(`${what}: resolved (${o.value instanceof Uint8Array ? JSON.stringify(utf8(o.value).slice(0, 60)) : String(o.value)}), expected ${want.code}`)
    return undefined
  }
  const e = o.error as CodedError
  t.equal(e?.code, want.code, `${what}: code ${want.code} (${e?.message})`)
  if (want.remoteCode !== undefined) {
    t.ok(e instanceof RemoteError, `${what}: a RemoteError`)
    t.equal(e?.remoteCode, want.remoteCode, `${what}: remoteCode ${want.remoteCode}`)
  }
  if (want.message !== undefined) t.match(e?.message, want.message, `${what}: message`)
  return e
}

export interface Server {
  replica: Replica
  endpoint: Endpoint
  cluster: ClusterConfig
}

/** A one-replica cluster whose replica listens for clients on a free port. */
export async function startServer(t: Tap, options: Omit<ReplicaOptions, 'id' | 'cluster'> = {}): Promise<Server> {
  const [port] = await freePorts(1)
  const cluster: ClusterConfig = { id: 'rpc-test', replicas: [{ id: 1, host: HOST, port: port!, clientPort: 0 }] }
  const replica = await Replica.start({ auth: 'none', id: 1, cluster, ...options })
  t.teardown(() => replica.close({ timeoutMs: 0 }))
  t.ok(Number.isInteger(replica.clientPort) && replica.clientPort! > 0, `client port bound (${replica.clientPort})`)
  return { replica, endpoint: { host: HOST, port: replica.clientPort! }, cluster }
}

export async function connectClient(t: Tap, options: ClientOptions): Promise<Client> {
  const c = await within(Client.connect(options), 10_000, 'Client.connect')
  t.teardown(() => c.close())
  return c
}

/**
 * A server with two routes: 'hold' leaves each request open (its context in
 * `held`, to answer later or never), 'echo' replies with the request; and a
 * client connected to it with `options`.
 */
export async function holdAndEcho(t: Tap, options: Omit<ClientOptions, 'host' | 'port' | 'replicas'> = {}): Promise<Server & { held: RequestContext[]; c: Client }> {
  const server = await startServer(t)
  const held: RequestContext[] = []
  server.replica.handle('hold', (_req, ctx) => {
    held.push(ctx)
  })
  server.replica.handle('echo', (req) => req)
  const c = await connectClient(t, { ...server.endpoint, ...options })
  return { ...server, held, c }
}

/** Calls whose rejections are observed at once (no unhandled rejection); settle later. */
export function observed<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {})
  return p
}

// ------------------------------------------------------ raw client sockets

export const TYPE_HELLO = 1
export const KIND_REQUEST = wire.KIND_REQUEST
export const KIND_REPLY = wire.KIND_REPLY
export const REJECT = { BAD_MAGIC: 1, BAD_FRAME: 6, HANDSHAKE_TIMEOUT: 8, REQUEST_TOO_LARGE: 11, IDLE_TIMEOUT: 12 } as const

/** CLIENT_HELLO, or another HELLO type in its place. */
export function rawHello(type = wire.HELLO_CLIENT): Buffer {
  const h = clientHello()
  h.writeUInt16LE(type, 6)
  return h
}

/** A whole frame of `kind` (a request id fits 32 bits here). */
export function frame(kind: number, route: number, id: number, body: Uint8Array, sender = 0): Buffer {
  return Buffer.concat([frameHeader({ length: body.length, route, sender, kind, msgId: BigInt(id) }), body])
}

/** A raw TCP connection to a client port; collects what the server writes. */
export class RawClient {
  readonly sock: Socket
  rx = Buffer.alloc(0)
  closed = false
  connected = false
  localPort = -1

  constructor(port: number) {
    this.sock = connect({ host: HOST, port, noDelay: true })
    this.sock.on('connect', () => {
      this.connected = true
      this.localPort = this.sock.localPort ?? -1
    })
    this.sock.on('data', (d: Buffer) => (this.rx = Buffer.concat([this.rx, d])))
    this.sock.on('error', () => {}) // ECONNRESET after a refusal; 'close' follows
    this.sock.on('close', () => (this.closed = true))
  }

  static async open(t: Tap, port: number): Promise<RawClient> {
    const c = new RawClient(port)
    t.teardown(() => {
      c.sock.destroy()
    })
    await until(() => c.connected || c.closed, 5000, 'raw socket connect')
    if (!c.connected) throw new Error('raw socket did not connect')
    return c
  }

  write(b: Uint8Array): void {
    this.sock.write(b)
  }

  /** Sends CLIENT_HELLO and reads CLIENT_WELCOME; returns the connection id it names. */
  async handshake(): Promise<number> {
    this.write(rawHello())
    await until(() => this.rx.length >= HELLO_FIXED || this.closed, 5000, 'CLIENT_WELCOME')
    if (this.rx.length < HELLO_FIXED) throw new Error(`no CLIENT_WELCOME: ${this.rx.toString('hex')}`)
    if (this.rx.readUInt32LE(0) !== wire.HELLO_MAGIC || this.rx.readUInt16LE(6) !== wire.WELCOME_CLIENT) {
      throw new Error(`not a CLIENT_WELCOME: ${this.rx.subarray(0, 32).toString('hex')}`)
    }
    const bodyLen = this.rx.readUInt32LE(24)
    await until(() => this.rx.length >= HELLO_FIXED + bodyLen || this.closed, 5000, 'CLIENT_WELCOME body')
    const connectionId = Number(this.rx.readBigUInt64LE(16))
    this.rx = this.rx.subarray(HELLO_FIXED + bodyLen)
    return connectionId
  }

  /** Waits until the server closed the connection; returns the REJECT code it sent first, if any. */
  async refusal(ms: number): Promise<number | undefined> {
    await until(() => this.closed, ms, 'the server to close the raw connection')
    let p = 0
    while (this.rx.length - p >= FRAME_HEADER) {
      const len = this.rx.readUInt32LE(p)
      if (this.rx[p + 12] === KIND_REJECT && this.rx.length - p >= FRAME_HEADER + 2) return this.rx.readUInt16LE(p + FRAME_HEADER)
      p += FRAME_HEADER + len
    }
    return undefined
  }
}

