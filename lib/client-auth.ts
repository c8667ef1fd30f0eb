// The client side of a client key (docs/PROTOCOL.md §6a): the keyed
// CLIENT_HELLO, the replica's proof checked (when its key is known), the
// session keys, the AUTH frame, and the sealed batches both ways (a SEAL
// frame after each batch: AES-256-GCM over no plaintext, the batch's bytes
// as additional data, the batch number as nonce), as the replica's native
// code does them (native/core/auth.cpp). §6b (`seal: true`, with or without
// a key): the same handshake, then every batch both ways encrypted with
// AES-256-GCM (the batch and its SEAL header as plaintext, the tag after
// them in clear), each direction's key ratcheted with HKDF every 65,536
// batches or 1 GiB (§2b).
import {
  type CipherGCM,
  type DecipherGCM,
  type KeyObject,
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  sign,
  timingSafeEqual,
  verify,
} from 'node:crypto'

import { InvalidArgumentError } from './errors.js'
import { HEADER_BYTES, HELLO_CLIENT, KIND_AUTH, KIND_SEAL, KIND_SEALED, HELLO_FIXED_BYTES, HELLO_MAGIC, OFFSET_KIND, OFFSET_MSG_ID, OFFSET_SENDER, PROTOCOL_VERSION } from './wire.js'

/** §2b: a direction's key is ratcheted after this many batches or bytes. */
const REKEY_BATCHES = 65_536
const REKEY_BYTES = 2 ** 30
const REKEY_INFO = Buffer.from('nexres-rpc/1 rekey', 'latin1')

function nextKey(key: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), REKEY_INFO, 32))
}

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

/** CLIENT_HELLO with auth 1 (§6a) or 2 (§6b, `seal`): cluster id | nonce_C | X_C | P_C (zeros without a key). */
export function keyedHello(clusterId: string, key: ClientKeyPair | undefined, seal: boolean): KeyedHello {
  const cid = Buffer.from(clusterId, 'utf8')
  const { privateKey: eph, publicKey } = generateKeyPairSync('x25519')
  const ephPublic = Buffer.from((publicKey.export({ format: 'jwk' }) as { x?: string }).x ?? '', 'base64url')
  const nonce = randomBytes(NONCE)
  const h = Buffer.alloc(HELLO_FIXED_BYTES + cid.length + HELLO_KEY_BYTES)
  h.writeUInt32LE(HELLO_MAGIC, 0)
  h.writeUInt16LE(PROTOCOL_VERSION, 4)
  h.writeUInt16LE(HELLO_CLIENT, 6)
  h.writeUInt16LE(seal ? 2 : 1, 8)
  h[10] = cid.length
  h.writeUInt32LE(cid.length + HELLO_KEY_BYTES, 24)
  cid.copy(h, HELLO_FIXED_BYTES)
  let at = HELLO_FIXED_BYTES + cid.length
  nonce.copy(h, at)
  ephPublic.copy(h, (at += NONCE))
  if (key !== undefined) Buffer.from(key.publicKey).copy(h, at + NONCE)
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
  /** §6b: decrypts what the replica sends before it is parsed. */
  decryptor: Decryptor | undefined
}

/**
 * Checks the replica's proof (when `replicaKey` is known) and derives the
 * session. Returns the reason as a string when the handshake fails.
 */
export function finishKeyed(
  h: KeyedHello,
  key: ClientKeyPair | undefined,
  w: WelcomeProof,
  replicaKey: Uint8Array | undefined,
  seal: boolean,
): KeyedSession | string {
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
  const signed = Buffer.concat([t, key?.publicKey ?? Buffer.alloc(32)])
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
  // §6b without a key: the signature is all zero.
  if (key !== undefined) sign(null, Buffer.concat([Buffer.from('C'), signed]), key.privateKey).copy(authFrame, HEADER_BYTES)
  return {
    authFrame,
    sealer: new Sealer(okm.subarray(0, 32), seal),
    opener: new Opener(okm.subarray(32, 64), w.replicaId, seal),
    decryptor: seal ? new Decryptor(okm.subarray(32, 64), w.replicaId) : undefined,
  }
}

