// The package is ESM; on the Node versions package.json's engines allow
// (^20.19 || >=22.12, where require(esm) is on by default) CommonJS users
// require() it too (issue 15 item 5). Both ways, from a consumer's file
// inside the package (self-reference), every entry point.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import t from 'tap'

const root = join(import.meta.dirname, '..')

function run(args: string[]): { status: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, out: r.stdout.trim(), err: r.stderr }
}

t.test("engines names the versions where require(esm) works", async (t) => {
  const engines = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).engines.node as string
  t.equal(engines, '^20.19.0 || >=22.12.0')
  const [major, minor] = process.versions.node.split('.').map(Number) as [number, number]
  t.ok((major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major > 22, `this Node (${process.versions.node}) is one of them`)
})

t.test('require() and import of every entry point', async (t) => {
  const entries = ['nexres-rpc', 'nexres-rpc/metrics', 'nexres-rpc/wire']
  for (const e of entries) {
    const cjs = run(['-e', `const m = require(${JSON.stringify(e)}); console.log(Object.keys(m).length)`])
    t.equal(cjs.status, 0, `require('${e}') works${cjs.status !== 0 ? `: ${cjs.err.slice(0, 400)}` : ''}`)
    t.ok(Number(cjs.out) > 0, `require('${e}') has ${cjs.out} exports`)
    const esm = run(['--input-type=module', '-e', `const m = await import(${JSON.stringify(e)}); console.log(Object.keys(m).length)`])
    t.equal(esm.status, 0, `import('${e}') works`)
    t.equal(esm.out, cjs.out, `the same exports both ways (${esm.out})`)
  }
  const r = run(['-e', "const { Replica, Client, generateKeyPair } = require('nexres-rpc'); console.log(typeof Replica.start, typeof Client.connect, generateKeyPair().publicKey.length)"])
  t.equal(r.out, 'function function 43', 'the API is usable from CommonJS')
})
