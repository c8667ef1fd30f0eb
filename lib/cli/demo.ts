// `nexres-rpc demo` (the parent): starts a local cluster on 127.0.0.1, one
// replica per child process (the `replica` role, replica-role.ts, its
// config as JSON in NEXRES_DEMO_REPLICA, talking to the parent over IPC),
// keeps 32 echo calls outstanding against the replicas' client ports,
// redraws a progress line and prints a summary (summary.ts). With --auth
// mac the parent generates one key pair per replica: public keys go into
// the cluster config, each child gets its private key.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { createServer } from 'node:net'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'

import type { CallOptions, Client, ClusterConfig } from '../index.js'
import { HEADER_BYTES } from '../wire.js'
import { type DemoOptions, HOST, MiB, OUTSTANDING } from './args.js'
import { type ChildConfig, type ChildMessage, type DemoChild, DRAIN_TIMEOUT_MS, EXIT_TIMEOUT_MS, type Got, type LoadState, PEERS_TIMEOUT_MS, type ParentMessage, ROUTE_ECHO, errorCode, errorMessage } from './demo-protocol.js'
import { type LatencyRecorders, latencyRecorders } from './latency.js'
import { type Output, count, makeOutput, ms, rate } from './output.js'
import { printSummary } from './summary.js'

/** The script children run (the CLI's entry, with the `replica` role). */
const ENTRY = fileURLToPath(new URL('./main.js', import.meta.url))

const TTY_REDRAW_MS = 250
const PLAIN_LINE_MS = 1000
/** Rates on the progress line are taken over this window. */
const RATE_WINDOW_MS = 1000
/** Replicas started (ports bound) within this. */
const START_TIMEOUT_MS = 20_000
const CALL_TIMEOUT_MS = 10_000
/** Attempts at starting the cluster when a port picked as free was taken meanwhile. */
const START_ATTEMPTS = 3

class DemoError extends Error {
  readonly code: string | undefined
  constructor(message: string, code?: string) {
    super(message)
    this.name = 'DemoError'
    this.code = code
  }
}

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer()
          s.once('error', reject)
          s.listen(0, HOST, () => resolve(s))
        }),
    ),
  )
  const ports = servers.map((s) => {
    const a = s.address()
    return typeof a === 'object' && a !== null ? a.port : 0
  })
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

