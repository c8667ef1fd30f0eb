// The addon reads engine options from one table: every key lib/ hands it is
// in the table, and the table refuses an unknown key, a missing required
// one and a value of the wrong type, naming the key (no silent native
// default for an option lib/ forgot to pass).
import t from 'tap'

import { type EngineOptions, addon } from '../lib/native.js'

// Every key of EngineOptions: the type makes this list complete.
const ALL: Record<keyof EngineOptions, true> = {
  selfId: true, clusterId: true, replicas: true, listenHost: true, ioThreads: true, ioSpinMicros: true, maxFrameBytes: true,
  chunkBytes: true, maxChunksPerConnection: true, maxReceiveBytes: true, maxClientReceiveBytes: true,
  maxPendingHandlers: true, highWaterBytes: true, handshakeTimeoutMs: true, reconnectMinMs: true,
  reconnectMaxMs: true, sendBufferBytes: true, receiveBufferBytes: true, clientPort: true, clientHost: true,
  maxRequestBytes: true, maxClientInFlight: true, clientIdleTimeoutMs: true, maxClientConnections: true,
  heartbeatIntervalMs: true, heartbeatTimeoutMs: true, peerDownDeadlineMs: true, maxReplicaConnections: true,
  maxConnectionsPerAddress: true, frameReadTimeoutMs: true, maxPingsPerSecond: true, incarnationLo: true,
  incarnationHi: true, auth: true, privateKey: true, publicKeys: true, consumers: true, ordered: true,
  maxClientKeyConnections: true, maxClientKeyInFlight: true, clientAuth: true, clientSeal: true, allowClientHook: true,
  handshakesPerSecondPerAddress: true, handshakesPerSecond: true, epoch: true, remotePeers: true, maxPeers: true,
}

function valid(): EngineOptions {
  return {
    selfId: 1, clusterId: 'opts', replicas: [{ id: 1, host: '127.0.0.1', port: 0 }], ioThreads: 1, ioSpinMicros: 0,
    maxFrameBytes: 1 << 20, chunkBytes: 1 << 20, maxChunksPerConnection: 8, maxReceiveBytes: 64 << 20,
    maxClientReceiveBytes: 64 << 20, maxPendingHandlers: 1024, highWaterBytes: 16 << 20, handshakeTimeoutMs: 5000,
    reconnectMinMs: 50, reconnectMaxMs: 1000, sendBufferBytes: 0, receiveBufferBytes: 0, maxRequestBytes: 1 << 20,
    maxClientInFlight: 1024, clientIdleTimeoutMs: 60_000, maxClientConnections: 100, heartbeatIntervalMs: 1000,
    maxClientKeyConnections: 64, maxClientKeyInFlight: 4096, handshakesPerSecondPerAddress: 100, handshakesPerSecond: 2000,
    heartbeatTimeoutMs: 5000, peerDownDeadlineMs: 0, maxReplicaConnections: 64, maxConnectionsPerAddress: 16,
    frameReadTimeoutMs: 10_000, maxPingsPerSecond: 100, incarnationLo: 1, incarnationHi: 0, auth: 'none',
    consumers: 0, ordered: true, epoch: 0, remotePeers: [], maxPeers: 4,
  }
}

function make(o: Record<string, unknown>): void {
  const e = new addon.Engine(o as unknown as EngineOptions, new Uint32Array(64), new Float64Array(4), () => 0, () => {})
  e.stop()
}

t.test('the addon knows exactly the keys of EngineOptions', async (t) => {
  t.same([...addon.engineOptionKeys].sort(), Object.keys(ALL).sort())
})

t.test('a complete set of options is taken', async (t) => {
  t.doesNotThrow(() => make({ ...valid() }))
})

t.test('an unknown key is refused by name', async (t) => {
  t.throws(() => make({ ...valid(), highWatermark: 1 }), { message: /engine option highWatermark: unknown/ })
})

t.test('a missing required key is refused by name', async (t) => {
  for (const key of ['maxFrameBytes', 'maxPingsPerSecond', 'consumers', 'auth', 'incarnationHi'] as const) {
    const o: Record<string, unknown> = { ...valid() }
    delete o[key]
    t.throws(() => make(o), { message: new RegExp(`engine option ${key}: missing`) }, key)
  }
})

t.test('a value of the wrong type is refused by name', async (t) => {
  t.throws(() => make({ ...valid(), maxFrameBytes: '16' }), { message: /engine option maxFrameBytes: expected a number/ })
  t.throws(() => make({ ...valid(), ioThreads: -1 }), { message: /engine option ioThreads/ })
  t.throws(() => make({ ...valid(), ordered: 1 }), { message: /engine option ordered: expected a boolean/ })
  t.throws(() => make({ ...valid(), auth: 'tls' }), { message: /engine option auth: expected 'seal', 'mac' or 'none'/ })
  t.throws(() => make({ ...valid(), auth: 'seal' }), { message: /privateKey/ }, "auth 'seal' needs its keys")
  t.throws(() => make({ ...valid(), auth: 'mac' }), { message: /privateKey/ }, "auth 'mac' needs its keys")
  t.throws(() => make({ ...valid(), privateKey: new Uint8Array(32) }), { message: /privateKey/ }, "keys without auth 'mac'")
  t.throws(() => make({ ...valid(), auth: 'mac', privateKey: new Uint8Array(31), publicKeys: [] }), { message: /privateKey: expected 32 bytes/ })
})

t.test('lib/wire.ts says what the core does (checked at load too)', async (t) => {
  const wire = (await import('../lib/wire.js')) as unknown as Record<string, unknown>
  const names = Object.keys(addon.wire)
  t.ok(names.length >= 19, `the addon exports its wire constants (${names.length})`)
  for (const name of names) t.equal(wire[name], addon.wire[name], name)
})
