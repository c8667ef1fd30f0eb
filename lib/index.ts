export { Replica } from './replica.js'
export type {
  CloseResult,
  Handler,
  PeerDownInfo,
  PeerStats,
  RejectInfo,
  ReplicaEvents,
  ReplicaStats,
} from './replica.js'
export { Message } from './message.js'
export { routeId } from './route.js'
export { resolveOptions, validateCluster } from './config.js'
export type { ClusterConfig, ReconnectOptions, ReplicaAddress, ReplicaOptions } from './config.js'
export {
  ClosedError,
  ConfigError,
  ListenError,
  NexresError,
  PayloadTooLargeError,
  QueueFullError,
  TimeoutError,
  UnknownPeerError,
} from './errors.js'
export type { ErrorCode } from './errors.js'
