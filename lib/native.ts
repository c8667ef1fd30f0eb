// The addon's exact shape. Nothing else in lib/ loads the addon.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { ENGINE_INTEGER_KEYS, type EngineIntegers } from './engine-options.js'
import type { PeerEntry } from './config.js'
import type { ClientConnectionStats, PeerStats } from './stats.js'
import * as wire from './wire.js'

/** What the addon's Engine takes: the engine's integers (engine-options.ts) and these. */
export interface EngineOptions extends EngineIntegers {
  selfId: number
  clusterId: string
  replicas: { id: number; host: string; port: number }[]
  /** The configuration epoch at start. */
  epoch: number
  /** Replicas of remote clusters (with their keys under auth 'mac'/'seal'). */
  remotePeers: PeerEntry[]
  listenHost?: string
  chunkBytes: number
  highWaterBytes: number
  reconnectMinMs: number
  reconnectMaxMs: number
  clientPort?: number
  clientHost?: string
  incarnationLo: number
  incarnationHi: number
  /** Replica connections: 'mac' and 'seal' need privateKey (32-byte seed) and every peer's public key. */
  auth: 'seal' | 'mac' | 'none'
  clientAuth?: 'none' | 'key'
  clientSeal?: 'optional' | 'required'
  allowClientHook?: boolean
  privateKey?: Uint8Array
  publicKeys?: { id: number; key: Uint8Array }[]
  /** Worker consumers taking deliveries instead of onBatch (0: none). */
  consumers: number
  /** With consumers: one consumer at a time per peer / client connection. */
  ordered: boolean
}

/** [slot, id, cluster ('' for this replica's), in the configuration now] */
export type PeerSlotEntry = [number, number, string, boolean]

/** [chunkId, ArrayBuffer, pooled] triples for chunks JS has not seen yet. */
export type FreshChunks = (number | ArrayBuffer | boolean)[]

/** [type, peer, code, reason, remote, messages, bytes, firstId, lastId] */
export type RawEvent = [number, number, string, string, string, number, number, number, number]

/** Peer statistics as the addon reports them (stats.ts). */
export type NativePeerStats = PeerStats

export interface NativeStats {
  epoch?: number
  peers?: NativePeerStats[]
  rejects?: number
  rejectsByReason?: Record<string, number>
  miqDepth?: number
  receiveBytesAllocated?: number
  clientReceiveBytesAllocated?: number
  clientsOpen?: number
  clientsAccepted?: number
  replyBytes?: number
  repliesDropped?: number
  clients?: ClientConnectionStats[]
}

/** The send side every JS thread has (the main Engine and each worker's Consumer). */
export interface NativeSender {
  /** Queues staged frames: runs hold RUN_FIELDS u32 per run. Refreshes `depths`. */
  flush(staging: Uint8Array, length: number, runs: Uint32Array, runCount: number, externals?: Uint8Array[]): void
  /** Refreshes `depths`; returns the total queued bytes. */
  refreshDepths(): number
  wantDrain(peer: number): void
  /** Remote address of a client connection ('' once gone). */
  clientAddress(connection: number): string
  /** The key a client connection proved (PROTOCOL.md §6a), a copy; undefined without one. */
  clientKey(connection: number): Uint8Array | undefined
  /** The connection a client key is reached on: its id; 0 when none is open, -1 when its unread replies are over the bound. */
  clientConnection(key: Uint8Array): number
  /** allowClient's answer for a connection waiting in its handshake (EVENT_CLIENT_AUTH). */
  allowClient(connection: number, allow: boolean, reason: string): void
  /** Last message id given natively at flush (with consumers); 0 before any. */
  lastId(): number
  /** The handlers of a run that onBatch returned as held have settled: release it (ACK, chunk). */
  settle?(token: number): void
  /** Every peer slot in use: [slot, id, cluster ('' for this cluster), member]. */
  peers(): PeerSlotEntry[]
}

export interface NativeEngine extends NativeSender {
  /** Binds and starts io threads; returns the bound port. Throws with code LISTEN_FAILED. */
  start(): number
  /** The bound client port, 0 when there is none. */
  clientPort(): number
  stats(): NativeStats
  /** Key under which worker threads attach Consumers (options.consumers > 0, running). */
  shareKey(): number
  /** engine::reconfigure: throws (an Error with the engine's reason) when refused, nothing changed. */
  reconfigure(m: { epoch: number; peers: PeerEntry[]; privateKey?: Uint8Array }): void
  stop(): void
}

