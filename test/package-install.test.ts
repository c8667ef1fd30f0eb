// Packs the package, installs the tarball into an empty project with the
// compiler, make, Python and the Asio headers out of reach, and runs a round
// trip through it: the prebuilt binary (prebuildify --napi --strip
// --tag-libc, loaded by node-gyp-build) must be what makes it work.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import t from 'tap'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

t.test('npm install of the packed tarball uses the prebuilt binary, no compiler needed', { timeout: 600_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'nexres-pack-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))

  const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`)
  // Built again when any native source is newer than it: a stale binary
  // would be packed otherwise.
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)))
  const stale = (): boolean => {
    const bins = existsSync(prebuilt) ? readdirSync(prebuilt).filter((f) => f.endsWith('.node')) : []
    if (bins.length === 0) return true
    const built = Math.min(...bins.map((f) => statSync(join(prebuilt, f)).mtimeMs))
    return newest(join(root, 'native', 'core')) > built || newest(join(root, 'native', 'addon')) > built
  }
  // A binary rebuilt here is this machine's (not the floor build of
  // tools/cross-prebuild.sh): packed for this test only.
  const rebuilt = stale()
  if (rebuilt) {
    execFileSync('npm', ['run', 'prebuild', '--silent'], { cwd: root, stdio: 'ignore', timeout: 300_000 })
  }
  t.ok(readdirSync(prebuilt).some((f) => f.endsWith('.node')), 'a prebuilt binary exists')

  const packOut = execFileSync('npm', ['pack', '--silent', '--pack-destination', work], {
    cwd: root,
    encoding: 'utf8',
    timeout: 300_000,
    env: rebuilt ? { ...process.env, NEXRES_ALLOW_NEWER_GLIBC: '1' } : process.env,
  })
  const tarball = join(work, packOut.trim().split('\n').pop()!)
  t.ok(existsSync(tarball), `packed ${tarball}`)
  // Every platform the README lists has its binary in the tarball.
  const listed = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n')
  const { binaries } = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { nexres: { binaries: string[] } }).nexres
  for (const p of binaries) {
    const [platform, arch, libc] = p.split('-')
    const inside = listed.filter((f) => f.startsWith(`package/prebuilds/${platform}-${arch}/`) && f.endsWith(`.${libc}.node`))
    t.equal(inside.length, 1, `the tarball carries the ${p} binary (${inside.join(', ')})`)
  }

  // A PATH with node, npm and sh only: no g++, make, python3 or cmake.
  const bin = join(work, 'bin')
  mkdirSync(bin)
  symlinkSync(process.execPath, join(bin, 'node'))
  symlinkSync('/bin/sh', join(bin, 'sh')) // npm runs install scripts through sh
  const npmCli = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')
  writeFileSync(join(bin, 'npm'), `#!/bin/sh\nexec "${process.execPath}" "${npmCli}" "$@"\n`, { mode: 0o755 })
  for (const tool of ['g++', 'c++', 'make', 'python3', 'cmake']) {
    t.equal(spawnSync('sh', ['-c', `command -v ${tool}`], { env: { PATH: bin } }).status !== 0, true, `${tool} hidden`)
  }

  const app = join(work, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }))
  const env = {
    PATH: bin,
    HOME: process.env.HOME ?? work,
    ASIO_INCLUDE_DIR: join(work, 'no-asio-here'),
    npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? work, '.npm'),
  }
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
    cwd: app,
    env,
    encoding: 'utf8',
    timeout: 300_000,
  })
  t.equal(install.status, 0, `npm install succeeded${install.status === 0 ? '' : `: ${install.stderr}`}`)
  t.notOk(existsSync(join(app, 'node_modules', 'nexres-rpc', 'build')), 'nothing was compiled')

  writeFileSync(
    join(app, 'roundtrip.mjs'),
    `import net from 'node:net'
import { Replica, Client } from 'nexres-rpc'
const free = () => new Promise((r) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)) }) })
const [p1, p2, c1] = [await free(), await free(), await free()]
const cluster = { id: 'pkg', replicas: [{ id: 1, host: '127.0.0.1', port: p1, clientPort: c1 }, { id: 2, host: '127.0.0.1', port: p2 }] }
const [a, b] = await Promise.all([Replica.start({ auth: 'none', id: 1, cluster }), Replica.start({ auth: 'none', id: 2, cluster })])
const got = new Promise((resolve) => b.on('ping', (m) => resolve(m.text())))
await a.waitForPeers()
a.send(2, 'ping', 'over the prebuilt binary')
a.handle('echo', (req) => req)
const c = await Client.connect({ host: '127.0.0.1', port: a.clientPort })
const echo = Buffer.from(await c.call('echo', 'echo ok')).toString()
console.log(JSON.stringify({ message: await got, echo }))
await c.close()
await Promise.all([a.close(), b.close()])
`,
  )
  const run = spawnSync(process.execPath, ['roundtrip.mjs'], { cwd: app, env, encoding: 'utf8', timeout: 60_000 })
  t.equal(run.status, 0, `round trip ran${run.status === 0 ? '' : `: ${run.stderr}`}`)
  t.same(JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}'), { message: 'over the prebuilt binary', echo: 'echo ok' })
})
