// The examples in examples/ run, print what they promise and exit by
// themselves (nothing left open).
import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import t from 'tap'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

const cases: [string, RegExp][] = [
  ['broadcast.mjs', /replica 1 says it received 3 prepares/],
  ['kv.mjs', /get from replica 3 \{ value: 'teal' \}/],
]
for (const [file, expect] of cases) {
  t.test(`examples/${file}`, async (t) => {
    const r = spawnSync(process.execPath, [join(root, 'examples', file)], { encoding: 'utf8', timeout: 30_000 })
    t.equal(r.status, 0, `exits 0 by itself${r.status === 0 ? '' : `: ${r.stderr}`}`)
    t.match(r.stdout, expect)
  })
}
