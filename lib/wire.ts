// The wire, as lib/ and bin/ read and write it (docs/PROTOCOL.md). The
// addon exports the core's own constants (native/core/protocol.hpp) and
// native.ts checks every one here against them when it loads.

/** Frame header size (§3). */
export const HEADER_BYTES = 24
/** Where each header field starts (§3). */
export const OFFSET_LENGTH = 0
export const OFFSET_ROUTE = 4
export const OFFSET_SENDER = 8
export const OFFSET_KIND = 12
export const OFFSET_FLAGS = 13
export const OFFSET_MSG_ID = 16
/** Frame flag: the body ends with the sender's Ed25519 signature (§3). */
export const FLAG_SIGNED = 0x01
export const SIGNATURE_BYTES = 64
/** A signed frame's body ends with the sender's incarnation (u64) and the signature (§3). */
export const SIGNED_TRAILER_BYTES = 8 + SIGNATURE_BYTES
/** Fixed part of HELLO/WELCOME (§2). */
export const HELLO_FIXED_BYTES = 32
/** "NXRP" as a little-endian u32 (§2). */
export const HELLO_MAGIC = 0x5052584e
export const PROTOCOL_VERSION = 1
/** Handshake types (§2, §6). */
export const HELLO_CLIENT = 3
export const WELCOME_CLIENT = 4
/** Frame kinds (§3, §6). */
export const KIND_DATA = 1
export const KIND_REJECT = 3
export const KIND_REQUEST = 6
export const KIND_REPLY = 7
export const KIND_ERROR = 8
export const KIND_PONG = 5
/** Client -> replica: the client gave up on a request (§6). */
export const KIND_CANCEL = 11
/** Replica -> client: a message the client did not ask for (§6). */
export const KIND_PUSH = 12
/** §2b/§6b: the clear header of an encrypted batch (its sequence number and length). */
export const KIND_SEALED = 13
/** A batch's tag, and a handshake's signature (§2a, §6a). */
export const KIND_SEAL = 9
export const KIND_AUTH = 10

/** Reject reason names by code (§4); a code missing here reads as `REJECT_<n>`. */
const REJECT_REASONS: Record<number, string> = {
  1: 'BAD_MAGIC',
  2: 'BAD_VERSION',
  3: 'WRONG_CLUSTER',
  4: 'UNKNOWN_PEER',
  5: 'FRAME_TOO_LARGE',
  6: 'BAD_FRAME',
  7: 'BAD_SENDER',
  8: 'HANDSHAKE_TIMEOUT',
  9: 'CONNECTION_LOST',
  10: 'BAD_AUTH',
  11: 'REQUEST_TOO_LARGE',
  12: 'IDLE_TIMEOUT',
  13: 'TOO_MANY_CONNECTIONS',
  14: 'HEARTBEAT_TIMEOUT',
  15: 'READ_TIMEOUT',
  16: 'TOO_MANY_PINGS',
  17: 'BAD_SIGNATURE',
  18: 'BAD_MAC',
  19: 'RATE_LIMITED',
}
export const REJECT_BAD_FRAME = 6

export function rejectReasonName(code: number): string {
  return REJECT_REASONS[code] ?? `REJECT_${code}`
}

/** REJECT frame body (§3): u16 reason code, UTF-8 explanation (at most 512 bytes). */
export const MAX_REJECT_BODY = 2 + 512

/** ERROR frame body (§6): u8 code length, ASCII code, UTF-8 message. */
export function encodeErrorBody(code: string, message: string): Uint8Array {
  const c = Buffer.from(code.slice(0, 64), 'latin1')
  const m = Buffer.from(message.slice(0, 4096), 'utf8')
  const out = Buffer.allocUnsafe(1 + c.length + m.length)
  out[0] = c.length
  c.copy(out, 1)
  m.copy(out, 1 + c.length)
  return out
}

export function decodeErrorBody(body: Uint8Array): { code: string; message: string } {
  if (body.length === 0) return { code: 'REMOTE_ERROR', message: '' }
  const n = Math.min(body[0]!, body.length - 1)
  const b = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  return { code: b.toString('latin1', 1, 1 + n) || 'REMOTE_ERROR', message: b.toString('utf8', 1 + n) }
}
