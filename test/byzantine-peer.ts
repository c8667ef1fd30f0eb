// A replica written from scratch in the test, speaking the wire protocol of
// docs/PROTOCOL.md with auth mode `mac` (node:crypto for Ed25519, X25519,
// HKDF and AES-256-GCM): it completes the handshake with a real key and
// then writes whatever frames a test wants — a Byzantine cluster member, or
// (with a wrong key) an impostor.
import {
  createCipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  sign,
} from 'node:crypto'
import { type Socket, connect } from 'node:net'

import * as wire from '../lib/wire.js'
import { KIND_AUTH, KIND_REJECT, KIND_SEAL, frameHeader, hello } from './wire-peer.js'

const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')

// One buffered reader per socket: bytes not yet asked for stay here.
const readers = new WeakMap<Socket, { buf: Buffer; ended: boolean; wake: (() => void)[] }>()

function reader(sock: Socket): { buf: Buffer; ended: boolean; wake: (() => void)[] } {
  let r = readers.get(sock)
  if (r === undefined) {
    const st = { buf: Buffer.alloc(0), ended: false, wake: [] as (() => void)[] }
    const notify = (): void => {
      for (const w of st.wake.splice(0)) w()
    }
    sock.on('data', (d: Buffer) => {
      st.buf = Buffer.concat([st.buf, d])
      notify()
    })
    sock.on('close', () => {
      st.ended = true
      notify()
    })
    readers.set(sock, st)
    r = st
  }
  return r
}

/** Reads exactly n bytes (or rejects when the socket ends first). */
export async function readExactly(sock: Socket, n: number, ms = 5000): Promise<Buffer> {
  const r = reader(sock)
  const end = Date.now() + ms
  while (r.buf.length < n) {
    if (r.ended) throw new Error(`connection ended after ${r.buf.length} of ${n} bytes`)
    const left = end - Date.now()
    if (left <= 0) throw new Error(`timed out reading ${n} bytes (have ${r.buf.length})`)
    await new Promise<void>((res) => {
      const timer = setTimeout(res, left)
      r.wake.push(() => {
        clearTimeout(timer)
        res()
      })
    })
  }
  const out = r.buf.subarray(0, n)
  r.buf = r.buf.subarray(n)
  return out
}

/** The reason code of a REJECT frame read from the socket (rejects if the peer closed without one). */
export async function readReject(sock: Socket, ms = 5000): Promise<{ code: number; text: string }> {
  for (;;) {
    const h = await readExactly(sock, 24, ms)
    const len = h.readUInt32LE(0)
    const body = len > 0 ? await readExactly(sock, len, ms) : Buffer.alloc(0)
    if (h[12] === KIND_REJECT) return { code: body.readUInt16LE(0), text: body.subarray(2).toString() }
  }
}

export interface AuthenticatedPeer {
  socket: Socket
  /** Writes frames as one batch followed by its SEAL (or with `seal: false`, unsealed). */
  send(frames: Buffer[], opts?: { seal?: boolean }): Buffer
  /** The next batch number this side will seal. */
  seq: bigint
  /** The incarnation this side claimed in its HELLO. */
  incarnation: bigint
  close(): void
}

function ed25519Key(seed: Uint8Array): ReturnType<typeof createPrivateKey> {
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, Buffer.from(seed)]), format: 'der', type: 'pkcs8' })
}

export function seedOf(key: string | Uint8Array): Buffer {
  if (typeof key !== 'string') return Buffer.from(key)
  return /^[0-9a-f]{64}$/i.test(key) ? Buffer.from(key, 'hex') : Buffer.from(key, 'base64url')
}

export function gmac(key: Buffer, seq: bigint, data: Buffer): Buffer {
  const iv = Buffer.alloc(12)
  iv.writeBigUInt64BE(seq, 4)
  const c = createCipheriv('aes-256-gcm', key, iv)
  c.setAAD(data)
  c.final()
  return c.getAuthTag()
}

