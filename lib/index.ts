export { Replica } from './replica.js'
export { WorkerReplica } from './worker.js'
export type { WorkerReplicaEvents } from './worker.js'
export type { BatchHandler, BroadcastOptions, Handler, SendAsyncOptions, SendOptions, UnroutedInfo } from './replica-base.js'
export type {
  ClientConnectionStats,
  CloseOptions,
  CloseResult,
  PeerDownInfo,
  PeerStats,
  RejectInfo,
  UndeliveredInfo,
  ReplicaEvents,
  ReplicaStats,
  WaitForPeersOptions,
} from './replica.js'
export { Message, MessageBatch } from './message.js'
export { Client } from './client.js'
export type { CallOptions, ClientEvents, ClientLimits, ClientOptions, Endpoint, PushHandler } from './client.js'
export { RequestContext } from './request.js'
export type { ClientInfo, RequestHandler, RequestOrigin } from './request.js'
export { defineService } from './service.js'
export type {
  AnyCodec,
  MethodDefinition,
  RequestOf,
  ResponseOf,
  ServiceClient,
  ServiceDefinition,
  ServiceImplementation,
} from './service.js'
export * as codecs from './codec.js'
export type { Codec } from './codec.js'
export { routeId } from './route.js'
export { clientIdOf } from './client-auth.js'
export { signedBytes, verifySigned } from './signing.js'
export type { SignedMessage } from './signing.js'
export { generateKeyPair, resolveOptions, validateCluster } from './config.js'
export type { AuthMode, ClusterConfig, ReconnectOptions, ReplicaAddress, ReplicaOptions } from './config.js'
export {
  AbortedError,
  ClosedError,
  ConnectionLostError,
  InvalidArgumentError,
  RemoteError,
  RequestTooLargeError,
  TooManyRequestsError,
  ConfigError,
  ListenError,
  NexresError,
  PayloadTooLargeError,
  QuorumError,
  QueueFullError,
  TimeoutError,
  UnknownPeerError,
} from './errors.js'
export type { ConnectionFailure, ErrorCode, ListenPort, QuorumReply } from './errors.js'
