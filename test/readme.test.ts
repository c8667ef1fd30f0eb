// The README's JavaScript snippets run as written (issue 15 item 6): each
// ```js block is written to a file inside the package (so that
// `import 'nexres-rpc'` resolves to it) and run with node; its fixed ports
// are swapped for free ones so that parallel test files cannot collide.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import t from 'tap'

import { freePorts } from './helpers.js'

const root = join(import.meta.dirname, '..')
const readme = readFileSync(join(root, 'README.md'), 'utf8')
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!)

t.test('the README has runnable snippets', async (t) => {
  t.ok(blocks.length >= 2, `${blocks.length} js blocks`)
})

for (const [i, block] of blocks.entries()) {
  t.test(`README snippet ${i + 1} runs as written`, async (t) => {
    const ports = await freePorts(5)
    // 7000 + id (ids 1..3), 7100, 7101: the ports the snippets name.
    const code = block
      .replace(/7000 \+ id/g, `${ports[0]! - 1} + id`)
      .replace(/\b7100\b/g, String(ports[3]))
      .replace(/\b7101\b/g, String(ports[4]))
    const dir = mkdtempSync(join(root, '.readme-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, `snippet-${i + 1}.mjs`)
    writeFileSync(file, code)
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000 })
    t.equal(r.status, 0, `exits 0${r.status !== 0 ? `: ${r.stderr.slice(0, 800)}` : ''}`)
    t.equal(r.stderr, '', 'nothing on stderr')
    t.ok(r.stdout.length > 0, `it prints what it shows (${JSON.stringify(r.stdout.slice(0, 120))})`)
  })
}
