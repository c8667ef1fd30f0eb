// Argument checks shared by every public entry point: each runs before the
// call touches any state and throws InvalidArgumentError (a TypeError with
// code INVALID_ARGUMENT) naming the parameter and what arrived. Unknown keys
// in options objects are ConfigError (CONFIG_INVALID) naming the key.
import { markAsUntransferable } from 'node:worker_threads'

import { ConfigError, InvalidArgumentError } from './errors.js'

/** What payload parameters take, in words. */
export const BYTES = 'a Uint8Array, Buffer, other ArrayBufferView or a string'
const REPLICA_ID = 'a replica id (an integer in [1, 2^31 - 1])'

// What a view really spans is read through the built-in accessors of
// %TypedArray%.prototype and DataView.prototype, never through the view's
// own properties: a subclass (or an own property) may say `length`,
// `byteLength`, `byteOffset` or `buffer` are something else, and a frame
// sized from such a `length` would carry stale bytes of the staging buffer
// (earlier messages, to any peer) past the payload that was copied.
type Accessor = (this: unknown) => unknown
const accessor = (proto: object, key: PropertyKey): Accessor => Object.getOwnPropertyDescriptor(proto, key)!.get as Accessor
const TYPED_ARRAY = Object.getPrototypeOf(Uint8Array.prototype) as object
const taTag = accessor(TYPED_ARRAY, Symbol.toStringTag)
const taLength = accessor(TYPED_ARRAY, 'length')
const taBuffer = accessor(TYPED_ARRAY, 'buffer')
const taByteOffset = accessor(TYPED_ARRAY, 'byteOffset')
const taByteLength = accessor(TYPED_ARRAY, 'byteLength')
const dvBuffer = accessor(DataView.prototype, 'buffer')
const dvByteOffset = accessor(DataView.prototype, 'byteOffset')
const dvByteLength = accessor(DataView.prototype, 'byteLength')

/** True for any Uint8Array (Buffer, a subclass, one from another realm); false for what only looks like one. */
export function isBytes(v: unknown): v is Uint8Array {
  return taTag.call(v) === 'Uint8Array'
}

/** A Uint8Array's byte count as the engine sees it, whatever its `length` property says. */
export function sizeOf(v: Uint8Array): number {
  return taLength.call(v) as number
}

const abResizable = accessor(ArrayBuffer.prototype, 'resizable')

/**
 * A payload the engine goes on reading after the call that sent it returns
 * (16 KiB and up, sent by reference, until acknowledged; again after a
 * reconnect). Node-API cannot keep a detached buffer's memory alive, so its
 * ArrayBuffer is marked untransferable (postMessage and structuredClone
 * then copy it or throw DataCloneError; ArrayBuffer.prototype.transfer
 * throws on recent Node versions, see docs/API.md); a view of a resizable ArrayBuffer, which could shrink under the
 * engine, is copied instead. A SharedArrayBuffer is never detached and
 * only grows.
 */
export function pinned(v: Uint8Array): Uint8Array {
  const buf = taBuffer.call(v) as ArrayBufferLike
  let resizable: boolean
  try {
    resizable = abResizable.call(buf) === true
  } catch {
    return v // a SharedArrayBuffer
  }
  if (resizable) {
    const copy = new Uint8Array(sizeOf(v))
    copy.set(v)
    return copy
  }
  markAsUntransferable(buf)
  return v
}

/** A Buffer over exactly the bytes of `v` (no copy). */
export function bufferOf(v: Uint8Array): Buffer {
  return Buffer.from(taBuffer.call(v) as ArrayBuffer, taByteOffset.call(v) as number, taLength.call(v) as number)
}

/**
 * The bytes of a payload that is neither a string nor a Uint8Array (those
 * two are handled inline on hot paths): any other ArrayBufferView
 * (Float32Array, DataView, ...) as a view of its bytes; anything else is
 * refused.
 */
export function viewBytes(parameter: string, v: unknown, expected = BYTES): Uint8Array {
  if (ArrayBuffer.isView(v)) {
    if (taTag.call(v) !== undefined) return new Uint8Array(taBuffer.call(v) as ArrayBuffer, taByteOffset.call(v) as number, taByteLength.call(v) as number)
    return new Uint8Array(dvBuffer.call(v) as ArrayBuffer, dvByteOffset.call(v) as number, dvByteLength.call(v) as number)
  }
  throw new InvalidArgumentError(parameter, expected, v)
}

