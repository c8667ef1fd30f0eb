import { isBytes, viewBytes } from './args.js'
import type { Codec } from './codec.js'
import type { CallOptions } from './call-options.js'
import { InvalidArgumentError } from './errors.js'
import type { RequestContext } from './request.js'

/** Any codec, as a method definition may hold it. */
export interface AnyCodec {
  encode(value: never): Uint8Array
  decode(bytes: Uint8Array): unknown
}

export interface MethodDefinition {
  request: AnyCodec
  response: AnyCodec
}

export type RequestOf<D> = D extends { request: Codec<infer R> } ? R : never
export type ResponseOf<D> = D extends { response: Codec<infer R> } ? R : never

export interface ServiceDefinition<M extends Record<string, MethodDefinition>> {
  readonly name: string
  readonly methods: M
}

/** What `replica.serve(def, impl)` expects: one function per method. */
export type ServiceImplementation<M extends Record<string, MethodDefinition>> = {
  [K in keyof M]: (request: RequestOf<M[K]>, ctx: RequestContext) => ResponseOf<M[K]> | Promise<ResponseOf<M[K]>>
}

/** What `client.service(def)` returns: one async function per method. */
export type ServiceClient<M extends Record<string, MethodDefinition>> = {
  [K in keyof M]: (request: RequestOf<M[K]>, options?: CallOptions) => Promise<ResponseOf<M[K]>>
}

/**
 * Declares a service: its name and, per method, the codecs of request and
 * response. Types flow from the codecs to `serve` and `client.service`.
 *
 * @example
 * const KV = defineService('kv', {
 *   get: { request: codecs.json<{ key: string }>(), response: codecs.json<{ value?: string }>() },
 * })
 */
export function defineService<const M extends Record<string, MethodDefinition>>(
  name: string,
  methods: M,
): ServiceDefinition<M> {
  checkServiceName('name', name)
  checkMethods('methods', methods)
  return { name, methods }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function checkServiceName(parameter: string, name: unknown): void {
  if (typeof name !== 'string' || name.length === 0 || name.includes('.')) {
    throw new InvalidArgumentError(parameter, 'a non-empty string without "."', name)
  }
}

function checkMethods(parameter: string, methods: unknown): void {
  if (!isObject(methods)) {
    throw new InvalidArgumentError(parameter, 'an object with one { request, response } codec pair per method', methods)
  }
  for (const [method, def] of Object.entries(methods)) {
    if (method.length === 0) throw new InvalidArgumentError(parameter, 'method names that are non-empty', methods)
    if (!isObject(def)) throw new InvalidArgumentError(`${parameter}.${method}`, 'a { request, response } codec pair', def)
    for (const side of ['request', 'response'] as const) {
      const c = def[side] as { encode?: unknown; decode?: unknown } | undefined
      if (!isObject(c) || typeof c.encode !== 'function' || typeof c.decode !== 'function') {
        throw new InvalidArgumentError(`${parameter}.${method}.${side}`, 'a codec (an object with encode and decode functions)', c)
      }
    }
  }
}

/** @internal a service definition handed to `serve` or `client.service` (made by `defineService`, or by hand). */
export function checkServiceDefinition(parameter: string, def: unknown): asserts def is ServiceDefinition<Record<string, MethodDefinition>> {
  if (!isObject(def)) throw new InvalidArgumentError(parameter, 'a service definition from defineService()', def)
  checkServiceName(`${parameter}.name`, def.name)
  checkMethods(`${parameter}.methods`, def.methods)
}

/**
 * @internal encodes a typed call's value with its codec; a value of the
 * wrong kind (the codec refuses it, or returns something other than bytes)
 * is `INVALID_ARGUMENT` naming `parameter`.
 */
export function encodeWith(codec: AnyCodec, value: unknown, parameter: string): Uint8Array {
  let out: unknown
  try {
    out = (codec.encode as (v: unknown) => unknown)(value)
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(parameter, err.expected, value)
    throw err
  }
  if (isBytes(out)) return out
  if (ArrayBuffer.isView(out)) return viewBytes(parameter, out)
  throw new InvalidArgumentError(parameter, 'a value its codec encodes to bytes (the codec returned something else)', value)
}

/** The route a method travels on. */
export function methodRoute(service: string, method: string): string {
  return `${service}.${method}`
}