/**
 * Dials a replica's port as replica `sender` and completes the `mac`
 * handshake with `privateKey` (the real one: a Byzantine member; another: an
 * impostor, refused at the AUTH step).
 */
export async function connectAuthenticated(opts: {
  port: number
  clusterId: string
  /** The responder's cluster when it is another one (a remote link). */
  responderClusterId?: string
  sender: number
  responder: number
  privateKey: string | Uint8Array
}): Promise<AuthenticatedPeer> {
  const sock = connect(opts.port, '127.0.0.1')
  reader(sock)
  await new Promise<void>((res, rej) => {
    sock.once('connect', () => res())
    sock.once('error', rej)
  })
  sock.on('error', () => undefined)
  const cid = Buffer.from(opts.clusterId, 'utf8')
  const nonceI = randomBytes(32)
  const eph = generateKeyPairSync('x25519')
  const ephPub = Buffer.from((eph.publicKey.export({ format: 'jwk' }) as { x: string }).x, 'base64url')
  const incI = BigInt('0x' + randomBytes(8).toString('hex'))
  sock.write(hello({ sender: opts.sender, clusterId: opts.clusterId, auth: 1, ext: Buffer.concat([nonceI, ephPub]), incarnation: incI }))
  const fixed = await readExactly(sock, 32)
  if (fixed.readUInt32LE(0) !== wire.HELLO_MAGIC) throw new Error('no WELCOME')
  const incR = fixed.readBigUInt64LE(16)
  const body = await readExactly(sock, fixed.readUInt32LE(24))
  const rcid = Buffer.from(opts.responderClusterId ?? opts.clusterId, 'utf8')
  const x = body.subarray(rcid.length)
  const nonceR = x.subarray(0, 32)
  const ephR = x.subarray(32, 64)
  const v = Buffer.alloc(2)
  v.writeUInt16LE(1)
  const ids = Buffer.alloc(24)
  ids.writeUInt32LE(opts.sender, 0)
  ids.writeUInt32LE(opts.responder, 4)
  ids.writeBigUInt64LE(incI, 8)
  ids.writeBigUInt64LE(incR, 16)
  // Replica links add the responder's cluster id and both epochs (PROTOCOL.md §2a); this peer is on epoch 0.
  const epochs = Buffer.alloc(8)
  epochs.writeUInt32LE(fixed.readUInt32LE(28), 4)
  const t = Buffer.concat([Buffer.from('nexres-rpc/1 handshake'), v, Buffer.from([cid.length]), cid, ids, Buffer.from([rcid.length]), rcid, epochs, nonceI, ephPub, nonceR, ephR])
  const sig = sign(null, Buffer.concat([Buffer.from('I'), t]), ed25519Key(seedOf(opts.privateKey)))
  sock.write(Buffer.concat([frameHeader({ length: 64, sender: opts.sender, kind: KIND_AUTH, msgId: 0 }), sig]))
  const peerEph = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(ephR).toString('base64url') }, format: 'jwk' })
  const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: peerEph })
  const okm = Buffer.from(
    hkdfSync('sha256', shared, Buffer.concat([nonceI, nonceR]), Buffer.concat([Buffer.from('nexres-rpc/1 session keys'), t]), 64),
  )
  const i2r = okm.subarray(0, 32)
  const peer: AuthenticatedPeer = {
    socket: sock,
    seq: 0n,
    incarnation: incI,
    send(frames, o = {}) {
      const batch = Buffer.concat(frames)
      if (o.seal === false) {
        sock.write(batch)
        return batch
      }
      const seal = Buffer.concat([frameHeader({ length: 16, sender: opts.sender, kind: KIND_SEAL, msgId: peer.seq }), gmac(i2r, peer.seq, batch)])
      peer.seq++
      const out = Buffer.concat([batch, seal])
      sock.write(out)
      return out
    },
    close() {
      sock.destroy()
    },
  }
  return peer
}