function nonceOf(seq: number): Buffer {
  const iv = Buffer.alloc(12)
  iv.writeBigUInt64BE(BigInt(seq), 4)
  return iv
}

/** Tags (§6a) or encrypts (§6b) each batch the client writes (sender 0). */
export class Sealer {
  private seq = 0
  private key: Buffer
  private batches = 0
  private bytes = 0
  constructor(
    key: Buffer,
    /** §6b: batches are encrypted. */
    readonly encrypt = false,
  ) {
    this.key = key
  }

  private sealHeader(out: Buffer, at: number): void {
    out.fill(0, at, at + HEADER_BYTES)
    out.writeUInt32LE(TAG_BYTES, at)
    out[at + OFFSET_KIND] = KIND_SEAL
    out.writeBigUInt64LE(BigInt(this.seq), at + OFFSET_MSG_ID)
  }

  private next(batchBytes: number): void {
    this.seq++
    if (!this.encrypt) return
    this.batches++
    this.bytes += batchBytes
    if (this.batches >= REKEY_BATCHES || this.bytes >= REKEY_BYTES) {
      this.key = nextKey(this.key)
      this.batches = this.bytes = 0
    }
  }

  /**
   * §6a: the batch staged in stage[0..pos) goes out with its SEAL after it,
   * at stage[pos..pos + SEAL_FRAME_BYTES).
   */
  sealStaged(stage: Buffer, pos: number): void {
    this.sealInto([stage.subarray(0, pos)], stage, pos)
  }

  /**
   * What to write for a batch made of `parts` (left as they are): the parts
   * and their SEAL, or (§6b) the batch's clear SEALED header, the
   * ciphertext of the parts and of their SEAL header, and the tag.
   */
  sealParts(parts: readonly Uint8Array[]): Buffer[] {
    if (!this.encrypt) return [...parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)), this.seal(parts)]
    let n = 0
    for (const part of parts) n += part.byteLength
    const head = Buffer.alloc(HEADER_BYTES)
    head.writeUInt32LE(n + SEAL_FRAME_BYTES, 0)
    head[OFFSET_KIND] = KIND_SEALED
    head.writeBigUInt64LE(BigInt(this.seq), OFFSET_MSG_ID)
    const c = createCipheriv('aes-256-gcm', this.key, nonceOf(this.seq))
    c.setAAD(head)
    const out: Buffer[] = [head]
    for (const part of parts) out.push(c.update(part))
    const tail = Buffer.alloc(SEAL_FRAME_BYTES)
    this.sealHeader(tail, 0)
    c.update(tail.subarray(0, HEADER_BYTES)).copy(tail, 0)
    c.final()
    c.getAuthTag().copy(tail, HEADER_BYTES)
    out.push(tail)
    this.next(n + HEADER_BYTES)
    return out
  }

  /** §6a: the SEAL frame closing a batch made of `parts`. */
  seal(parts: readonly Uint8Array[]): Buffer {
    const f = Buffer.alloc(SEAL_FRAME_BYTES)
    this.sealInto(parts, f, 0)
    return f
  }

  /** §6a: writes the SEAL frame closing a batch made of `parts` at out[at..]. */
  sealInto(parts: readonly Uint8Array[], out: Buffer, at: number): void {
    const c = createCipheriv('aes-256-gcm', this.key, nonceOf(this.seq))
    for (const part of parts) c.setAAD(part)
    c.final()
    this.sealHeader(out, at)
    c.getAuthTag().copy(out, at + HEADER_BYTES)
    this.next(0)
  }
}

/**
 * §6b: decrypts the replica's batches as their bytes arrive: each batch's
 * clear SEALED header says how long it is, and everything of it that has
 * arrived is decrypted at once, in place. What it passes on is plaintext
 * frames; a batch's SEAL frame only once the batch's tag checked (the
 * Opener holds the batch's frames until then).
 */
export class Decryptor {
  private seq = 0
  private key: Buffer
  private d: DecipherGCM | undefined
  private batches = 0
  private bytes = 0
  private state: 'head' | 'body' | 'tag' = 'head'
  private readonly head = Buffer.alloc(HEADER_BYTES)
  private have = 0
  /** Ciphertext of the batch not yet decrypted (frames and SEAL header). */
  private left = 0
  private batchBytes = 0
  /** The batch's SEAL header and tag, passed on once the tag checks. */
  private seal = Buffer.alloc(SEAL_FRAME_BYTES)

