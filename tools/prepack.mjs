// npm pack / npm publish: the tarball carries prebuilt binaries. Builds
// the missing Linux ones this machine can make (tools/cross-prebuild.sh:
// linux-x64 with its glibc floor inside a Debian 11 chroot, linux-arm64
// cross-compiled; as root on Debian), else this machine's own (npm run
// prebuild); then checks that every platform package.json's
// "nexres.binaries" lists (the README's table) has its binary in
// prebuilds/, and that a binary with a "nexres.floor" needs no newer GLIBC
// or GLIBCXX symbol (tools/check-binary.mjs), failing with what is wrong
// and how to make it. NEXRES_ALLOW_NEWER_GLIBC=1 packs a binary over its
// floor anyway (a local pack, to try on this machine only).
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const { platformName } = require('./native-help.cjs')
const nexres = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).nexres ?? {}
const wanted = nexres.binaries ?? []
const floors = nexres.floor ?? {}

// "linux-x64-glibc" -> prebuilds/linux-x64/*.glibc.node; "darwin-arm64" -> prebuilds/darwin-arm64/*.node
function binaryOf(name) {
  const [platform, arch, libc] = name.split('-')
  const dir = join(root, 'prebuilds', `${platform}-${arch}`)
  if (!existsSync(dir)) return undefined
  return readdirSync(dir).find((f) => f.endsWith('.node') && (libc === undefined || f.includes(`.${libc}.`)))
}

const host = platformName()
const cross = { 'linux-x64-glibc': 'x64', 'linux-arm64-glibc': 'arm64' }
const canCross = process.platform === 'linux' && process.getuid?.() === 0 && existsSync('/usr/bin/apt-get')
const toCross = wanted.filter((p) => cross[p] !== undefined && binaryOf(p) === undefined)
if (canCross && toCross.length > 0) {
  process.stderr.write(`prepack: building ${toCross.join(', ')} (tools/cross-prebuild.sh)\n`)
  execFileSync('bash', [join(root, 'tools', 'cross-prebuild.sh'), ...toCross.map((p) => cross[p])], { cwd: root, stdio: 'inherit' })
}
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
// The floors: no symbol version newer than the README says.
const over = []
for (const [p, floor] of Object.entries(floors)) {
  if (!wanted.includes(p)) continue
  const [platform, arch] = p.split('-')
  const file = join(root, 'prebuilds', `${platform}-${arch}`, binaryOf(p))
  const args = [join(root, 'tools', 'check-binary.mjs'), file, '--glibc', floor.glibc, '--glibcxx', floor.glibcxx]
  const r = spawnSync(process.execPath, args, { encoding: 'utf8' })
  process.stderr.write(`prepack: ${r.stdout}${r.stderr}`)
  if (r.status !== 0) over.push(p)
}
if (over.length > 0 && process.env.NEXRES_ALLOW_NEWER_GLIBC !== '1') {
  process.stderr.write(
    `prepack: the binary for ${over.join(', ')} needs a newer glibc than the README promises (package.json "nexres.floor"): ` +
      'build it with `npm run prebuild:cross` (as root on Debian: a Debian 11 chroot) or on a system no newer than the floor; ' +
      'NEXRES_ALLOW_NEWER_GLIBC=1 packs it anyway, for this machine only.\n',
  )
  process.exit(1)
}
process.stderr.write(`prepack: binaries for ${wanted.join(', ')} are in prebuilds/\n`)
