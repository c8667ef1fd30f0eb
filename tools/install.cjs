'use strict'
// npm install: a prebuilt binary when one matches this platform; otherwise a
// source build (node-gyp-build runs node-gyp) when the tools for it are
// there; otherwise one message naming the platform, what is missing and how
// to install it (tools/native-help.cjs), instead of node-gyp's.
const path = require('path')
const { spawnSync } = require('child_process')

const root = path.join(__dirname, '..')
let found = false
try {
  require('node-gyp-build').path(root)
  found = true
} catch {
  // no prebuild and no local build: see below
}
if (found) process.exit(0)
const help = require('./native-help.cjs')
const missing = help.missingForSource()
if (missing.length > 0) {
  process.stderr.write(`${help.message(missing)}\n`)
  process.exit(1)
}
const r = spawnSync(process.execPath, [require.resolve('node-gyp-build/bin.js')], { cwd: root, stdio: 'inherit' })
process.exit(r.status === null ? 1 : r.status)
