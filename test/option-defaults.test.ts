// The defaults docs/API.md gives are the ones the code applies: every
// integer option the engine takes has one row in lib/engine-options.ts, and
// the documented default of each must match it (a default changed in one
// place and not the other fails here).
import { readFileSync } from 'node:fs'

import t from 'tap'

import { ENGINE_INTEGER_OPTIONS } from '../lib/engine-options.js'
import { resolveOptions } from '../lib/config.js'

const api = readFileSync(new URL('../docs/API.md', import.meta.url), 'utf8')

/** "16 MiB", "64 KiB", "10,000", "60000" as a number. */
function parse(text: string): number | undefined {
  const m = /^([\d,]+)\s*(KiB|MiB|GiB)?$/.exec(text.trim())
  if (m === null) return undefined
  const unit = m[2] === 'KiB' ? 1024 : m[2] === 'MiB' ? 1024 ** 2 : m[2] === 'GiB' ? 1024 ** 3 : 1
  return Number(m[1]!.replace(/,/g, '')) * unit
}

/** The default docs/API.md gives for `key`: its options-table row, or "`key` (N ...)" in the text. */
function documented(key: string): string | undefined {
  const row = new RegExp(`^\\| \`${key}\` \\| ([^|]+) \\|`, 'm').exec(api)
  if (row !== null) return row[1]
  return new RegExp(`\`${key}\`\\s+\\(([\\d,]+(?: [KMG]iB)?)`).exec(api)?.[1]
}

const cluster = { id: 'defaults', replicas: [{ id: 1, host: '127.0.0.1', port: 1 }] }
const resolved = resolveOptions({ id: 1, cluster, auth: 'none' }) as unknown as Record<string, number>

for (const [key, [, , dflt]] of Object.entries(ENGINE_INTEGER_OPTIONS)) {
  t.test(key, async (t) => {
    const text = documented(key)
    t.ok(text !== undefined, `docs/API.md documents ${key} with its default`)
    t.equal(parse(text ?? ''), dflt, `documented default "${text}" is the table's ${dflt}`)
    t.equal(resolved[key], dflt, `resolveOptions fills in ${dflt}`)
  })
}
