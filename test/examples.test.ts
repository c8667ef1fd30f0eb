// The examples in examples/ run, print what they promise and exit by
// themselves (nothing left open). They show what a new user should write:
// replicas with keys (generateKeyPair, auth 'mac'), not auth 'none'.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import t from 'tap'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

const cases: [string, RegExp[]][] = [
  ['broadcast.mjs', [/replica 1 says it received 3 prepares/, /^replica \d <- replica \d: view 1, seq 1, from \d \(signature verified\)$/m]],
  ['kv.mjs', [/put \{ applied: 3 \}/, /get from replica 3 \{ value: 'teal' \}/]],
  ['two-clusters.mjs', [/^west\/1 has block 1 \(from west\/1\)$/m, /^west\/3 has block 1 \(from west\/3\)$/m, /east replica 4 joined at epoch 1: peers 1, 2, 3/]],
  ['bft-kv.mjs', [/get color with quorum 2: teal \(seq 3\)/, /quorum 4: NO_QUORUM/, / {2}replica 4: a lie$/m]],
]
for (const [file, expected] of cases) {
  t.test(`examples/${file}`, async (t) => {
    const source = readFileSync(join(root, 'examples', file), 'utf8')
    t.match(source, /generateKeyPair\(\)/, 'generates key pairs')
    t.match(source, /auth: 'mac'/, "uses auth: 'mac'")
    t.notMatch(source, /auth: 'none'/, "does not opt out with auth: 'none'")
    const r = spawnSync(process.execPath, [join(root, 'examples', file)], { encoding: 'utf8', timeout: 30_000 })
    t.equal(r.status, 0, `exits 0 by itself${r.status === 0 ? '' : `: ${r.stderr}`}`)
    for (const re of expected) t.match(r.stdout, re)
  })
}
