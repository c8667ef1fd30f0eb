// The client side of the client-port handshake (docs/PROTOCOL.md §6): the
// replica's CLIENT_WELCOME read, and every way a connection can fail said
// with its cause, so that a caller learns what went wrong where.
import type { WelcomeProof } from './client-auth.js'
import { WELCOME_KEY_BYTES } from './client-auth.js'
import { ConnectionLostError, RemoteError } from './errors.js'
import { HEADER_BYTES, HELLO_CLIENT, HELLO_FIXED_BYTES, HELLO_MAGIC, KIND_REJECT, MAX_REJECT_BODY, OFFSET_KIND, PROTOCOL_VERSION, REJECT_BAD_FRAME, WELCOME_CLIENT, rejectReasonName } from './wire.js'

/** A replica's client-port address (`Client.connect`'s `host`/`port` or `replicas[]`). */
export interface Endpoint {
  host: string
  port: number
}

export interface WelcomeLimits {
  /** Bytes of the handshake answer (the rest of the read is replies). */
  end: number
  maxRequestBytes: number | undefined
  maxInFlight: number | undefined
  /** The replica's id (the CLIENT_WELCOME's sender). */
  replicaId: number
  /** §6a, when the WELCOME answers a keyed or sealed CLIENT_HELLO (auth 1 or 2); else undefined. */
  proof: WelcomeProof | undefined
  /** The WELCOME's auth mode: 0 none, 1 keyed (§6a), 2 sealed (§6b). */
  auth: number
}

/**
 * The replica's answer to CLIENT_HELLO in `b`: the CLIENT_WELCOME's size and
 * limits, an error saying why not, or undefined while more bytes are needed
 * (`closed`: no more will come).
 */
export function readWelcome(b: Buffer, ep: Endpoint, closed: boolean, clusterId: string): WelcomeLimits | Error | undefined {
  const where = `${ep.host}:${ep.port}`
  const more = (): Error | undefined =>
    closed ? new ConnectionLostError(`${where}: the replica closed the connection in the middle of its handshake answer`, undefined, { endpoint: ep }) : undefined
  if (b.length < 4) return more()
  if (b.readUInt32LE(0) !== HELLO_MAGIC) {
    // A refusal is a REJECT frame (§3): header, u16 reason code, text.
    if (b.length < HEADER_BYTES) return closed ? notClientPort(b, ep) : undefined
    const len = b.readUInt32LE(0)
    if (b[OFFSET_KIND] !== KIND_REJECT || len < 2 || len > MAX_REJECT_BODY) return notClientPort(b, ep)
    if (b.length < HEADER_BYTES + len && !closed) return undefined
    if (b.length < HEADER_BYTES + 2) return more()
    const code = b.readUInt16LE(HEADER_BYTES)
    const reasonCode = rejectReasonName(code)
    const reason = b.toString('utf8', HEADER_BYTES + 2, Math.min(b.length, HEADER_BYTES + len))
    let hint = ''
    // A replica port reads our CLIENT_HELLO as a malformed replica HELLO.
    if (code === REJECT_BAD_FRAME) hint = ": this looks like a replica port; clients connect to a replica's clientPort"
    else if (reasonCode === 'WRONG_CLUSTER') hint = ` (the client asked for cluster "${clusterId}")`
    return new ConnectionLostError(`${where} refused the connection: ${reasonCode}: ${reason}${hint}`, undefined, { endpoint: ep, reasonCode, reason })
  }
  if (b.length < HELLO_FIXED_BYTES) return more()
  const version = b.readUInt16LE(4)
  const type = b.readUInt16LE(6)
  if (type !== WELCOME_CLIENT) {
    return new ConnectionLostError(`${where} answered the CLIENT_HELLO with a handshake of type ${type}, not a CLIENT_WELCOME`, undefined, { endpoint: ep })
  }
  if (version !== PROTOCOL_VERSION) {
    return new ConnectionLostError(`${where} speaks protocol version ${version}, this client ${PROTOCOL_VERSION}`, undefined, { endpoint: ep })
  }
  const bodyLen = b.readUInt32LE(24)
  const cidLen = b[10]!
  if (bodyLen > 4096 || cidLen > bodyLen) {
    return new ConnectionLostError(`${where}: malformed CLIENT_WELCOME (body of ${bodyLen} bytes)`, undefined, { endpoint: ep })
  }
  if (b.length < HELLO_FIXED_BYTES + bodyLen) return more()
  // Body (§6): cluster id, then u32 maxRequestBytes, u32 maxClientInFlight
  // when the replica announces them (older ones do not).
  const at = HELLO_FIXED_BYTES + cidLen
  const extra = bodyLen - cidLen
  let proof: WelcomeProof | undefined
  const auth = b.readUInt16LE(8)
  if (auth !== 0) {
    // §6a: nonce_R | X_R | sig_R after the limits.
    if (extra < 8 + WELCOME_KEY_BYTES) return new ConnectionLostError(`${where}: malformed CLIENT_WELCOME (no key exchange in a keyed answer)`, undefined, { endpoint: ep })
    proof = {
      clusterId: Buffer.from(b.subarray(HELLO_FIXED_BYTES, at)),
      replicaId: b.readUInt32LE(12),
      connectionId: b.readBigUInt64LE(16),
      ext: Buffer.from(b.subarray(at + 8, at + 8 + WELCOME_KEY_BYTES)),
    }
  }
  return {
    end: HELLO_FIXED_BYTES + bodyLen,
    maxRequestBytes: extra >= 4 ? b.readUInt32LE(at) : undefined,
    maxInFlight: extra >= 8 ? b.readUInt32LE(at + 4) : undefined,
    replicaId: b.readUInt32LE(12),
    proof,
    auth,
  }
}

