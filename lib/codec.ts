import { Packr } from 'msgpackr'

import { isBytes, viewBytes } from './args.js'
import { InvalidArgumentError } from './errors.js'

/** Turns values into bytes and back; plug in any serializer (protobuf, CBOR, ...). */
export interface Codec<T> {
  encode(value: T): Uint8Array
  decode(bytes: Uint8Array): T
}

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder()

// Codecs refuse values of the wrong kind with INVALID_ARGUMENT (parameter
// `value`; a typed client stub renames it `request`).

/** Bytes as they are (the request view is already a copy the handler owns); any ArrayBufferView as its bytes. */
export const raw: Codec<Uint8Array> = {
  encode: (value) => {
    const v: unknown = value
    if (isBytes(v)) return v
    return viewBytes('value', v, 'a Uint8Array (or another ArrayBufferView)')
  },
  decode: (bytes) => bytes,
}

/** UTF-8 strings. */
export const text: Codec<string> = {
  encode: (value) => {
    if (typeof value !== 'string') throw new InvalidArgumentError('value', 'a string', value)
    return utf8.encode(value)
  },
  decode: (bytes) => fromUtf8.decode(bytes),
}

/** JSON; the type parameter states what the bytes hold (not checked at run time). */
export function json<T>(): Codec<T> {
  return {
    encode: (value) => {
      let s: string | undefined
      try {
        s = JSON.stringify(value) as string | undefined
      } catch (err) {
        throw new InvalidArgumentError('value', `a value JSON can encode (${(err as Error).message})`, value)
      }
      if (s === undefined) throw new InvalidArgumentError('value', 'a value JSON can encode', value)
      return utf8.encode(s)
    },
    decode: (bytes) => JSON.parse(fromUtf8.decode(bytes)) as T,
  }
}

/** MessagePack through msgpackr. */
export function msgpack<T>(): Codec<T> {
  const packr = new Packr({ useRecords: false })
  return {
    encode: (value) => packr.pack(value),
    decode: (bytes) => packr.unpack(bytes) as T,
  }
}