/** A payload as bytes: strings as UTF-8, any ArrayBufferView as its bytes. */
export function payloadBytes(parameter: string, v: unknown): Uint8Array {
  if (typeof v === 'string') return Buffer.from(v, 'utf8')
  if (isBytes(v)) return v
  return viewBytes(parameter, v)
}

/**
 * A list of payloads (sendMany) as bytes, each checked as `payloadBytes`
 * checks one (`parameter[i]` named). Every element is read once, into a new
 * array: what is checked is what is sent, whatever getters or a Proxy return
 * on a second read.
 */
export function payloadList(parameter: string, v: unknown): Uint8Array[] {
  if (!Array.isArray(v)) throw new InvalidArgumentError(parameter, `an array of payloads (${BYTES})`, v)
  const n = v.length
  const out = new Array<Uint8Array>(n)
  for (let i = 0; i < n; i++) {
    const p: unknown = v[i]
    out[i] = isBytes(p) ? p : payloadBytes(`${parameter}[${i}]`, p)
  }
  return out
}

/** True for what `payloadBytes` takes. */
export function isPayload(v: unknown): v is Uint8Array | string | ArrayBufferView {
  return typeof v === 'string' || ArrayBuffer.isView(v)
}

export function isReplicaId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 0x7fffffff
}

export function checkReplicaId(parameter: string, v: unknown): asserts v is number {
  if (!isReplicaId(v)) throw new InvalidArgumentError(parameter, REPLICA_ID, v)
}

export function checkRoute(parameter: string, v: unknown): asserts v is string {
  if (typeof v !== 'string' || v.length === 0) throw new InvalidArgumentError(parameter, 'a non-empty string (a route name)', v)
}

export function checkFunction(parameter: string, v: unknown): void {
  if (typeof v !== 'function') throw new InvalidArgumentError(parameter, 'a function', v)
}

/** A number of ms in [0, 2^31 - 1] (what a timer can wait). */
export function checkDelay(parameter: string, v: unknown): asserts v is number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 0x7fffffff)) {
    throw new InvalidArgumentError(parameter, 'a number of ms in [0, 2147483647]', v)
  }
}

/** A positive number of ms, at most 2^31 - 1. */
export function checkTimeout(parameter: string, v: unknown): asserts v is number {
  if (typeof v !== 'number' || !(v > 0 && v <= 0x7fffffff)) {
    throw new InvalidArgumentError(parameter, 'a positive number of ms, at most 2147483647', v)
  }
}

export function checkSignal(parameter: string, v: unknown): asserts v is AbortSignal | undefined {
  if (v !== undefined && !(v instanceof AbortSignal)) throw new InvalidArgumentError(parameter, 'an AbortSignal', v)
}

/**
 * An options argument: undefined (none) or an object whose own keys are all
 * in `known` (an unknown key, usually a typo, is CONFIG_INVALID naming it
 * and the closest known key).
 */
export function checkOptions(parameter: string, v: unknown, known: Readonly<Record<string, true>>): void {
  if (v === undefined) return
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidArgumentError(parameter, 'an options object', v)
  for (const key in v) {
    if (Object.hasOwn(v, key) && !Object.hasOwn(known, key)) throw unknownKey(`${parameter}.${key}`, key, known)
  }
}

/** Throws ConfigError for the first own key of `o` not in `known`; `prefix` is its path ('' at top level). */
export function checkKnownKeys(prefix: string, o: object, known: Readonly<Record<string, true>>): void {
  for (const key in o) {
    if (Object.hasOwn(o, key) && !Object.hasOwn(known, key)) throw unknownKey(prefix + key, key, known)
  }
}

function unknownKey(field: string, key: string, known: Readonly<Record<string, true>>): ConfigError {
  const near = closest(key, Object.keys(known))
  const hint = near === undefined ? `known options: ${Object.keys(known).join(', ')}` : `did you mean ${near}?`
  return new ConfigError(field, `unknown option; ${hint}`)
}

/** The known key nearest to `key` (case-insensitive, or within edit distance 2), if any. */
function closest(key: string, known: readonly string[]): string | undefined {
  const k = key.toLowerCase()
  let best: string | undefined
  let bestD = 3
  for (const c of known) {
    const d = distance(k, c.toLowerCase())
    if (d < bestD) {
      bestD = d
      best = c
    }
  }
  return best
}

/** Levenshtein distance (only on the error path). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = cur
  }
  return prev[b.length]!
}