export async function demo(opts: DemoOptions): Promise<number> {
  const bus = new EventEmitter()
  bus.setMaxListeners(0)
  let interrupted = false
  let children: DemoChild[] = []
  const out = makeOutput(() => {
    interrupted = true
    bus.emit('change')
  })

  // Ctrl-C reaches the whole process group; the children ignore it and the
  // parent stops them in order. A second Ctrl-C kills them.
  const onSigint = (): void => {
    if (interrupted) {
      for (const c of children) if (!c.exit) c.proc.kill('SIGKILL')
      process.exit(130)
    }
    interrupted = true
    out.warn('interrupted: stopping the cluster (Ctrl-C again to kill it)')
    bus.emit('change')
  }
  process.on('SIGINT', onSigint)

  let nexres: typeof import('../index.js')
  try {
    nexres = await import('../index.js')
  } catch (err) {
    process.off('SIGINT', onSigint)
    process.stderr.write(`nexres-rpc: cannot load the library: ${errorMessage(err)}\n`)
    return 1
  }
  const latency = await latencyRecorders()

  const frame = HEADER_BYTES + opts.size
  // A smaller high-water mark than the 16 MiB default keeps the memory of a
  // 16-replica demo modest; the cap leaves room for the one broadcast that
  // may go past the mark before the loop waits for 'drain'. Past 4 replicas,
  // one io thread each (16 processes x 2 threads gains nothing on a laptop).
  const highWaterMark = Math.max(4 * MiB, 4 * frame)
  const replicaConfig = {
    size: opts.size,
    highWaterMark,
    maxQueueBytes: 4 * highWaterMark,
    ioThreads: opts.replicas <= 4 ? 2 : 1,
    auth: opts.auth,
  }

  const many = opts.clusters > 1
  out.line(`nexres-rpc demo: ${many ? `${opts.clusters} clusters of ` : ''}${opts.replicas} replicas on ${HOST}, ${opts.duration} s of traffic, ${count(opts.size)}-byte payloads, auth ${opts.auth}${opts.byzantine > 0 ? `, ${opts.byzantine} lying` : ''}`)

  const clients: Client[] = []
  const load: LoadState = { running: false, requests: 0, errors: 0, mismatches: 0, liesSeen: 0, lastError: '', endedAt: 0 }
  let code = 0
  try {
    // -- start: pick ports, spawn the replicas, wait until they are bound ---
    let clusters: ClusterConfig[] = []
    const t0 = performance.now()
    for (let attempt = 1; ; attempt++) {
      const ports = await freePorts(opts.replicas * opts.clusters)
      // auth mac: one key pair per replica; the public keys go into the
      // cluster config every replica gets, each private key to its replica only.
      const keys = ports.map(() => (opts.auth !== 'none' ? nexres.generateKeyPair() : undefined))
      const tag = randomBytes(4).toString('hex')
      clusters = Array.from({ length: opts.clusters }, (_, k) => ({
        id: many ? `demo-${tag}-c${k + 1}` : `demo-${tag}`,
        replicas: Array.from({ length: opts.replicas }, (_, i) => {
          const j = k * opts.replicas + i
          return { id: i + 1, host: HOST, port: ports[j]!, clientPort: 0, ...(keys[j] ? { publicKey: keys[j].publicKey } : {}) }
        }),
      }))
      // --byzantine N: the last N replicas lie. --clusters: each replica links to the other clusters too.
      children = clusters.flatMap((c, k) =>
        c.replicas.map((r, i) =>
          spawnReplica(
            {
              id: r.id,
              cluster: c,
              ...(many ? { remoteClusters: clusters.filter((o) => o !== c) } : {}),
              ...replicaConfig,
              privateKey: keys[k * opts.replicas + i]?.privateKey,
              liar: i >= opts.replicas - opts.byzantine,
            },
            many ? `c${k + 1}/${r.id}` : String(r.id),
            bus,
            out,
          ),
        ),
      )
      try {
        await waitAll(children, 'ready', START_TIMEOUT_MS, 'start', bus, () => interrupted)
        break
      } catch (err) {
        const portTaken = children.some((ch) => ch.failureCode === 'LISTEN_FAILED')
        if (!portTaken || attempt >= START_ATTEMPTS || interrupted) throw err
        out.warn(`a port picked as free was taken meanwhile (${errorMessage(err)}); retrying with new ports`)
        await stopChildren(children, 3000)
      }
    }
    const cluster = clusters[0]!
    await waitAll(children, 'up', PEERS_TIMEOUT_MS, 'connect to every peer', bus, () => interrupted)
    const total = opts.replicas * opts.clusters
    const localLinks = opts.clusters * opts.replicas * (opts.replicas - 1)
    const remoteLinks = total * (total - opts.replicas)
    const links = localLinks + remoteLinks
    const kind = opts.auth === 'seal' ? 'encrypted ' : opts.auth === 'mac' ? 'authenticated ' : ''
    out.line(
      many
        ? `clusters up in ${(performance.now() - t0).toFixed(0)} ms: ${total} processes in ${opts.clusters} clusters (epoch 0), ${localLinks} ${kind}links within them and ${remoteLinks} to the other clusters, replica ports ${clusters.map((c) => c.replicas.map((r) => r.port).join(' ')).join(' | ')}`
        : `cluster up in ${(performance.now() - t0).toFixed(0)} ms: ${opts.replicas} processes, ${links} ${kind}links, replica ports ${cluster.replicas.map((r) => r.port).join(' ')}`,
    )

    // -- clients: one per replica, OUTSTANDING calls spread over them -------
    // With --byzantine: one quorum client to every replica (f = the liars).
    if (opts.byzantine > 0) {
      const replicas = children.map((c) => ({ host: HOST, port: c.got.ready?.clientPort ?? 0 }))
      clients.push(await nexres.Client.connect({ replicas, f: opts.byzantine, clusterId: cluster.id, timeoutMs: CALL_TIMEOUT_MS }))
    } else {
      // (With --clusters, the first cluster's replicas serve the calls.)
      for (const c of children.slice(0, opts.replicas)) {
        clients.push(await nexres.Client.connect({ host: HOST, port: c.got.ready?.clientPort ?? 0, clusterId: cluster.id, timeoutMs: CALL_TIMEOUT_MS }))
      }
    }
    const request = randomBytes(opts.size)
    // Every reply a quorum call sees passes through its key: the ones that
    // differ from the request are lies (outvoted, or the call fails).
    const callOptions =
      opts.byzantine > 0
        ? {
            quorum: opts.byzantine + 1,
            key: (reply: Uint8Array): Uint8Array => {
              if (!Buffer.from(reply).equals(request)) load.liesSeen++
              return reply
            },
          }
        : undefined

    // -- traffic ----------------------------------------------------------
    const tGo = performance.now()
    for (const c of children) send(c, { t: 'go' })
    load.running = true
    const workers = Array.from({ length: OUTSTANDING }, (_, i) => callLoop(clients[i % clients.length]!, request, load, latency, callOptions))

    const totals = (): { msgs: number; up: number; cross: number } => {
      let msgs = 0
      let up = 0
      let cross = 0
      for (const c of children) {
        msgs += c.latest?.msgsIn ?? 0
        up += c.latest?.up ?? 0
        cross += c.latest?.crossIn ?? 0
      }
      return { msgs, up, cross }
    }
    const samples = [{ t: tGo, msgs: 0, reqs: 0 }]
    let lastTick = tGo
    const tick = (): void => {
      const now = performance.now()
      lastTick = now
      const { msgs, up } = totals()
      samples.push({ t: now, msgs, reqs: load.requests })
      while (samples.length > 2 && samples[1]!.t <= now - RATE_WINDOW_MS) samples.shift()
      const base = samples[0]!
      const secs = Math.max(1e-3, (now - base.t) / 1000)
      // p99 of the calls completed since the last line (the recent latency).
      const p99 = latency.window.percentile(99)
      latency.window.reset()
      const elapsed = Math.min((now - tGo) / 1000, opts.duration)
      out.progress(
        `[${elapsed.toFixed(1).padStart(5)}s/${opts.duration}s] msgs/s ${rate((msgs - base.msgs) / secs).padStart(8)}` +
          `  req/s ${rate((load.requests - base.reqs) / secs).padStart(7)}  p99 ${ms(p99).padStart(8)}  links up ${up}/${links}`,
      )
    }
    const ticker = setInterval(tick, out.tty ? TTY_REDRAW_MS : PLAIN_LINE_MS)
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, opts.duration * 1000)
      function done(): void {
        clearTimeout(timer)
        bus.off('change', check)
        resolve()
      }
      function check(): void {
        if (interrupted || children.some((c) => c.failure)) done()
      }
      bus.on('change', check)
    })
    clearInterval(ticker)
    // A last line for the end of the run (unless a plain line was just printed).
    if (out.tty || performance.now() - lastTick > PLAIN_LINE_MS / 2) tick()
    out.endProgress()
    const failed = children.find((c) => c.failure)
    if (failed) throw new DemoError(`replica ${failed.id} ${failed.failure}`)

    // -- stop: calls first, then the broadcasts (children drain their queues)
    load.running = false
    await Promise.all(workers)
    const tLoad = (load.endedAt || performance.now()) - tGo
    for (const c of children) send(c, { t: 'stop' })
    await waitAll(children, 'stopped', DRAIN_TIMEOUT_MS + 5000, 'stop', bus, () => false)
    const tTraffic = performance.now() - tGo
    for (const c of children) send(c, { t: 'final' })
    await waitAll(children, 'final', 10_000, 'report its counters', bus, () => false)
    for (const cl of clients.splice(0)) await cl.close()

    // -- close: children close their replicas and exit by themselves ------
    const killed = await stopChildren(children, EXIT_TIMEOUT_MS)
    printSummary(out, opts, children, latency, load, tTraffic, tLoad, killed)
    if (killed.length > 0) code = 1
    else if (interrupted) code = 130
    else if (totals().msgs === 0 || load.requests === 0) {
      out.warn('nexres-rpc demo: no traffic went through the cluster')
      code = 1
    }
  } catch (err) {
    out.endProgress()
    load.running = false
    if (err instanceof DemoError && err.code === 'INTERRUPTED') {
      code = 130
    } else {
      process.stderr.write(`nexres-rpc demo: ${errorMessage(err)}\n`)
      code = 1
    }
  } finally {
    for (const cl of clients) await cl.close().catch(() => {})
    const left = children.filter((c) => !c.exit)
    if (left.length > 0) await stopChildren(left, 5000)
    process.off('SIGINT', onSigint)
  }
  return code
}

