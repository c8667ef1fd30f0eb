// A client connection's bytes: requests staged into one write per tick,
// and replies cut out of what the socket delivers (PROTOCOL.md §6).
import type net from 'node:net'

import { bufferOf, pinned, sizeOf } from './args.js'
import { CLIENT_SEAL_BATCH_BYTES, SEAL_FRAME_BYTES, type Sealer } from './client-auth.js'
import { HEADER_BYTES, KIND_CANCEL, KIND_REQUEST, OFFSET_KIND, OFFSET_MSG_ID, OFFSET_ROUTE, OFFSET_SENDER } from './wire.js'

const STAGE_BYTES = 256 * 1024
/** Bodies from this size on are written as they are, not copied into the stage. */
const LARGE_BYTES = 16 * 1024
/** Largest reply frame accepted; a longer header is a protocol error. */
export const MAX_REPLY_BYTES = 1024 * 1024 * 1024

/**
 * REQUEST frames staged in one buffer and written once per tick (a
 * microtask), large bodies after their header without a copy.
 */
export class RequestStager {
  private stage = Buffer.allocUnsafe(STAGE_BYTES)
  private pos = 0
  private large: Buffer[] = []
  private flushScheduled = false
  // §6a: each flush is one batch followed by its SEAL, at most maxBatch
  // frames (the replica's maxClientInFlight) and about 256 KiB.
  private sealer: Sealer | undefined
  private maxBatch = 0
  private batchFrames = 0

  /** `socket()` is where a flush writes (undefined: what is staged is dropped). */
  constructor(private readonly socket: () => net.Socket | undefined) {}

  /** Seals what follows (a keyed connection), or stops sealing (undefined). */
  setSealer(sealer: Sealer | undefined, maxBatchFrames: number): void {
    this.sealer = sealer
    this.maxBatch = maxBatchFrames
    this.batchFrames = 0
  }

  /** A REQUEST; `timeoutMs` travels in its sender field (§6; 0: none). */
  write(route: number, id: number, body: Uint8Array, timeoutMs = 0): void {
    const len = sizeOf(body)
    const small = len < LARGE_BYTES
    const need = HEADER_BYTES + (small ? len : 0)
    // Sealed: no frame starts more than 64 KiB into a batch (§6a).
    if (this.sealer !== undefined && this.pos > CLIENT_SEAL_BATCH_BYTES - HEADER_BYTES) this.flush()
    if (this.pos + need > this.stage.length) {
      this.flush()
      // After a flush the stage is what was left of the buffer: it may be short.
      if (need > this.stage.length) this.stage = Buffer.allocUnsafe(Math.max(STAGE_BYTES, need))
    }
    const b = this.stage
    const p = this.pos
    b.writeUInt32LE(len, p)
    b.writeUInt32LE(route, p + OFFSET_ROUTE)
    b.writeUInt32LE(Math.min(Math.ceil(timeoutMs), 0xffffffff), p + OFFSET_SENDER)
    b.writeUInt32LE(KIND_REQUEST, p + OFFSET_KIND)
    b.writeUInt32LE(id, p + OFFSET_MSG_ID)
    b.writeUInt32LE(0, p + OFFSET_MSG_ID + 4)
    if (small) b.set(body, p + HEADER_BYTES)
    this.pos = p + need
    if (!small) {
      // Large bodies go out as they are, right after their header.
      this.large.push(b.subarray(0, this.pos))
      this.large.push(bufferOf(pinned(body)))
      this.stage = b.subarray(this.pos).length >= 4096 ? b.subarray(this.pos) : Buffer.allocUnsafe(STAGE_BYTES)
      this.pos = 0
      // Sealed: a batch carries at most one large request, at its end.
      if (this.sealer !== undefined) return this.flush()
    }
    this.counted()
  }

  /** A CANCEL (§6): the client gave up on request `id`. */
  cancel(id: number): void {
    if (this.pos + HEADER_BYTES > this.stage.length || (this.sealer !== undefined && this.pos > CLIENT_SEAL_BATCH_BYTES - HEADER_BYTES)) this.flush()
    if (HEADER_BYTES > this.stage.length) this.stage = Buffer.allocUnsafe(STAGE_BYTES)
    const b = this.stage
    const p = this.pos
    b.fill(0, p, p + HEADER_BYTES)
    b[p + OFFSET_KIND] = KIND_CANCEL
    b.writeUInt32LE(id, p + OFFSET_MSG_ID)
    this.pos = p + HEADER_BYTES
    this.counted()
  }