export function notClientPort(b: Buffer, ep: Endpoint): Error {
  const head = b.subarray(0, 16).toString('hex')
  return new ConnectionLostError(
    `${ep.host}:${ep.port} is not a nexres-rpc client port: it answered the CLIENT_HELLO with bytes that are neither a CLIENT_WELCOME nor a REJECT (${head}...)`,
    undefined,
    { endpoint: ep },
  )
}

/** A socket error in words, with its code (e.g. `connection refused (ECONNREFUSED)`). */
export function describeSocketError(err: Error, ep: Endpoint): string {
  const code = (err as NodeJS.ErrnoException).code
  switch (code) {
    case 'ECONNREFUSED':
      return `connection refused (ECONNREFUSED): nothing listens on port ${ep.port}`
    case 'ENOTFOUND':
      return `unknown host "${ep.host}" (ENOTFOUND)`
    case 'EAI_AGAIN':
      return `could not resolve "${ep.host}" (EAI_AGAIN)`
    case 'ECONNRESET':
      return 'connection reset by the replica (ECONNRESET)'
    case 'EPIPE':
      return 'the replica closed the connection while the client wrote (EPIPE)'
    case 'ETIMEDOUT':
      return 'connection timed out (ETIMEDOUT)'
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `no route to ${ep.host} (${code})`
    default:
      return code !== undefined && !err.message.includes(code) ? `${err.message} (${code})` : err.message
  }
}

/** Why an established connection ended, in words. */
export function describeLoss(err: Error | undefined, ep: Endpoint): string {
  if (err === undefined) return 'the replica closed the connection'
  if (err instanceof ConnectionLostError) return err.message // a refusal (REJECT frame)
  return describeSocketError(err, ep)
}

/** An ERROR reply as a `RemoteError`; NO_SUCH_ROUTE names the route the call used. */
export function remoteError(e: { code: string; message: string }, route: string): RemoteError {
  const name = JSON.stringify(route)
  if (e.code === 'NO_SUCH_ROUTE' && !e.message.includes(name)) {
    return new RemoteError(e.code, e.message.length > 0 ? `${e.message} (route ${name})` : `no handler for route ${name}`, route)
  }
  return new RemoteError(e.code, e.message, route)
}

/** CLIENT_HELLO (PROTOCOL.md §6), naming `clusterId` ('' names none). */
export function clientHello(clusterId: string): Buffer {
  const cid = Buffer.from(clusterId, 'utf8')
  const h = Buffer.alloc(HELLO_FIXED_BYTES + cid.length)
  h.writeUInt32LE(HELLO_MAGIC, 0)
  h.writeUInt16LE(PROTOCOL_VERSION, 4)
  h.writeUInt16LE(HELLO_CLIENT, 6)
  h.writeUInt16LE(0, 8)
  h[10] = cid.length
  h.writeUInt32LE(cid.length, 24)
  cid.copy(h, HELLO_FIXED_BYTES)
  return h
}
