import { FLAG_SIGNED, HEADER_BYTES, OFFSET_FLAGS, OFFSET_MSG_ID, SIGNATURE_BYTES } from './wire.js'

/**
 * A message delivered to a route handler. `payload` is a zero-copy view into
 * the receive buffer: it is valid only during the handler call (the memory is
 * reused afterwards). Call `copy()` to keep the bytes.
 */
export class Message {
  /** @internal */
  constructor(
    /** Replica id of the sender (authenticated by the connection it came on). */
    readonly from: number,
    /** Route name the sender used. */
    readonly route: string,
    private readonly buffer: ArrayBuffer,
    private readonly offset: number,
    private readonly length: number,
    /** The sender's cluster id: this replica's own, or a remote cluster's (`remoteClusters`). */
    readonly cluster: string,
  ) {}

  /** The body, as a view valid during the handler call. */
  get payload(): Uint8Array {
    return new Uint8Array(this.buffer, this.offset + HEADER_BYTES, this.length)
  }

  /**
   * For a message the sender sent with `{ sign: true }`: its Ed25519
   * signature (64 bytes, a view valid during the call), already checked
   * against the sender's public key on an io thread. It covers the sender,
   * route, `id`, `incarnation` and payload, and can be forwarded as a proof
   * with them; `verifySigned()` checks it anywhere. Undefined for unsigned
   * messages.
   */
  get signature(): Uint8Array | undefined {
    if (!this.signed) return undefined
    return new Uint8Array(this.buffer, this.offset + HEADER_BYTES + this.length + 8, SIGNATURE_BYTES)
  }

  /**
   * For a signed message: the sender's incarnation (random per process
   * start) it was signed under, part of what the signature covers.
   * Undefined for unsigned messages.
   */
  get incarnation(): bigint | undefined {
    if (!this.signed) return undefined
    return new DataView(this.buffer, this.offset + HEADER_BYTES + this.length, 8).getBigUint64(0, true)
  }

  private get signed(): boolean {
    return (new Uint8Array(this.buffer, this.offset + OFFSET_FLAGS, 1)[0]! & FLAG_SIGNED) !== 0
  }

  /** The route id (FNV-1a of the route name) as it was signed. */
  get routeId(): number {
    return new DataView(this.buffer, this.offset + 4, 4).getUint32(0, true)
  }

  /** Payload size in bytes. */
  get size(): number {
    return this.length
  }

  /** The sender's message id (increasing per sender). */
  get id(): number {
    const view = new DataView(this.buffer, this.offset + OFFSET_MSG_ID, 8)
    return view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32
  }

  /** A copy of the payload that stays valid after the call. */
  copy(): Uint8Array {
    return new Uint8Array(this.buffer.slice(this.offset + HEADER_BYTES, this.offset + HEADER_BYTES + this.length))
  }

  /** The payload decoded as UTF-8. */
  text(): string {
    return Buffer.from(this.buffer, this.offset + HEADER_BYTES, this.length).toString('utf8')
  }
}

/**
 * Consecutive messages of one route from one sender, handed to an `onBatch`
 * handler in one call: no object per message. Message `i` (0 ≤ i < count)
 * is `bytes.subarray(offset(i), offset(i) + length(i))`. Like a message's
 * payload, everything here is valid during the call (and, when the handler
 * returns a promise, until it settles); the object itself is reused.
 */
export class MessageBatch {
  /** Replica id of the sender. */
  from = 0
  /** The sender's cluster id (this replica's, or a remote cluster's). */
  cluster = ''
  /** Route name. */
  route = ''
  /** Messages in the batch. */
  count = 0
  /** The receive buffer the payloads are in. */
  bytes: Uint8Array = new Uint8Array(0)
  /** @internal payload offsets and lengths, then frame offsets */
  offsets: Int32Array<ArrayBuffer> = new Int32Array(256)
  /** @internal */
  lengths: Int32Array<ArrayBuffer> = new Int32Array(256)
  /** @internal */
  frames: Int32Array<ArrayBuffer> = new Int32Array(256)

  /** Where message `i`'s payload starts in `bytes`. */
  offset(i: number): number {
    return this.offsets[i]!
  }

  /** Payload bytes of message `i`. */
  length(i: number): number {
    return this.lengths[i]!
  }

  /** Message `i`'s payload as a view (one object; `offset`/`length` make none). */
  payload(i: number): Uint8Array {
    return this.bytes.subarray(this.offsets[i]!, this.offsets[i]! + this.lengths[i]!)
  }

  /** The sender's message id of message `i`. */
  id(i: number): number {
    const p = this.frames[i]! + OFFSET_MSG_ID
    const b = this.bytes
    return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16)) + b[p + 3]! * 0x1000000 + (b[p + 4]! | (b[p + 5]! << 8) | (b[p + 6]! << 16) | (b[p + 7]! << 24)) * 2 ** 32
  }

  /** @internal adds a message: frame at `frame`, payload `length` bytes after its header. */
  push(frame: number, length: number): void {
    const n = this.count
    if (n === this.offsets.length) {
      const grow = (a: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
        const b = new Int32Array(a.length * 2)
        b.set(a)
        return b
      }
      this.offsets = grow(this.offsets)
      this.lengths = grow(this.lengths)
      this.frames = grow(this.frames)
    }
    this.frames[n] = frame
    this.offsets[n] = frame + HEADER_BYTES
    this.lengths[n] = length
    this.count = n + 1
  }
}
