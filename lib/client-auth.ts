// The client side of a client key (docs/PROTOCOL.md §6a): the keyed
// CLIENT_HELLO, the replica's proof checked (when its key is known), the
// session keys, the AUTH frame, and the sealed batches both ways (a SEAL
// frame after each batch: AES-256-GCM over no plaintext, the batch's bytes
// as additional data, the batch number as nonce), as the replica's native
// code does them (native/core/auth.cpp).
import { type CipherGCM, type KeyObject, createCipheriv, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, sign, timingSafeEqual, verify } from 'node:crypto'

import { InvalidArgumentError } from './errors.js'
import { HEADER_BYTES, HELLO_CLIENT, KIND_AUTH, KIND_SEAL, HELLO_FIXED_BYTES, HELLO_MAGIC, OFFSET_KIND, OFFSET_MSG_ID, OFFSET_SENDER, PROTOCOL_VERSION } from './wire.js'

export const TAG_BYTES = 16
export const SEAL_FRAME_BYTES = HEADER_BYTES + TAG_BYTES
/** The client seals at least this often: no frame starts further into a batch (§6a). */
export const CLIENT_SEAL_BATCH_BYTES = 64 * 1024
/** A replica seals at least this often (at a frame boundary), §2a. */
const SEAL_BATCH_BYTES = 256 * 1024
const NONCE = 32
/** Bytes held unsealed before a replica's batch is refused (one reply frame, MAX_REPLY_BYTES, past a full batch). */
const MAX_UNSEALED_BYTES = 1024 * 1024 * 1024 + 2 * SEAL_BATCH_BYTES
const HELLO_KEY_BYTES = 96
/** CLIENT_WELCOME's §6a part after the limits: nonce_R | X_R | sig_R. */
export const WELCOME_KEY_BYTES = 128

const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex')

/** An Ed25519 key as the client holds it. */
export interface ClientKeyPair {
  privateKey: KeyObject
  publicKey: Uint8Array
}

export function clientKeyPair(seed: Uint8Array): ClientKeyPair {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' })
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' }) as { x?: string }
  return { privateKey, publicKey: new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url')) }
}

/** A client's stable id: its public key, base64url (as `generateKeyPair()` prints it). */
export function clientIdOf(publicKey: Uint8Array): string {
  return Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64url')
}

/** The key a client id names (`clientIdOf`'s inverse); INVALID_ARGUMENT naming `field` otherwise. */
export function clientKeyOf(field: string, id: unknown): Uint8Array {
  if (typeof id === 'string' && /^[A-Za-z0-9_-]{43}$/.test(id)) return new Uint8Array(Buffer.from(id, 'base64url'))
  throw new InvalidArgumentError(field, 'a client id (ctx.client.id: a public key in base64url, 43 characters)', id)
}

/** One handshake in progress. */
export interface KeyedHello {
  hello: Buffer
  nonce: Buffer
  eph: KeyObject
  ephPublic: Buffer
}

/** CLIENT_HELLO with auth 1: cluster id | nonce_C | X_C | P_C. */
export function keyedHello(clusterId: string, key: ClientKeyPair): KeyedHello {
  const cid = Buffer.from(clusterId, 'utf8')
  const { privateKey: eph, publicKey } = generateKeyPairSync('x25519')
  const ephPublic = Buffer.from((publicKey.export({ format: 'jwk' }) as { x?: string }).x ?? '', 'base64url')
  const nonce = randomBytes(NONCE)
  const h = Buffer.alloc(HELLO_FIXED_BYTES + cid.length + HELLO_KEY_BYTES)
  h.writeUInt32LE(HELLO_MAGIC, 0)
  h.writeUInt16LE(PROTOCOL_VERSION, 4)
  h.writeUInt16LE(HELLO_CLIENT, 6)
  h.writeUInt16LE(1, 8)
  h[10] = cid.length
  h.writeUInt32LE(cid.length + HELLO_KEY_BYTES, 24)
  cid.copy(h, HELLO_FIXED_BYTES)
  let at = HELLO_FIXED_BYTES + cid.length
  nonce.copy(h, at)
  ephPublic.copy(h, (at += NONCE))
  Buffer.from(key.publicKey).copy(h, at + NONCE)
  return { hello: h, nonce, eph, ephPublic }
}

/** What the CLIENT_WELCOME said, for the §6a proof. */
export interface WelcomeProof {
  clusterId: Buffer
  replicaId: number
  connectionId: bigint
  /** nonce_R | X_R | sig_R. */
  ext: Buffer
}

/** The sealed session after the handshake. */
export interface KeyedSession {
  /** The AUTH frame to write before any batch. */
  authFrame: Buffer
  sealer: Sealer
  opener: Opener
}

/**
 * Checks the replica's proof (when `replicaKey` is known) and derives the
 * session. Returns the reason as a string when the handshake fails.
 */
export function finishKeyed(h: KeyedHello, key: ClientKeyPair, w: WelcomeProof, replicaKey: Uint8Array | undefined): KeyedSession | string {
  const nonceR = w.ext.subarray(0, NONCE)
  const ephR = w.ext.subarray(NONCE, 2 * NONCE)
  const sigR = w.ext.subarray(2 * NONCE, 2 * NONCE + 64)
  const t = Buffer.alloc(22 + 2 + 1 + w.clusterId.length + 24 + 4 * NONCE)
  let p = t.write('nexres-rpc/1 handshake', 0, 'latin1')
  p = t.writeUInt16LE(PROTOCOL_VERSION, p)
  p = t.writeUInt8(w.clusterId.length, p)
  p += w.clusterId.copy(t, p)
  p = t.writeUInt32LE(0, p)
  p = t.writeUInt32LE(w.replicaId, p)
  p = t.writeBigUInt64LE(0n, p)
  p = t.writeBigUInt64LE(w.connectionId, p)
  p += h.nonce.copy(t, p)
  p += h.ephPublic.copy(t, p)
  p += nonceR.copy(t, p)
  ephR.copy(t, p)
  const signed = Buffer.concat([t, key.publicKey])
  if (replicaKey !== undefined) {
    const pub = createPublicKey({ key: Buffer.concat([SPKI_ED25519, replicaKey]), format: 'der', type: 'spki' })
    if (!verify(null, Buffer.concat([Buffer.from('S'), signed]), pub, sigR)) {
      return sigR.every((b) => b === 0)
        ? `replica ${w.replicaId} has no key to prove itself with (auth 'none'), but this client was given its publicKey`
        : `replica ${w.replicaId} did not prove the key this client holds for it: wrong publicKey, or not that replica`
    }
  }
  let shared: Buffer
  try {
    const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: ephR.toString('base64url') }, format: 'jwk' })
    shared = diffieHellman({ privateKey: h.eph, publicKey: peer })
  } catch {
    return 'the replica sent a bad ephemeral key'
  }
  if (shared.every((b) => b === 0)) return 'the replica sent a bad ephemeral key'
  const okm = Buffer.from(hkdfSync('sha256', shared, Buffer.concat([h.nonce, nonceR]), Buffer.concat([Buffer.from('nexres-rpc/1 session keys', 'latin1'), t]), 64))
  const authFrame = Buffer.alloc(HEADER_BYTES + 64)
  authFrame.writeUInt32LE(64, 0)
  authFrame[OFFSET_KIND] = KIND_AUTH
  sign(null, Buffer.concat([Buffer.from('C'), signed]), key.privateKey).copy(authFrame, HEADER_BYTES)
  return { authFrame, sealer: new Sealer(okm.subarray(0, 32)), opener: new Opener(okm.subarray(32, 64), w.replicaId) }
}

