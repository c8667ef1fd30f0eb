// npm pack / npm publish: the tarball carries prebuilt binaries. Builds this
// machine's (npm run prebuild) when it is one the package ships and its
// binary is missing, then checks that every platform package.json's
// "nexres.binaries" lists (the README's table) has its binary in
// prebuilds/, failing with what is missing and how to make it.
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const { platformName } = require('./native-help.cjs')
const wanted = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).nexres?.binaries ?? []

// "linux-x64-glibc" -> prebuilds/linux-x64/*.glibc.node; "darwin-arm64" -> prebuilds/darwin-arm64/*.node
function binaryOf(name) {
  const [platform, arch, libc] = name.split('-')
  const dir = join(root, 'prebuilds', `${platform}-${arch}`)
  if (!existsSync(dir)) return undefined
  return readdirSync(dir).find((f) => f.endsWith('.node') && (libc === undefined || f.includes(`.${libc}.`)))
}

const host = platformName()
if (wanted.includes(host) && binaryOf(host) === undefined) {
  process.stderr.write(`prepack: no binary for this machine (${host}) in prebuilds/: npm run prebuild\n`)
  execFileSync('npm', ['run', 'prebuild', '--silent'], { cwd: root, stdio: 'inherit' })
}
const missing = wanted.filter((p) => binaryOf(p) === undefined)
if (missing.length > 0) {
  process.stderr.write(
    `prepack: the package ships binaries for ${wanted.join(', ')}, but prebuilds/ has none for ${missing.join(', ')}. ` +
      'Build them on (or for) those platforms with `npm run prebuild` and copy them into prebuilds/ ' +
      'or drop them from package.json "nexres.binaries" and the README table.\n',
  )
  process.exit(1)
}
process.stderr.write(`prepack: binaries for ${wanted.join(', ')} are in prebuilds/\n`)
