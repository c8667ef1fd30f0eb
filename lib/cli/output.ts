// What the CLI prints: number formats, a table, and the output object (a
// progress line redrawn in place on a TTY, plain lines otherwise).

export const count = (n: number): string => Math.round(n).toLocaleString('en-US')

export function rate(r: number): string {
  if (!Number.isFinite(r)) return '-'
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)} M`
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)} k`
  return r.toFixed(0)
}

export function bytes(b: number): string {
  if (b >= 1e9) return `${(b / 1e9).toFixed(2)} GB`
  if (b >= 1e6) return `${(b / 1e6).toFixed(1)} MB`
  if (b >= 1e3) return `${(b / 1e3).toFixed(1)} kB`
  return `${b} B`
}

/** Microseconds as milliseconds. */
export function ms(us: number | undefined): string {
  if (us === undefined || !Number.isFinite(us)) return '-'
  const m = us / 1000
  return m >= 100 ? `${m.toFixed(0)} ms` : m >= 10 ? `${m.toFixed(1)} ms` : `${m.toFixed(2)} ms`
}

export function table(header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number>>): string {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)))
  return all.map((r) => r.map((c, i) => String(c).padStart(widths[i] ?? 0)).join('  ')).join('\n')
}

export interface Output {
  readonly tty: boolean
  /** A permanent line on stdout. */
  line(text: string): void
  /** A line on stderr, without garbling the progress line. */
  warn(text: string): void
  /** The progress line: redrawn in place on a TTY, printed as a line otherwise. */
  progress(text: string): void
  /** Leaves the last progress line on screen and moves past it. */
  endProgress(): void
}

/** `onBroken` runs once if stdout closes under us (`nexres-rpc demo | head`): stop writing, stop the demo. */
export function makeOutput(onBroken: () => void): Output {
  const stdout = process.stdout
  const tty = Boolean(stdout.isTTY)
  let current = '' // progress line on screen (TTY only)
  let broken = false
  stdout.on('error', () => {
    if (broken) return
    broken = true
    onBroken()
  })
  const write = (s: string): void => {
    if (!broken) stdout.write(s)
  }
  const fit = (s: string): string => {
    const cols = stdout.columns || 80
    return s.length >= cols ? s.slice(0, cols - 1) : s
  }
  return {
    tty,
    line(text) {
      if (tty && current) write('\r\x1b[K')
      write(`${text}\n`)
      if (tty && current) write(fit(current))
    },
    warn(text) {
      if (tty && current) write('\r\x1b[K')
      process.stderr.write(`${text}\n`)
      if (tty && current) write(fit(current))
    },
    progress(text) {
      if (tty) {
        current = text
        write(`\r\x1b[K${fit(text)}`)
      } else {
        write(`${text}\n`)
      }
    },
    endProgress() {
      if (tty && current) write('\n')
      current = ''
    },
  }
}