function nonceOf(seq: number): Buffer {
  const iv = Buffer.alloc(12)
  iv.writeBigUInt64BE(BigInt(seq), 4)
  return iv
}

/** Tags each batch the client writes (§2a "Sealed batches", sender 0). */
export class Sealer {
  private seq = 0
  constructor(private readonly key: Buffer) {}

  /** The SEAL frame closing a batch made of `parts`. */
  seal(parts: readonly Uint8Array[]): Buffer {
    const f = Buffer.alloc(SEAL_FRAME_BYTES)
    this.sealInto(parts, f, 0)
    return f
  }

  /** Writes the SEAL frame closing a batch made of `parts` at out[at..]. */
  sealInto(parts: readonly Uint8Array[], out: Buffer, at: number): void {
    const c = createCipheriv('aes-256-gcm', this.key, nonceOf(this.seq))
    for (const part of parts) c.setAAD(part)
    c.final()
    out.fill(0, at, at + HEADER_BYTES)
    out.writeUInt32LE(TAG_BYTES, at)
    out[at + OFFSET_KIND] = KIND_SEAL
    out.writeBigUInt64LE(BigInt(this.seq), at + OFFSET_MSG_ID)
    c.getAuthTag().copy(out, at + HEADER_BYTES)
    this.seq++
  }
}

/** Checks the replica's batches: frames are held until their SEAL checks. */
export class Opener {
  private seq = 0
  private cipher: CipherGCM
  private held: [Buffer, number, number][] = []
  private heldBytes = 0
  // Bytes of the batch not yet given to the MAC: runBuf[runStart..runEnd).
  private runBuf: Buffer | undefined
  private runStart = 0
  private runEnd = 0

  constructor(
    private readonly key: Buffer,
    private readonly replicaId: number,
  ) {
    this.cipher = createCipheriv('aes-256-gcm', key, nonceOf(0))
  }

  /**
   * One whole frame (at buf[p..], `len` body bytes). Returns the frames its
   * SEAL released (null: not a SEAL, held), or a string when the batch fails.
   */
  frame(buf: Buffer, p: number, len: number): [Buffer, number, number][] | null | string {
    if (buf[p + OFFSET_KIND] !== KIND_SEAL) {
      // Frames that follow each other in one buffer go to the MAC as one
      // range (a setAAD per frame cost a microsecond each).
      const end = p + HEADER_BYTES + len
      if (buf === this.runBuf && p === this.runEnd) this.runEnd = end
      else {
        this.feedRun()
        this.runBuf = buf
        this.runStart = p
        this.runEnd = end
      }
      this.held.push([buf, p, len])
      // A replica seals at least every 256 KiB, after at most one larger frame.
      this.heldBytes += HEADER_BYTES + len
      if (this.heldBytes > MAX_UNSEALED_BYTES) return 'more than a batch from the replica without a SEAL'
      return null
    }
    if (len !== TAG_BYTES || buf.readBigUInt64LE(p + OFFSET_MSG_ID) !== BigInt(this.seq) || buf.readUInt32LE(p + OFFSET_SENDER) !== this.replicaId) {
      return 'a SEAL frame out of sequence'
    }
    this.feedRun()
    this.cipher.final()
    const ok = timingSafeEqual(this.cipher.getAuthTag(), buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + TAG_BYTES))
    this.seq++
    this.cipher = createCipheriv('aes-256-gcm', this.key, nonceOf(this.seq))
    if (!ok) return 'a batch from the replica failed its MAC check (BAD_MAC)'
    const out = this.held
    this.held = []
    this.heldBytes = 0
    return out
  }

  private feedRun(): void {
    if (this.runBuf === undefined) return
    this.cipher.setAAD(this.runBuf.subarray(this.runStart, this.runEnd))
    this.runBuf = undefined
  }
}
