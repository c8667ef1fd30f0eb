import { InvalidArgumentError } from './errors.js'

const cache = new Map<string, number>()
// id -> the name hashed to it in this thread; null once two names collide.
const names = new Map<number, string | null>()
const MAX_CACHED = 65536

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
  if (cache.size < MAX_CACHED) {
    cache.set(name, id)
    const known = names.get(id)
    if (known === undefined) names.set(id, name)
    else if (known !== name) names.set(id, null)
  }
  return id
}

/**
 * @internal The name of a route id, if this thread has hashed exactly one
 * name to it (registered a handler, sent, broadcast or called it); the wire
 * carries only the id.
 */
export function routeName(id: number): string | undefined {
  return names.get(id) ?? undefined
}
