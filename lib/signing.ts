// Checking a signed broadcast anywhere (e.g. a proof forwarded by another
// replica or kept in a log): the same bytes the sender signed
// (docs/PROTOCOL.md §3 "Signed frames"), its public key from the cluster.
import { createPublicKey, verify } from 'node:crypto'

import { type ClusterConfig, decodeKey } from './config.js'
import { routeId } from './route.js'

const LABEL = Buffer.from('nexres-rpc/1 signed', 'latin1')

/** What a signed message carries (a `Message` with a `signature` has all of it). */
export interface SignedMessage {
  /** Replica id of the signer. */
  from: number
  /** Route name (or its numeric route id). */
  route: string | number
  payload: Uint8Array
  signature: Uint8Array
}

/** The exact bytes a replica signs for a broadcast with `{ sign: true }`. */
export function signedBytes(clusterId: string, msg: Omit<SignedMessage, 'signature'>): Buffer {
  const cid = Buffer.from(clusterId, 'utf8')
  const ids = Buffer.alloc(8)
  ids.writeUInt32LE(msg.from >>> 0, 0)
  ids.writeUInt32LE(typeof msg.route === 'number' ? msg.route >>> 0 : routeId(msg.route), 4)
  return Buffer.concat([LABEL, Buffer.from([cid.length]), cid, ids, msg.payload])
}

/**
 * True when `msg.signature` is `msg.from`'s signature (its public key from
 * `cluster.replicas[].publicKey`) over the message in this cluster. False
 * for any other signature, an unknown sender or a sender without a key.
 */
export function verifySigned(cluster: ClusterConfig, msg: SignedMessage): boolean {
  const r = cluster.replicas.find((x) => x.id === msg.from)
  if (r === undefined || r.publicKey === undefined || msg.signature.length !== 64) return false
  const raw = decodeKey('publicKey', r.publicKey)
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' })
  return verify(null, signedBytes(cluster.id, msg), key, msg.signature)
}
