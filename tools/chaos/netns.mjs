// Network namespaces for the chaos run (root with iproute2). Each replica
// gets a namespace of its own; every pair of replicas {i, j} gets a private
// link: a veth from each side into a hub namespace, joined there by a
// bridge of the pair, subnet 10.213.<pair>.0/24 (i is .i, j is .j). Nothing
// is added to the namespace this process runs in except the namespaces'
// names; deleting the namespaces removes every link.
//
// A partition of {i, j} sets the pair's two hub-side ends down: both
// replicas keep their interface and route (no carrier), and what they send
// on it is dropped silently, as on a cut cable.
import { execFileSync, spawn } from 'node:child_process'

const PREFIX = 'nxchaos-'

function ip(args) {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 })
}

/** Whether this process can make namespaces (root and `ip`); the reason when not. */
export function netnsUnavailable() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not root'
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore', timeout: 5000 })
  } catch {
    return '`ip` (iproute2) not found'
  }
  return undefined
}

/** Removes namespaces left by chaos runs whose process is gone (a run killed with SIGKILL). */
export function removeStale() {
  let list = ''
  try {
    list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 5000 })
  } catch {
    return
  }
  for (const line of list.split('\n')) {
    const m = line.match(new RegExp(`^(${PREFIX}(\\d+)-\\S+)`))
    if (!m) continue
    const pid = Number(m[2])
    let alive = true
    try {
      process.kill(pid, 0)
    } catch (err) {
      alive = err.code !== 'ESRCH'
    }
    if (!alive) {
      try {
        ip(['netns', 'del', m[1]])
      } catch {
        // gone meanwhile
      }
    }
  }
}

export class NetnsTopology {
  /** @param {number[]} ids replica ids */
  constructor(ids) {
    this.ids = ids
    this.tag = `${PREFIX}${process.pid}`
    this.hub = `${this.tag}-hub`
    this.made = []
    this.pairs = new Map() // 'i-j' (i < j) -> pair index 1..
    let n = 0
    for (const i of ids) for (const j of ids) if (i < j) this.pairs.set(`${i}-${j}`, ++n)
    if (n > 250) throw new Error('too many replicas for 10.213.<pair>.0/24')
  }

  ns(id) {
    return `${this.tag}-r${id}`
  }

  pairIndex(i, j) {
    return this.pairs.get(i < j ? `${i}-${j}` : `${j}-${i}`)
  }

  /** The address of replica `j` on its link with replica `i`. */
  addressOn(i, j) {
    return `10.213.${this.pairIndex(i, j)}.${j}`
  }

  /** Creates everything; on failure removes what it made and throws. */
  setup() {
    try {
      for (const name of [this.hub, ...this.ids.map((id) => this.ns(id))]) {
        ip(['netns', 'add', name])
        this.made.push(name)
        ip(['-n', name, 'link', 'set', 'lo', 'up'])
      }
      for (const [key, k] of this.pairs) {
        const [i, j] = key.split('-').map(Number)
        ip(['-n', this.hub, 'link', 'add', `b${k}`, 'type', 'bridge'])
        for (const [a, b, end] of [[i, j, 'a'], [j, i, 'b']]) {
          // in a's namespace: interface "to<b>"; in the hub: "p<k><end>"
          ip(['link', 'add', `to${b}`, 'netns', this.ns(a), 'type', 'veth', 'peer', 'name', `p${k}${end}`, 'netns', this.hub])
          ip(['-n', this.hub, 'link', 'set', `p${k}${end}`, 'master', `b${k}`])
          ip(['-n', this.hub, 'link', 'set', `p${k}${end}`, 'up'])
          ip(['-n', this.ns(a), 'addr', 'add', `${this.addressOn(b, a)}/24`, 'dev', `to${b}`])
          ip(['-n', this.ns(a), 'link', 'set', `to${b}`, 'up'])
        }
        ip(['-n', this.hub, 'link', 'set', `b${k}`, 'up'])
      }
    } catch (err) {
      this.teardown()
      const stderr = err?.stderr ? String(err.stderr).trim() : ''
      throw new Error(`network namespaces: ${err?.message?.split('\n')[0]}${stderr ? ` (${stderr})` : ''}`)
    }
  }

  /**
   * Checks that programs run in the namespaces (`ip netns exec` needs to
   * mount /sys, which some containers refuse) and that a TCP connection
   * from replica i's namespace reaches replica j's over their link.
   */
  async probe(i, j) {
    const port = 7099
    const server = spawn('ip', ['netns', 'exec', this.ns(j), process.execPath, '-e',
      `const s = require('net').createServer((c) => { c.end('ok'); s.close() }).listen(${port}, '${this.addressOn(i, j)}', () => console.log('listening')); setTimeout(() => process.exit(1), 8000).unref()`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err = ''
    server.stderr.on('data', (d) => (err += d))
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listener in ${this.ns(j)} within 8 s ${err.trim()}`)), 8000)
        server.stdout.once('data', () => {
          clearTimeout(timer)
          resolve()
        })
        server.once('exit', (code) => {
          clearTimeout(timer)
          reject(new Error(`\`ip netns exec\` failed (exit ${code}): ${err.trim()}`))
        })
      })
      const got = execFileSync('ip', ['netns', 'exec', this.ns(i), process.execPath, '-e',
        `const c = require('net').connect(${port}, '${this.addressOn(i, j)}'); let d = ''; c.on('data', (x) => (d += x)); c.on('end', () => process.stdout.write(d)); c.on('error', (e) => { console.error(e.message); process.exit(1) }); setTimeout(() => process.exit(1), 5000).unref()`,
      ], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] })
      if (got !== 'ok') throw new Error(`replica ${i}'s namespace cannot reach replica ${j}'s`)
    } catch (e) {
      const stderr = e?.stderr ? String(e.stderr).trim() : ''
      throw new Error(`network namespaces: ${e.message.split('\n')[0]}${stderr ? ` (${stderr})` : ''}`)
    } finally {
      server.kill('SIGKILL')
    }
  }

  /** The command prefix that runs a program in replica `id`'s namespace. */
  exec(id) {
    return ['ip', ['netns', 'exec', this.ns(id)]]
  }

  /** Cuts (down) or restores (up) the link between replicas i and j. */
  link(i, j, up) {
    const k = this.pairIndex(i, j)
    for (const end of ['a', 'b']) ip(['-n', this.hub, 'link', 'set', `p${k}${end}`, up ? 'up' : 'down'])
  }

  /** Deletes every namespace this run made (and with them every link). Synchronous: safe in 'exit'. */
  teardown() {
    for (const name of this.made.splice(0)) {
      try {
        ip(['netns', 'del', name])
      } catch {
        // already gone
      }
    }
  }
}