function send(c: DemoChild, msg: ParentMessage): void {
  if (c.proc.connected) c.proc.send(msg, () => {})
}

function spawnReplica(config: ChildConfig, name: string, bus: EventEmitter, out: Output): DemoChild {
  const proc = spawn(process.execPath, [ENTRY, 'replica'], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...process.env, NEXRES_DEMO_REPLICA: JSON.stringify(config) },
  })
  const c: DemoChild = {
    id: name,
    proc,
    got: {},
    latest: undefined,
    failure: undefined,
    failureCode: undefined,
    exit: undefined,
    // 'close' (not 'exit'): it comes after the IPC channel and the pipes are
    // closed, so every message the child sent has been seen by then.
    exited: new Promise((resolve) => proc.once('close', resolve)),
  }
  proc.on('message', (raw) => {
    if (raw === null || typeof raw !== 'object') return
    const m = raw as ChildMessage
    if (m.t === 'stats') c.latest = m.s
    else if (m.t === 'fatal') {
      c.failure = m.message
      c.failureCode = m.code
    } else {
      if (m.t === 'stopped' || m.t === 'final' || m.t === 'closed') c.latest = m.s
      ;(c.got as Record<string, ChildMessage>)[m.t] = m
    }
    bus.emit('change')
  })
  proc.on('error', (err) => {
    c.failure ??= `could not be started: ${err.message}`
    bus.emit('change')
  })
  proc.on('close', (code, signal) => {
    c.exit = { code, signal }
    if (!c.got.closed && !c.failure) c.failure = `exited unexpectedly (${signal ?? `code ${code}`})`
    bus.emit('change')
  })
  // Anything a replica prints goes to stderr, prefixed with its id.
  for (const stream of [proc.stdout, proc.stderr]) {
    if (stream === null) continue
    stream.setEncoding('utf8')
    let partial = ''
    stream.on('data', (d: string) => {
      partial += d
      const lines = partial.split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) out.warn(`[replica ${config.id}] ${l}`)
    })
  }
  return c
}