  constructor(
    key: Buffer,
    private readonly replicaId: number,
  ) {
    this.key = key
  }

  /**
   * Decrypts `buf` in place and passes its plaintext on to `emit` (frames,
   * in order). Returns the reason the stream failed, if it did: nothing of
   * the failed batch past its frames was passed on, and its SEAL never.
   */
  feed(buf: Buffer, emit: (plain: Buffer) => void): string | undefined {
    let i = 0
    while (i < buf.length) {
      if (this.state === 'head') {
        const n = Math.min(buf.length - i, HEADER_BYTES - this.have)
        buf.copy(this.head, this.have, i, i + n)
        i += n
        this.have += n
        if (this.have < HEADER_BYTES) break
        this.have = 0
        const len = this.head.readUInt32LE(0)
        if (
          this.head[OFFSET_KIND] !== KIND_SEALED ||
          this.head.readBigUInt64LE(OFFSET_MSG_ID) !== BigInt(this.seq) ||
          this.head.readUInt32LE(OFFSET_SENDER) !== this.replicaId ||
          len < SEAL_FRAME_BYTES
        ) {
          return 'a sealed batch out of sequence (BAD_MAC)'
        }
        if (len - SEAL_FRAME_BYTES > MAX_UNSEALED_BYTES) return 'more than a batch from the replica without a SEAL'
        this.d = createDecipheriv('aes-256-gcm', this.key, nonceOf(this.seq))
        this.d.setAAD(this.head)
        this.left = len - TAG_BYTES
        this.batchBytes = this.left
        this.state = 'body'
        continue
      }
      const d = this.d as DecipherGCM
      if (this.state === 'body') {
        const n = Math.min(buf.length - i, this.left)
        const plain = d.update(buf.subarray(i, i + n))
        // The batch's last HEADER_BYTES are its SEAL header: kept back.
        const frames = Math.max(0, Math.min(n, this.left - HEADER_BYTES))
        if (frames > 0) emit(plain.subarray(0, frames))
        if (frames < n) plain.copy(this.seal, HEADER_BYTES - (this.left - frames), frames, n)
        i += n
        this.left -= n
        if (this.left === 0) this.state = 'tag'
        continue
      }
      const n = Math.min(buf.length - i, SEAL_FRAME_BYTES - this.left - HEADER_BYTES)
      buf.copy(this.seal, HEADER_BYTES + this.left, i, i + n)
      i += n
      this.left += n
      if (this.left < TAG_BYTES) break
      d.setAuthTag(this.seal.subarray(HEADER_BYTES))
      try {
        d.final()
      } catch {
        return 'a batch from the replica failed its check (BAD_MAC)'
      }
      emit(this.seal)
      this.seal = Buffer.alloc(SEAL_FRAME_BYTES)
      this.nextBatch()
    }
    return undefined
  }

  private nextBatch(): void {
    this.seq++
    this.batches++
    this.bytes += this.batchBytes
    this.left = 0
    this.d = undefined
    this.state = 'head'
    if (this.batches >= REKEY_BATCHES || this.bytes >= REKEY_BYTES) {
      this.key = nextKey(this.key)
      this.batches = this.bytes = 0
    }
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
    /** §6b: the Decryptor checked each batch before its SEAL frame gets here. */
    private readonly decrypted = false,
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
      if (this.decrypted) {
        // Checked upstream: nothing to feed.
      } else if (buf === this.runBuf && p === this.runEnd) this.runEnd = end
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
    this.seq++
    if (!this.decrypted) {
      this.feedRun()
      this.cipher.final()
      const ok = timingSafeEqual(this.cipher.getAuthTag(), buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + TAG_BYTES))
      this.cipher = createCipheriv('aes-256-gcm', this.key, nonceOf(this.seq))
      if (!ok) return 'a batch from the replica failed its MAC check (BAD_MAC)'
    }
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
