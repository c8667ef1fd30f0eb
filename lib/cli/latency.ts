// Latency recording for the demo.
//
// hdr-histogram-js is a devDependency: present in a clone, absent when the
// package is installed from npm. So it is a soft requirement: if it cannot
// be imported, latencies go into a preallocated Float64Array instead, and
// percentiles come from the sorted array. That array has a fixed capacity
// (the demo may run for 10 minutes); past it, reservoir sampling keeps a
// uniform sample of every value seen, so percentiles stay unbiased
// estimates, while the count and the max stay exact.
// NEXRES_DEMO_NO_HDR=1 forces the fallback (used by the tests).

/** Values in microseconds. */
export interface Recorder {
  record(us: number): void
  count(): number
  percentile(p: number): number | undefined
  max(): number | undefined
  reset(): void
}

export interface LatencyRecorders {
  kind: string
  /** The whole run. */
  total: Recorder
  /** Since the last progress line. */
  window: Recorder
}

interface Histogram {
  recordValue(v: number): void
  getValueAtPercentile(p: number): number
  reset(): void
  readonly totalCount: number
  readonly maxValue: number
}
type BuildHistogram = (o: Record<string, unknown>) => Histogram

export async function latencyRecorders(): Promise<LatencyRecorders> {
  if (process.env.NEXRES_DEMO_NO_HDR !== '1') {
    try {
      // By a name tsc does not resolve: the module may be absent.
      const name = 'hdr-histogram-js'
      const mod = (await import(name)) as { build?: BuildHistogram; default?: { build?: BuildHistogram } }
      const build = mod.build ?? mod.default?.build
      if (typeof build === 'function') {
        const make = (): Recorder =>
          hdrRecorder(build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false }))
        return { kind: 'hdr-histogram-js', total: make(), window: make() }
      }
    } catch {
      // not installed: fall back below
    }
  }
  return { kind: 'sorted sample, hdr-histogram-js not available', total: arrayRecorder(1 << 20), window: arrayRecorder(1 << 16) }
}

/** Values in microseconds (integers >= 1). */
function hdrRecorder(h: Histogram): Recorder {
  return {
    record: (us) => h.recordValue(Math.min(Math.max(1, Math.round(us)), 3_600_000_000)),
    count: () => h.totalCount,
    // The histogram answers with the top of a value's bucket: never above the max.
    percentile: (p) => (h.totalCount === 0 ? undefined : Math.min(h.getValueAtPercentile(p), h.maxValue)),
    max: () => (h.totalCount === 0 ? undefined : h.maxValue),
    reset: () => h.reset(),
  }
}

export function arrayRecorder(capacity: number): Recorder {
  const values = new Float64Array(capacity)
  let stored = 0
  let seen = 0
  let max = 0
  return {
    record(us) {
      seen++
      if (us > max) max = us
      if (stored < capacity) values[stored++] = us
      else {
        const j = Math.floor(Math.random() * seen)
        if (j < capacity) values[j] = us
      }
    },
    count: () => seen,
    percentile(p) {
      if (stored === 0) return undefined
      const sorted = values.slice(0, stored).sort() // typed arrays sort numerically
      return sorted[Math.min(stored - 1, Math.max(0, Math.ceil((p / 100) * stored) - 1))]
    },
    max: () => (seen === 0 ? undefined : max),
    reset() {
      stored = 0
      seen = 0
      max = 0
    },
  }
}
