// Child processes for the benchmarks (bench/run.mjs, bench/native.mjs):
// free ports, processes read line by line, and their reaping.
import { spawn } from 'node:child_process'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

// A child process whose stdout is read line by line. nextLine() throws when
// the child ends without a line or none comes within `ms`.
export function start(cmd, argv) {
  const child = spawn(cmd, argv.map(String), { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const lines = []
  const waiters = []
  const wake = () => waiters.splice(0).forEach((w) => w())
  child.stdout.on('data', (d) => {
    out += d
    let i
    while ((i = out.indexOf('\n')) >= 0) {
      lines.push(out.slice(0, i))
      out = out.slice(i + 1)
      wake()
    }
  })
  let status = null
  let closed = false
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      status = code ?? signal
      resolve(status)
    }),
  )
  child.once('error', (err) => {
    status = err.message
    closed = true
    wake()
  })
  child.once('close', () => {
    closed = true
    wake()
  })
  const what = `${cmd === process.execPath ? 'node' : cmd} ${argv.join(' ')}`
  const nextLine = async (ms) => {
    const end = Date.now() + ms
    while (lines.length === 0) {
      if (closed) throw new Error(`${what}: exited (${status}) without output`)
      const left = end - Date.now()
      if (left <= 0) throw new Error(`${what}: no output within ${ms} ms`)
      let timer
      await new Promise((resolve) => {
        waiters.push(resolve)
        timer = setTimeout(resolve, left)
      })
      clearTimeout(timer)
    }
    return lines.shift()
  }
  const running = () => child.exitCode === null && child.signalCode === null && child.pid !== undefined
  const kill = (signal) => {
    if (running()) child.kill(signal)
  }
  return { child, nextLine, exited, kill, running }
}

// Waits for every child to exit; SIGKILLs those still running after `ms`.
/**
 * Runs `body(procs)`, which starts child processes and pushes them on
 * `procs`: all are killed (SIGKILL) if it throws, and reaped at the end
 * (the first one sent SIGTERM first when `term`).
 */
export async function withProcs(body, { reapMs, term = false }) {
  const procs = []
  try {
    return await body(procs)
  } catch (err) {
    procs.forEach((p) => p.kill('SIGKILL'))
    throw err
  } finally {
    if (term) procs[0]?.kill('SIGTERM')
    await reap(procs, reapMs)
  }
}

async function reap(procs, ms) {
  const killer = setTimeout(() => procs.forEach((p) => p.kill('SIGKILL')), ms)
  await Promise.all(procs.map((p) => p.exited))
  clearTimeout(killer)
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