/** Resolves once every child has sent a message of this type; rejects on a failure, a timeout or an interrupt. */
function waitAll(children: readonly DemoChild[], type: keyof Got, timeoutMs: number, what: string, bus: EventEmitter, isInterrupted: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (): void => {
      clearTimeout(timer)
      bus.off('change', check)
    }
    function check(): void {
      const failed = children.find((c) => c.failure)
      if (failed) {
        finish()
        reject(new DemoError(`replica ${failed.id} ${failed.failure}`, failed.failureCode))
      } else if (children.every((c) => c.got[type])) {
        finish()
        resolve()
      } else if (isInterrupted()) {
        finish()
        reject(new DemoError('interrupted', 'INTERRUPTED'))
      }
    }
    const timer = setTimeout(() => {
      finish()
      const missing = children.filter((c) => !c.got[type]).map((c) => c.id)
      reject(new DemoError(`replica${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not ${what} within ${timeoutMs / 1000} s`))
    }, timeoutMs)
    bus.on('change', check)
    check()
  })
}

/** Asks every child to close, waits for them to exit, kills the stragglers; returns the ids killed. */
async function stopChildren(children: readonly DemoChild[], timeoutMs: number): Promise<string[]> {
  // NEXRES_DEMO_CLOSE_GAP_MS (tests only): close the replicas that many ms
  // apart, so the later ones see the earlier ones go while still open.
  const gap = Number(process.env.NEXRES_DEMO_CLOSE_GAP_MS ?? 0)
  for (const c of children) {
    send(c, { t: 'close' })
    if (gap > 0 && c !== children[children.length - 1]) await new Promise((r) => setTimeout(r, gap))
  }
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise((r) => (timer = setTimeout(r, timeoutMs)))
  await Promise.race([Promise.all(children.map((c) => c.exited)), timeout])
  clearTimeout(timer)
  const killed: string[] = []
  for (const c of children) {
    if (c.exit) continue
    killed.push(c.id)
    c.proc.kill('SIGKILL')
  }
  await Promise.all(children.map((c) => c.exited))
  return killed
}

async function callLoop(client: Client, request: Uint8Array, load: LoadState, latency: LatencyRecorders, options: CallOptions | undefined): Promise<void> {
  while (load.running) {
    const start = performance.now()
    try {
      const reply = await client.call(ROUTE_ECHO, request, options)
      const now = performance.now()
      const us = (now - start) * 1000
      latency.total.record(us)
      latency.window.record(us)
      load.requests++
      load.endedAt = now
      if (!Buffer.from(reply.buffer, reply.byteOffset, reply.byteLength).equals(request)) load.mismatches++
    } catch (err) {
      load.errors++
      load.lastError = `${errorCode(err) ?? 'ERROR'}: ${errorMessage(err)}`
      if (load.running) await new Promise((r) => setTimeout(r, 50))
    }
  }
}