/** A worker thread's share of an engine. */
export interface NativeConsumer extends NativeSender {
  /** Starts taking deliveries (handlers registered by then). */
  start(): void
  /** Detaches: what it held goes to the other consumers. */
  stop(): void
}

export interface NativeConsumerConstructor {
  new (
    key: number,
    index: number,
    meta: Uint32Array,
    depths: Float64Array,
    onBatch: (count: number, fresh: FreshChunks | undefined) => number | number[],
  ): NativeConsumer
}

export interface NativeEngineConstructor {
  new (
    options: EngineOptions,
    meta: Uint32Array,
    depths: Float64Array,
    /**
     * Returns how many runs (from the first) were handled; the rest are
     * held, never acknowledged, and nothing more is delivered (close()).
     * Or [handled, entry, token, messages, ...]: the runs whose handlers
     * returned promises, held until settle(token).
     */
    onBatch: (count: number, fresh: FreshChunks | undefined) => number | number[],
    onEvents: (events: RawEvent[]) => void,
  ): NativeEngine
}

export interface NativeAddon {
  Engine: NativeEngineConstructor
  Consumer: NativeConsumerConstructor
  /** Every key of EngineOptions, as the addon's one option table knows them: it refuses any other and a missing required one. */
  engineOptionKeys: string[]
  frameHeaderBytes: number
  protocolVersion: number
  /** The core's wire constants, by the names lib/wire.ts gives them. */
  wire: Record<string, number>
}

const require = createRequire(import.meta.url)
const load = require('node-gyp-build') as (dir: string) => unknown
const root = join(dirname(fileURLToPath(import.meta.url)), '..')

function loadAddon(): NativeAddon {
  try {
    return load(root) as NativeAddon
  } catch (e) {
    // No binary for this platform: say which, and what a source build needs.
    if (e instanceof Error && /No native build was found/.test(e.message)) {
      const help = require('../tools/native-help.cjs') as { missingForSource(): string[]; message(missing: string[]): string; platformName(): string }
      const missing = help.missingForSource()
      const text = missing.length > 0 ? help.message(missing) : `nexres-rpc: no binary for ${help.platformName()} yet: build it with \`npm rebuild nexres-rpc\` (the tools for a source build are there)`
      throw new Error(text, { cause: e })
    }
    throw e
  }
}

export const addon = loadAddon()

// One wire description: lib/wire.ts must say what the core does.
for (const [name, value] of Object.entries(addon.wire)) {
  const mine = (wire as Record<string, unknown>)[name]
  if (mine !== value) {
    throw new Error(`nexres-rpc: lib/wire.ts ${name} is ${String(mine)}, the native addon's is ${value}: the addon and the JS build do not match (rebuild both)`)
  }
}

// One option table: the addon must know every integer option lib/ hands it.
for (const key of ENGINE_INTEGER_KEYS) {
  if (!addon.engineOptionKeys.includes(key)) {
    throw new Error(`nexres-rpc: the native addon has no engine option ${key}: the addon and the JS build do not match (rebuild both)`)
  }
}

/** Event type numbers of RawEvent[0] (engine.hpp event_type). */
export const EVENT_PEER_UP = 1
export const EVENT_PEER_DOWN = 2
export const EVENT_DRAIN = 3
export const EVENT_REJECT = 4
export const EVENT_UNDELIVERED = 5
/** A client proved its key: peer = connection, reason = the key (hex), remote = its address. */
export const EVENT_CLIENT_AUTH = 6
/** A client connection that had requests delivered closed: peer = connection. */
export const EVENT_CLIENT_CLOSED = 7

/** delivery peer / flush destination bit marking a client connection (engine.hpp client_flag). */
export const CLIENT_FLAG = 0x80000000
/** A peer named by its slot (remote peers): SLOT_ADDRESS | slot (engine.hpp slot_address). */
export const SLOT_ADDRESS = 0xc0000000
/** A flush destination: every member of the cluster of slot (value & 0xffff) (engine.hpp cluster_broadcast). */
export const CLUSTER_BROADCAST = 0xe0000000
/** A peer proved a newer configuration epoch: firstId = the epoch. */
export const EVENT_EPOCH_AHEAD = 8
