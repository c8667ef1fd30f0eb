// Staging of outgoing frames. send/broadcast write complete frames (header
// and small payloads) into one staging buffer and note runs of frames per
// destination; the whole stage crosses into native in ONE call per flush
// (once per tick, or when the buffer fills). Large payloads are not copied:
// the run points at the caller's bytes, which native keeps by reference.
import { pinned, sizeOf } from './args.js'
import type { NativeSender } from './native.js'

/** Fields per run: dest, start, end, messages, lastIdLo, lastIdHi, external index + 1. */
export const RUN_FIELDS = 7
import { FLAG_SIGNED, HEADER_BYTES, KIND_DATA, OFFSET_KIND, OFFSET_LENGTH, OFFSET_MSG_ID, OFFSET_ROUTE, OFFSET_SENDER, SIGNED_TRAILER_BYTES } from './wire.js'

export { HEADER_BYTES }
/** Wildcard destination of a broadcast run (docs/PROTOCOL.md §3 is per connection; this is local). */
export const BROADCAST = 0xffffffff
/** Run field 6 bit: the run holds signed frames to sign at flush. */
export const SIGN_RUN = 0x80000000
/** Payloads at least this large are sent by reference instead of copied. */
export const EXTERNAL_MIN_BYTES = 16 * 1024

const STAGE_BYTES = 1024 * 1024
const MAX_RUNS = 4096
/** kind = data (1), flags = 0, reserved = 0, as one little-endian u32. */
const KIND_DATA_WORD = KIND_DATA

export class Outbox {
  private readonly buf = new Uint8Array(STAGE_BYTES)
  private readonly dv = new DataView(this.buf.buffer)
  private pos = 0
  private readonly runs = new Uint32Array(RUN_FIELDS * MAX_RUNS)
  private nruns = 0
  // The open run (dest -1: none).
  private runDest = -1
  private runStart = 0
  private runEnd = 0
  private runMsgs = 0
  private runLo = 0
  private runHi = 0
  private externals: Uint8Array[] = []
  private externalBytes = 0
  private scheduled = false
  private readonly flushSoon = (): void => {
    this.scheduled = false
    this.flush()
  }

  constructor(
    private readonly engine: NativeSender,
    private readonly sender: number,
    private readonly afterFlush: () => void,
  ) {}

  /** Bytes a frame with this payload adds to a peer's queue. */
  static frameBytes(payloadBytes: number): number {
    return HEADER_BYTES + payloadBytes
  }

  /**
   * Stages one frame; the caller has checked limits. The 64-bit message id
   * comes as two u32 halves (a float modulo per message costs more than the
   * rest of the header).
   */
  stage(dest: number, route: number, lo: number, hi: number, payload: Uint8Array, len: number, kind = KIND_DATA_WORD): void {
    const external = len >= EXTERNAL_MIN_BYTES
    const need = external ? HEADER_BYTES : HEADER_BYTES + len
    if (this.pos + need > STAGE_BYTES || this.nruns + 2 > MAX_RUNS) this.flush()
    const p = this.pos
    this.writeFrame(p, route, lo, hi, payload, len, kind, external)
    const end = p + need
    this.pos = end
    // The open run lives in fields; it is written to `runs` when it closes.
    if (dest !== this.runDest) {
      if (this.runDest !== -1) this.closeRun()
      this.runDest = dest
      this.runStart = p
      this.runMsgs = 0
    }
    this.runEnd = end
    this.runLo = lo
    this.runHi = hi
    if (external) {
      this.closeRun()
      this.externals.push(pinned(payload))
      this.writeRun(dest, 0, len, 1, lo, hi, this.externals.length)
      this.runDest = -1 // the next frame starts a new staging run
      // Hand big payloads over as soon as a stage's worth is waiting, so the
      // writer starts on them while the caller goes on staging.
      this.externalBytes += len
      if (this.externalBytes >= STAGE_BYTES) this.flush()
    } else {
      this.runMsgs++
    }
    if (!this.scheduled) {
      this.scheduled = true
      queueMicrotask(this.flushSoon)
    }
  }

