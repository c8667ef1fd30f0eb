import { InvalidArgumentError } from './errors.js'

const cache = new Map<string, number>()

/**
 * Route id on the wire: FNV-1a 32 of the route name's UTF-8 bytes
 * (docs/PROTOCOL.md §3). Cached per name.
 */
export function routeId(name: string): number {
  let id = cache.get(name)
  if (id !== undefined) return id
  if (typeof name !== 'string') throw new InvalidArgumentError('name', 'a string (a route name)', name)
  let h = 0x811c9dc5
  for (const b of Buffer.from(name, 'utf8')) {
    h ^= b
    h = Math.imul(h, 0x01000193) >>> 0
  }
  id = h >>> 0
  if (cache.size < 65536) cache.set(name, id)
  return id
}