  private counted(): void {
    if (this.sealer !== undefined && ++this.batchFrames >= this.maxBatch) return this.flush()
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(this.flushSoon)
    }
  }

  /** Drops what is staged (the connection is gone). */
  reset(): void {
    this.pos = 0
    this.large = []
    this.batchFrames = 0
  }

  private readonly flushSoon = (): void => {
    this.flushScheduled = false
    this.flush()
  }

  /** The large bodies and the stage as one sealed batch (false: nothing to write). */
  private writeSealedParts(s: net.Socket, sealer: Sealer): boolean {
    if (this.large.length === 0 && this.pos === 0) return false
    const parts = this.pos > 0 ? [...this.large, this.stage.subarray(0, this.pos)] : this.large
    s.cork()
    for (const part of sealer.sealParts(parts)) s.write(part)
    process.nextTick(() => s.uncork())
    this.large = []
    this.batchFrames = 0
    return true
  }

  /** One write: everything staged (and any large bodies) at once. */
  flush(): void {
    const s = this.socket()
    if (s === undefined) return this.reset()
    if (this.sealer?.encrypt === true) {
      // §6b: the ciphertext is written, in new buffers: the stage is free again.
      if (this.writeSealedParts(s, this.sealer)) this.pos = 0
      return
    }
    if (this.sealer !== undefined && this.large.length === 0 && this.pos + SEAL_FRAME_BYTES <= this.stage.length) {
      // The common case: the batch and its SEAL in one write.
      if (this.pos === 0) return
      this.sealer.sealStaged(this.stage, this.pos)
      this.pos += SEAL_FRAME_BYTES
      s.write(this.stage.subarray(0, this.pos))
      this.batchFrames = 0
    } else if (this.sealer !== undefined) {
      if (!this.writeSealedParts(s, this.sealer)) return
    } else if (this.large.length > 0) {
      s.cork()
      for (const part of this.large) s.write(part)
      if (this.pos > 0) s.write(this.stage.subarray(0, this.pos))
      process.nextTick(() => s.uncork())
      this.large = []
    } else if (this.pos > 0) {
      s.write(this.stage.subarray(0, this.pos))
    } else {
      return
    }
    // The socket keeps what it was given: continue in the rest of the buffer.
    const rest = this.stage.subarray(this.pos)
    this.stage = rest.length >= 4096 ? rest : Buffer.allocUnsafe(STAGE_BYTES)
    this.pos = 0
  }
}

/**
 * Reply frames cut out of the chunks a socket delivers, parsed in place. A
 * frame split across reads is kept as the list of its slices and joined
 * once, when its last byte arrives (its size is known from its header), so
 * each byte is copied at most once; joining the remainder with every new
 * chunk copied a large reply again on each read (quadratic in its size).
 */
export class ReplyReader {
  private parts: Buffer[] = []
  private partBytes = 0
  private partNeed = 0

  /**
   * `onFrame(buf, p, len)`: one whole frame at buf[p..], `len` body bytes;
   * false when it ended the connection (nothing more is read from this
   * chunk). `onError(reason)`: a frame longer than MAX_REPLY_BYTES.
   */
  constructor(
    private readonly onFrame: (buf: Buffer, p: number, len: number) => boolean,
    private readonly onError: (reason: string) => void,
  ) {}

  feed(chunk: Buffer): void {
    let p = 0
    if (this.partBytes > 0) {
      p = this.continueFrame(chunk)
      if (p < 0) return
    }
    const end = chunk.length
    while (end - p >= HEADER_BYTES) {
      const len = chunk.readUInt32LE(p)
      if (len > MAX_REPLY_BYTES) return this.onError(`reply of ${len} bytes`)
      if (end - p - HEADER_BYTES < len) break
      if (!this.onFrame(chunk, p, len)) return
      p += HEADER_BYTES + len
    }
    if (p < end) {
      this.parts.push(chunk.subarray(p))
      this.partBytes = end - p
      this.partNeed = end - p >= HEADER_BYTES ? HEADER_BYTES + chunk.readUInt32LE(p) : 0
    }
  }

  /** Forgets a frame in progress (a new connection). */
  reset(): void {
    this.parts = []
    this.partBytes = 0
    this.partNeed = 0
  }

  // Adds the head of `chunk` to the frame in progress. Returns where that
  // frame ends in `chunk`, or -1 when it needs more bytes (or the connection
  // failed).
  private continueFrame(chunk: Buffer): number {
    let p = 0
    if (this.partNeed === 0) {
      // Header incomplete: take what completes it, then learn the size.
      p = Math.min(HEADER_BYTES - this.partBytes, chunk.length)
      this.parts.push(chunk.subarray(0, p))
      this.partBytes += p
      if (this.partBytes < HEADER_BYTES) return -1
      const header = Buffer.concat(this.parts, HEADER_BYTES)
      this.parts = [header]
      const len = header.readUInt32LE(0)
      if (len > MAX_REPLY_BYTES) {
        this.onError(`reply of ${len} bytes`)
        return -1
      }
      this.partNeed = HEADER_BYTES + len
    }
    const take = Math.min(this.partNeed - this.partBytes, chunk.length - p)
    if (take > 0) {
      this.parts.push(chunk.subarray(p, p + take))
      this.partBytes += take
      p += take
    }
    if (this.partBytes < this.partNeed) return -1
    const frame = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partNeed)
    this.reset()
    return this.onFrame(frame, 0, frame.length - HEADER_BYTES) ? p : -1
  }
}
