// Checking a signed broadcast anywhere (e.g. a proof forwarded by another
// replica or kept in a log): the same bytes the sender signed
// (docs/PROTOCOL.md §3 "Signed frames"), its public key from the cluster.
import { createPublicKey, verify } from 'node:crypto'

import { checkReplicaId, isBytes, sizeOf, viewBytes } from './args.js'
import { type ClusterConfig, decodeKey } from './config.js'
import { InvalidArgumentError } from './errors.js'
import { routeId } from './route.js'

const LABEL = Buffer.from('nexres-rpc/1 signed', 'latin1')

/** What a signed message carries (a `Message` with a `signature` has all of it). */
export interface SignedMessage {
  /** Replica id of the signer. */
  from: number
  /** Route name (or its numeric route id). */
  route: string | number
  /** The sender's message id (`msg.id`). */
  id: number | bigint
  /** The sender's incarnation it was signed under (`msg.incarnation`). */
  incarnation: bigint
  payload: Uint8Array
  signature: Uint8Array
}

/** The exact bytes a replica signs for a message sent with `{ sign: true }`. */
export function signedBytes(clusterId: string, msg: Omit<SignedMessage, 'signature'>): Buffer {
  if (typeof clusterId !== 'string' || clusterId.length === 0 || Buffer.byteLength(clusterId) > 255) {
    throw new InvalidArgumentError('clusterId', 'a cluster id (1-255 bytes of UTF-8)', clusterId)
  }
  const { from, route, id, incarnation, payload } = checkMessage(msg)
  const cid = Buffer.from(clusterId, 'utf8')
  const ids = Buffer.alloc(24)
  ids.writeUInt32LE(from, 0)
  ids.writeUInt32LE(typeof route === 'number' ? route : routeId(route), 4)
  ids.writeBigUInt64LE(id, 8)
  ids.writeBigUInt64LE(incarnation, 16)
  return Buffer.concat([LABEL, Buffer.from([cid.length]), cid, ids, payload])
}

const U64_MAX = 2n ** 64n - 1n

function checkMessage(msg: unknown): { from: number; route: string | number; id: bigint; incarnation: bigint; payload: Uint8Array } {
  if (typeof msg !== 'object' || msg === null) throw new InvalidArgumentError('msg', 'an object { from, route, id, incarnation, payload }', msg)
  const m = msg as { from?: unknown; route?: unknown; id?: unknown; incarnation?: unknown; payload?: unknown }
  checkReplicaId('msg.from', m.from)
  const id = m.id
  const okId = (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) || (typeof id === 'bigint' && id >= 0n && id <= U64_MAX)
  if (!okId) throw new InvalidArgumentError('msg.id', "the message id (msg.id: an integer >= 0)", id)
  const inc = m.incarnation
  if (typeof inc !== 'bigint' || inc < 0n || inc > U64_MAX) throw new InvalidArgumentError('msg.incarnation', "the sender's incarnation (msg.incarnation: a bigint)", inc)
  const route = m.route
  if (!(typeof route === 'string' && route.length > 0) && !(typeof route === 'number' && Number.isInteger(route) && route >= 0 && route <= 0xffffffff)) {
    throw new InvalidArgumentError('msg.route', 'a route name or a route id (an integer in [0, 2^32 - 1])', route)
  }
  const payload = isBytes(m.payload) ? m.payload : viewBytes('msg.payload', m.payload, 'a Uint8Array (or another ArrayBufferView)')
  return { from: m.from, route, id: BigInt(id as number | bigint), incarnation: inc, payload }
}

/**
 * True when `msg.signature` is `msg.from`'s signature (its public key from
 * `cluster.replicas[].publicKey`) over the message in this cluster. False
 * for any other signature, an unknown sender or a sender without a key.
 */
export function verifySigned(cluster: ClusterConfig, msg: SignedMessage): boolean {
  if (typeof cluster !== 'object' || cluster === null || typeof cluster.id !== 'string' || !Array.isArray(cluster.replicas)) {
    throw new InvalidArgumentError('cluster', 'a cluster configuration { id, replicas }', cluster)
  }
  const { from } = checkMessage(msg)
  const sig = msg.signature as unknown
  const signature = isBytes(sig) ? sig : viewBytes('msg.signature', sig, 'a Uint8Array (or another ArrayBufferView) of 64 bytes')
  const r = cluster.replicas.find((x) => x?.id === from)
  if (r === undefined || r.publicKey === undefined || sizeOf(signature) !== 64) return false
  const raw = decodeKey('publicKey', r.publicKey)
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' })
  return verify(null, signedBytes(cluster.id, msg), key, signature)
}