  /**
   * Stages a frame to a client that answers none of its requests (a push, a
   * reply to a request that came through another replica): its run counts
   * no messages, so the connection's unanswered requests are not touched.
   */
  stageUncounted(dest: number, route: number, lo: number, hi: number, payload: Uint8Array, len: number, kind: number): void {
    const external = len >= EXTERNAL_MIN_BYTES
    const need = external ? HEADER_BYTES : HEADER_BYTES + len
    if (this.pos + need > STAGE_BYTES || this.nruns + 3 > MAX_RUNS) this.flush()
    if (this.runDest !== -1) this.closeRun()
    const p = this.pos
    this.writeFrame(p, route, lo, hi, payload, len, kind, external)
    this.pos = p + need
    this.writeRun(dest, p, this.pos, 0, lo, hi, 0)
    if (external) {
      this.externals.push(pinned(payload))
      this.writeRun(dest, 0, len, 0, lo, hi, this.externals.length)
    }
    if (!this.scheduled) {
      this.scheduled = true
      queueMicrotask(this.flushSoon)
    }
  }

  /**
   * Stages a signed frame: flags SIGNED, the payload copied, 64 bytes left
   * for the signature that native code writes at flush (it holds the key).
   * Its run is marked (bit 31 of the external field) so only marked runs
   * are walked for frames to sign.
   */
  stageSigned(dest: number, route: number, lo: number, hi: number, payload: Uint8Array): void {
    const size = sizeOf(payload)
    const len = size + SIGNED_TRAILER_BYTES
    if (this.pos + HEADER_BYTES + len > STAGE_BYTES || this.nruns + 2 > MAX_RUNS) this.flush()
    if (this.runDest !== -1) this.closeRun()
    const p = this.pos
    const dv = this.dv
    dv.setUint32(p + OFFSET_LENGTH, len, true)
    dv.setUint32(p + OFFSET_ROUTE, route, true)
    dv.setUint32(p + OFFSET_SENDER, this.sender, true)
    dv.setUint32(p + OFFSET_KIND, KIND_DATA_WORD | (FLAG_SIGNED << 8), true)
    dv.setUint32(p + OFFSET_MSG_ID, lo, true)
    dv.setUint32(p + OFFSET_MSG_ID + 4, hi, true)
    this.buf.set(payload, p + HEADER_BYTES)
    this.buf.fill(0, p + HEADER_BYTES + size, p + HEADER_BYTES + len)
    this.pos = p + HEADER_BYTES + len
    this.writeRun(dest, p, this.pos, 1, lo, hi, SIGN_RUN)
    if (!this.scheduled) {
      this.scheduled = true
      queueMicrotask(this.flushSoon)
    }
  }

  // One frame's header at buf[p..] (and its payload, unless sent by reference).
  private writeFrame(p: number, route: number, lo: number, hi: number, payload: Uint8Array, len: number, kind: number, external: boolean): void {
    const dv = this.dv
    dv.setUint32(p + OFFSET_LENGTH, len, true)
    dv.setUint32(p + OFFSET_ROUTE, route, true)
    dv.setUint32(p + OFFSET_SENDER, this.sender, true)
    dv.setUint32(p + OFFSET_KIND, kind, true)
    dv.setUint32(p + OFFSET_MSG_ID, lo, true)
    dv.setUint32(p + OFFSET_MSG_ID + 4, hi, true)
    if (!external && len > 0) this.buf.set(payload, p + HEADER_BYTES)
  }

  private closeRun(): void {
    this.writeRun(this.runDest, this.runStart, this.runEnd, this.runMsgs, this.runLo, this.runHi, 0)
    this.runDest = -1
  }

  private writeRun(dest: number, start: number, end: number, msgs: number, lo: number, hi: number, ext: number): void {
    const r = this.runs
    const k = this.nruns++ * RUN_FIELDS
    r[k] = dest
    r[k + 1] = start
    r[k + 2] = end
    r[k + 3] = msgs
    r[k + 4] = lo
    r[k + 5] = hi
    r[k + 6] = ext
  }

  /** True when frames are staged and not yet handed to native. */
  get pending(): boolean {
    return this.nruns > 0 || this.runDest !== -1
  }

  /** Hands everything staged to native in one call. */
  flush(): void {
    if (this.runDest !== -1) this.closeRun()
    if (this.nruns === 0) {
      // Nothing staged, but the caller may be waiting on a drain request.
      this.afterFlush()
      return
    }
    const ext = this.externals.length > 0 ? this.externals : undefined
    this.engine.flush(this.buf, this.pos, this.runs, this.nruns, ext)
    this.pos = 0
    this.nruns = 0
    this.externalBytes = 0
    if (ext) this.externals = []
    this.afterFlush()
  }
}
