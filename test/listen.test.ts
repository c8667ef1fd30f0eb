// Listening and descriptors: every descriptor the engine opens is
// close-on-exec (a child process spawned while replicas run holds none of
// their ports or connections, so a restart on the same ports works after
// close()); a failed start releases what it took and LISTEN_FAILED names the
// port (replica or client) and its address.
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { type Server, type Socket, connect, createServer } from 'node:net'

import t from 'tap'

import { type ClusterConfig, ListenError, Replica } from 'nexres-rpc'

import { freePorts, until } from './helpers.js'

const HOST = '127.0.0.1'

/** Inodes of the sockets a process holds open (from /proc/<pid>/fd). */
function socketInodes(pid: number): Set<string> {
  const out = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) out.add(m[1]!)
    } catch {
      // closed meanwhile
    }
  }
  return out
}

/** TCP sockets of this network namespace by inode: local port and whether listening. */
function tcpSockets(): Map<string, { port: number; listening: boolean }> {
  const out = new Map<string, { port: number; listening: boolean }>()
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10) continue
      const port = parseInt(f[1]!.split(':')[1]!, 16)
      out.set(f[9]!, { port, listening: f[3] === '0A' })
    }
  }
  return out
}

/** The TCP sockets (port, listening) among a process's descriptors. */
function tcpHeldBy(pid: number): { port: number; listening: boolean }[] {
  const tcp = tcpSockets()
  const held: { port: number; listening: boolean }[] = []
  for (const inode of socketInodes(pid)) {
    const s = tcp.get(inode)
    if (s) held.push(s)
  }
  return held
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(port, HOST, () => resolve(s))
  })
}

function closeServer(s: Server): Promise<void> {
  return new Promise((r) => s.close(() => r()))
}

async function clusterWithClientPorts(name: string): Promise<ClusterConfig> {
  const [p1, p2, c1, c2] = await freePorts(4)
  return {
    id: name,
    replicas: [
      { id: 1, host: HOST, port: p1!, clientPort: c1! },
      { id: 2, host: HOST, port: p2!, clientPort: c2! },
    ],
  }
}

/** What Replica.start rejects with for replica 1 of `cluster` (undefined: it started, and is closed). */
function startError(cluster: ClusterConfig): Promise<unknown> {
  return Replica.start({ auth: 'none', id: 1, cluster }).then(
    (r) => {
      void r.close({ timeoutMs: 0 })
      return undefined
    },
    (e: unknown) => e,
  )
}

t.test('a child spawned while replicas run holds none of their sockets; a restart on the same ports works', async (t) => {
  const cluster = await clusterWithClientPorts('cloexec')
  const start = (): Promise<Replica[]> =>
    Promise.all(cluster.replicas.map((r) => Replica.start({ auth: 'none', id: r.id, cluster })))
  let rs = await start()
  t.teardown(() => Promise.all(rs.map((r) => r.close({ timeoutMs: 0 }))))
  await Promise.all(rs.map((r) => r.waitForPeers([...r.peers], { timeoutMs: 10_000 })))
  // Every kind of descriptor is open now: both listeners, accepted and
  // outbound replica connections, and an accepted client connection.
  const client: Socket = connect(cluster.replicas[0]!.clientPort!, HOST)
  client.on('error', () => {})
  t.teardown(() => client.destroy())
  await new Promise<void>((r) => client.once('connect', () => r()))
  await until(() => rs[0]!.stats().clients.length === 1, 5000, 'the client connection accepted')
  const ours = tcpHeldBy(process.pid)
  const ports = new Set(cluster.replicas.flatMap((r) => [r.port, r.clientPort!]))
  t.ok(ours.filter((s) => s.listening && ports.has(s.port)).length === 4, 'this process listens on both ports of both replicas')

  const child: ChildProcess = spawn('sleep', ['30'], { stdio: 'ignore' })
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve())
    child.once('error', reject)
  })
  const pid = child.pid!
  // Past exec (descriptors without close-on-exec are still open after it).
  await until(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('sleep'), 5000, 'the child to exec')
  t.same(tcpHeldBy(pid), [], 'the child holds no TCP socket of the engine (listening or connected)')

  await Promise.all(rs.map((r) => r.close({ timeoutMs: 0 })))
  client.destroy()
  t.same(tcpHeldBy(pid), [], 'after close() the child still holds none')
  const listening = [...tcpSockets().values()].filter((s) => s.listening && ports.has(s.port))
  t.same(listening, [], 'no replica or client port is in LISTEN after close()')

  rs = await start()
  t.same(
    rs.map((r) => [r.port, r.clientPort]),
    cluster.replicas.map((r) => [r.port, r.clientPort]),
    'a restart binds the same replica and client ports while the child still runs',
  )
  await Promise.all(rs.map((r) => r.waitForPeers([...r.peers], { timeoutMs: 10_000 })))
  t.equal(child.exitCode, null, 'the child is still running')
})

t.test('client port busy: LISTEN_FAILED names the client port and its address; the replica port is free again', async (t) => {
  const [port, clientPort, other] = await freePorts(3)
  const busy = await listenOn(clientPort!)
  t.teardown(() => closeServer(busy))
  const cluster: ClusterConfig = {
    id: 'busy-client',
    replicas: [
      { id: 1, host: HOST, port: port!, clientPort: clientPort! },
      { id: 2, host: HOST, port: other! },
    ],
  }
  const err = await startError(cluster)
  t.ok(err instanceof ListenError, 'a ListenError')
  const le = err as ListenError
  t.equal(le.code, 'LISTEN_FAILED')
  t.equal(le.which, 'client', 'which: client')
  t.equal(le.address, `${HOST}:${clientPort}`, 'address: host:port of the client port')
  t.equal(le.host, HOST)
  t.equal(le.port, clientPort)
  t.match(le.message, /client port/, 'the message says client port')
  t.match(le.message, `${HOST}:${clientPort}`, 'the message names the address')
  // Nothing the failed start took is still bound.
  const s = await listenOn(port!)
  t.pass('the replica port can be bound again right away')
  await closeServer(s)
})

t.test('replica port busy: LISTEN_FAILED names the replica port and its address', async (t) => {
  const [port, other] = await freePorts(2)
  const busy = await listenOn(port!)
  t.teardown(() => closeServer(busy))
  const cluster: ClusterConfig = {
    id: 'busy-replica',
    replicas: [
      { id: 1, host: HOST, port: port! },
      { id: 2, host: HOST, port: other! },
    ],
  }
  const err = await startError(cluster)
  t.ok(err instanceof ListenError, 'a ListenError')
  const le = err as ListenError
  t.equal(le.which, 'replica', 'which: replica')
  t.equal(le.address, `${HOST}:${port}`, 'address: host:port of the replica port')
  t.equal(le.port, port)
  t.match(le.message, /replica port/, 'the message says replica port')
  t.match(le.message, `${HOST}:${port}`, 'the message names the address')
})
