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
