// The integer options a replica hands its engine unchanged: the same name
// in ReplicaOptions, in the resolved options and in the addon's one option
// table (native/addon/options.cpp). This is the one place their limits and
// defaults live: adding one is a row here, its documented field in
// ReplicaOptions (config.ts), its row in options.cpp and its field in the
// core's engine_options. lib/native.ts checks at load that the addon knows
// every key here.
const MiB = 1024 * 1024

/** [min, max, default] of each. */
export const ENGINE_INTEGER_OPTIONS = {
  ioThreads: [1, 64, 2],
  ioSpinMicros: [0, 10_000, 0],
  maxFrameBytes: [1, 1024 * MiB, 16 * MiB],
  handshakeTimeoutMs: [1, 600_000, 5000],
  maxChunksPerConnection: [2, 1024, 8],
  maxReceiveBytes: [4 * MiB, 2 ** 40, 512 * MiB],
  maxClientReceiveBytes: [MiB, 2 ** 40, 64 * MiB],
  maxPendingHandlers: [1, 10_000_000, 1024],
  sendBufferBytes: [0, 256 * MiB, 4 * MiB],
  receiveBufferBytes: [0, 256 * MiB, 0],
  maxRequestBytes: [1, 1024 * MiB, 4 * MiB],
  maxClientInFlight: [1, 1_000_000, 1024],
  clientIdleTimeoutMs: [0, 3_600_000, 60_000],
  maxClientConnections: [1, 1_000_000, 10_000],
  maxClientKeyConnections: [1, 1_000_000, 64],
  maxClientKeyInFlight: [1, 100_000_000, 4096],
  handshakesPerSecondPerAddress: [0, 1_000_000, 100],
  handshakesPerSecond: [0, 10_000_000, 2000],
  heartbeatIntervalMs: [0, 600_000, 1000],
  heartbeatTimeoutMs: [0, 3_600_000, 5000],
  peerDownDeadlineMs: [0, 86_400_000, 0],
  maxReplicaConnections: [1, 1_000_000, 1024],
  maxConnectionsPerAddress: [1, 1_000_000, 64],
  frameReadTimeoutMs: [0, 3_600_000, 10_000],
  maxPingsPerSecond: [0, 1_000_000, 100],
  maxPeers: [1, 65_536, 256],
} as const satisfies Record<string, readonly [number, number, number]>

export type EngineIntegerOption = keyof typeof ENGINE_INTEGER_OPTIONS
export type EngineIntegers = { [K in EngineIntegerOption]: number }

export const ENGINE_INTEGER_KEYS = Object.keys(ENGINE_INTEGER_OPTIONS) as EngineIntegerOption[]

/** The engine's integers out of the resolved options. */
export function engineIntegers(o: EngineIntegers): EngineIntegers {
  const out = {} as EngineIntegers
  for (const k of ENGINE_INTEGER_KEYS) out[k] = o[k]
  return out
}
