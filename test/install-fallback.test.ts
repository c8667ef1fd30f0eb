// npm install on a platform with no prebuilt binary and no build tools
// (issue 15 item 3): tools/install.cjs stops with one message naming the
// platform, what is missing and the command that installs it, instead of
// node-gyp's "Could not find any Python". The package is laid out in a
// temporary directory without prebuilds/ or build/, and run with a PATH
// that holds only sh and node (no compiler, make or Python) and no Asio.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import t from 'tap'

const root = join(import.meta.dirname, '..')

t.test('no binary and no tools: one clear message, exit 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nexres-fallback-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'tools'))
  mkdirSync(join(dir, 'node_modules'))
  copyFileSync(join(root, 'package.json'), join(dir, 'package.json'))
  for (const f of ['install.cjs', 'native-help.cjs']) copyFileSync(join(root, 'tools', f), join(dir, 'tools', f))
  symlinkSync(join(root, 'node_modules', 'node-gyp-build'), join(dir, 'node_modules', 'node-gyp-build'))
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  symlinkSync(process.execPath, join(bin, 'node'))
  const sh = ['/bin/sh', '/usr/bin/sh'].find((p) => existsSync(p))!
  symlinkSync(sh, join(bin, 'sh'))
  for (const tool of ['g++', 'c++', 'clang++', 'make', 'python3']) {
    t.not(spawnSync(sh, ['-c', `command -v ${tool}`], { env: { PATH: bin } }).status, 0, `${tool} hidden`)
  }
  const r = spawnSync(process.execPath, [join(dir, 'tools', 'install.cjs')], {
    cwd: dir,
    env: { PATH: bin, HOME: dir, ASIO_INCLUDE_DIR: join(dir, 'no-asio') },
    encoding: 'utf8',
    timeout: 60_000,
  })
  t.equal(r.status, 1, 'the install fails')
  const msg = r.stderr.trim()
  t.equal(msg.split('\n').length, 1, `one line: ${msg}`)
  t.match(msg, new RegExp(`no prebuilt binary for ${process.platform}-${process.arch}`), 'names the platform')
  t.match(msg, /ships binaries for linux-x64-glibc/, 'names the platforms that have binaries')
  t.match(msg, /a C\+\+17 compiler/, 'names the compiler')
  t.match(msg, /make/, 'names make')
  t.match(msg, /Python 3/, 'names Python')
  t.match(msg, /Asio/, 'names Asio')
  if (existsSync('/etc/debian_version')) t.match(msg, /apt-get install build-essential python3 libasio-dev/, 'and the command that installs them')
  t.notMatch(r.stderr + r.stdout, /gyp (ERR|info)|Could not find any Python|No native build was found/, "nothing of node-gyp's")
})

t.test('a matching binary: nothing to do', async (t) => {
  // The repository itself: build/ or prebuilds/ has this machine's binary.
  const r = spawnSync(process.execPath, [join(root, 'tools', 'install.cjs')], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 0, 'exits 0')
  t.equal(r.stderr, '', 'silently')
})

t.test('npm pack refuses a package without every listed binary (prepack)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nexres-prepack-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'tools'))
  for (const f of ['prepack.mjs', 'native-help.cjs', 'check-binary.mjs']) copyFileSync(join(root, 'tools', f), join(dir, 'tools', f))
  type Nexres = { binaries: string[]; floor?: Record<string, { glibc: string; glibcxx: string }> }
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { nexres: Nexres }
  mkdirSync(join(dir, 'prebuilds'))
  for (const p of readdirSync(join(root, 'prebuilds'))) symlinkSync(join(root, 'prebuilds', p), join(dir, 'prebuilds', p))
  const run = (nexres: Nexres, env: Record<string, string> = {}): { status: number | null; err: string } => {
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ ...pkg, nexres }))
    const r = spawnSync(process.execPath, [join(dir, 'tools', 'prepack.mjs')], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, ...env },
    })
    return { status: r.status, err: r.stderr }
  }
  const ok = run(pkg.nexres)
  t.equal(ok.status, 0, `the listed binaries are there, within their floors: ${ok.err.trim()}`)
  t.match(ok.err, /GLIBC_2\.\d+ <= GLIBC_2\.31: ok/, 'the x64 binary needs at most GLIBC_2.31')
  t.match(ok.err, /GLIBCXX_3\.4\.\d+ <= GLIBCXX_3\.4\.28: ok/, 'and at most GLIBCXX_3.4.28')
  // A platform this machine cannot build for.
  const missing = run({ ...pkg.nexres, binaries: [...pkg.nexres.binaries, 'darwin-arm64'] })
  t.equal(missing.status, 1, 'a listed platform without its binary stops the pack')
  t.match(missing.err, /has none for darwin-arm64/, `and says which (${missing.err.trim()})`)

  // A binary over its floor: Debian 12's libstdc++ needs GLIBC_2.34 and later.
  const libstdcxx = ['/lib/x86_64-linux-gnu/libstdc++.so.6', '/usr/lib/x86_64-linux-gnu/libstdc++.so.6'].find((f) => existsSync(f))
  if (libstdcxx === undefined || process.arch !== 'x64') return
  mkdirSync(join(dir, 'prebuilds', 'linux-newer'))
  copyFileSync(libstdcxx, join(dir, 'prebuilds', 'linux-newer', 'x.glibc.node'))
  const floor = { binaries: ['linux-newer-glibc'], floor: { 'linux-newer-glibc': { glibc: '2.31', glibcxx: '3.4.28' } } }
  const over = run(floor)
  t.equal(over.status, 1, 'a binary needing a newer glibc than its floor stops the pack')
  t.match(over.err, /needs a newer glibc than the README promises/, 'and says so')
  t.match(over.err, /over the floor GLIBC_2\.31: \S+@GLIBC_2\.3[2-9]/, 'naming a symbol over the floor')
  t.equal(run(floor, { NEXRES_ALLOW_NEWER_GLIBC: '1' }).status, 0, 'NEXRES_ALLOW_NEWER_GLIBC=1 packs it anyway')
})
