// Child processes for the multi-process tests: spawn a fixture script, read
// its stdout line by line, wait (bounded) for lines and for its exit.
import { type ChildProcess, spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const fixturesDir = join(dirname(fileURLToPath(import.meta.url)), 'fixtures')

export interface Child {
  proc: ChildProcess
  /** Every stdout line so far. */
  lines: string[]
  /** Everything written to stderr so far. */
  stderr(): string
  /** Resolves with the first line (already seen or future) matching `re`; rejects after `ms`. */
  waitLine(re: RegExp, ms: number, what?: string): Promise<RegExpMatchArray>
  /** Resolves with the exit code/signal; rejects after `ms` (the child is left running). */
  waitExit(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  exited: boolean
  /** SIGKILL if still running (also SIGCONT in case it was stopped); resolves when it is gone. */
  kill(): Promise<void>
}

export function spawnFixture(script: string, args: string[], env: Record<string, string>): Child {
  const proc = spawn(process.execPath, [join(fixturesDir, script), ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  let err = ''
  let partial = ''
  const waiters = new Set<() => void>()
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined
  const wake = (): void => {
    for (const w of [...waiters]) w()
  }
  proc.stdout!.setEncoding('utf8')
  proc.stdout!.on('data', (d: string) => {
    partial += d
    const parts = partial.split('\n')
    partial = parts.pop()!
    lines.push(...parts)
    wake()
  })
  proc.stderr!.setEncoding('utf8')
  proc.stderr!.on('data', (d: string) => {
    err += d
  })
  proc.stdin!.on('error', () => {})
  const exitP = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal }
      child.exited = true
      resolve(exitInfo)
      wake()
    })
  })
  const child: Child = {
    proc,
    lines,
    exited: false,
    stderr: () => err,
    waitLine(re, ms, what = String(re)) {
      return new Promise((resolve, reject) => {
        let from = 0
        const check = (): boolean => {
          for (; from < lines.length; from++) {
            const m = lines[from]!.match(re)
            if (m) {
              done()
              resolve(m)
              return true
            }
          }
          if (exitInfo) {
            done()
            reject(new Error(`child exited (${exitInfo.code ?? exitInfo.signal}) before ${what}; stderr: ${err.slice(-2000)}`))
            return true
          }
          return false
        }
        const timer = setTimeout(() => {
          done()
          reject(new Error(`timed out after ${ms} ms waiting for ${what}; last stdout: ${lines.slice(-3).join(' | ')}; stderr: ${err.slice(-2000)}`))
        }, ms)
        const done = (): void => {
          clearTimeout(timer)
          waiters.delete(check)
        }
        if (!check()) waiters.add(check)
      })
    },
    waitExit(ms) {
      if (exitInfo) return Promise.resolve(exitInfo)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`child did not exit within ${ms} ms; stderr: ${err.slice(-2000)}`)), ms)
        void exitP.then((e) => {
          clearTimeout(timer)
          resolve(e)
        })
      })
    },
    async kill() {
      if (exitInfo) return
      try {
        proc.kill('SIGKILL')
      } catch {
        // already gone
      }
      await exitP
    },
  }
  return child
}

/** The last `count ... bad ... last ...` report of a receiver.mjs child. */
export function lastCount(child: Child): { count: number; bad: number; last: number } {
  for (let i = child.lines.length - 1; i >= 0; i--) {
    const m = child.lines[i]!.match(/^count (\d+) bad (\d+) last (-?\d+)$/)
    if (m) return { count: Number(m[1]), bad: Number(m[2]), last: Number(m[3]) }
  }
  return { count: 0, bad: 0, last: -1 }
}

/**
 * fixtures/stream-peer.mjs as replica `id` of `cluster`, streaming to `to`
 * for 2.5 s in `mode` ('flood' or 'honest'); killed at the test's end.
 */
export function spawnStreamPeer(
  t: { teardown(fn: () => unknown): void },
  cluster: { id: string },
  id: number,
  to: number,
  mode: 'flood' | 'honest',
): Child {
  const c = spawnFixture('stream-peer.mjs', [], {
    NEXRES_CLUSTER: JSON.stringify(cluster),
    NEXRES_ID: String(id),
    NEXRES_TO: String(to),
    NEXRES_MODE: mode,
    NEXRES_MS: '2500',
  })
  t.teardown(() => c.kill())
  return c
}
