import type { Codec } from './codec.js'
import type { CallOptions } from './client.js'
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
  if (typeof name !== 'string' || name.length === 0 || name.includes('.')) {
    throw new TypeError('service name must be a non-empty string without "."')
  }
  return { name, methods }
}

/** The route a method travels on. */
export function methodRoute(service: string, method: string): string {
  return `${service}.${method}`
}
