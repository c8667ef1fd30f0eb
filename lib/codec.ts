import { Packr } from 'msgpackr'

/** Turns values into bytes and back; plug in any serializer (protobuf, CBOR, ...). */
export interface Codec<T> {
  encode(value: T): Uint8Array
  decode(bytes: Uint8Array): T
}

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder()

/** Bytes as they are (the request view is already a copy the handler owns). */
export const raw: Codec<Uint8Array> = {
  encode: (value) => value,
  decode: (bytes) => bytes,
}

/** UTF-8 strings. */
export const text: Codec<string> = {
  encode: (value) => utf8.encode(value),
  decode: (bytes) => fromUtf8.decode(bytes),
}

/** JSON; the type parameter states what the bytes hold (not checked at run time). */
export function json<T>(): Codec<T> {
  return {
    encode: (value) => utf8.encode(JSON.stringify(value)),
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
