// The chaos run's invariant checker (tools/chaos/run.mjs). Pure: it takes
// what the replica processes reported and returns the violations found.
//
// Streams. A sender incarnation S (replica id, restart count k) numbers its
// messages per destination R: seq 1, 2, 3, ... (a broadcast carries one
// seq per destination). What the library promises (docs/PROTOCOL.md §5,
// docs/API.md 'undelivered' and close()):
//   - while S and R both live, every message of S to R is delivered to R
//     exactly once and in seq order, unless S gave it up (peerDownDeadlineMs)
//     and said so in an 'undelivered' event;
//   - when R restarts, what it had not acknowledged is delivered to the new
//     process: nothing between R's incarnations is lost (ACKs follow
//     handling, so what R acknowledged it had handled);
//   - what is still queued when S closes is reported in close()'s result.
// A receiver process that was killed loses what it had not handled; its
// reports stop at its last report line, so its progress is known only up
// to `tolerance` messages per stream (it reports a stream's first message
// at once, then at least every `tolerance` messages of it).
//
// Input (plain JSON):
//   incarnations: { [id]: number[] }       restart counts of each replica, in order
//   senders:   { 'id.k': { id, k, graceful, sentLast: { [dest]: seq } | null,
//                          undelivered: { [dest]: [a, b][] }, closeFrom: { [dest]: seq } } }
//   receivers: { 'id.k': { id, k, killed, complete,
//                          streams: { 'sid.sk': { first, last, count } },
//                          gaps: { 'sid.sk': [a, b][] } } }
//   tolerance: number
// Output: string[] (empty: every invariant held).

/** Sorted, merged copy of closed integer intervals. */
export function normalize(ranges) {
  const rs = ranges.filter(([a, b]) => a <= b).map(([a, b]) => [a, b]).sort((x, y) => x[0] - y[0])
  const out = []
  for (const r of rs) {
    const last = out[out.length - 1]
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1])
    else out.push(r)
  }
  return out
}

/** The parts of [a, b] not covered by `cover` (normalized). */
export function uncovered(a, b, cover) {
  const out = []
  let from = a
  for (const [x, y] of cover) {
    if (y < from) continue
    if (x > b) break
    if (x > from) out.push([from, Math.min(b, x - 1)])
    from = Math.max(from, y + 1)
    if (from > b) break
  }
  if (from <= b) out.push([from, b])
  return out
}

const fmt = (rs) => rs.map(([a, b]) => (a === b ? `${a}` : `${a}..${b}`)).join(', ')
const count = (rs) => rs.reduce((n, [a, b]) => n + b - a + 1, 0)

export function check(run) {
  const violations = []
  const T = run.tolerance
  const reportedOf = (skey, dest) => normalize(run.senders[skey]?.undelivered?.[dest] ?? [])

  for (const [idStr, ks] of Object.entries(run.incarnations)) {
    const rid = Number(idStr)
    // Per sender stream: how far earlier incarnations of this receiver got
    // (a killed one: up to `tolerance` messages past its last report).
    const reach = new Map()
    for (const k of ks) {
      const r = run.receivers[`${rid}.${k}`]
      if (r === undefined) continue
      for (const [skey, st] of Object.entries(r.streams)) {
        const reported = reportedOf(skey, rid)
        const before = reach.get(skey) ?? 0
        // Gaps inside this incarnation's stream: given up by the sender, or
        // (before the first message) handled by an earlier incarnation.
        for (const [a, b] of r.gaps[skey] ?? []) {
          const isStart = a === 1 && b === st.first - 1
          const cover = isStart && before > 0 ? normalize([...reported, [1, before]]) : reported
          const lost = uncovered(a, b, cover)
          if (lost.length > 0) {
            violations.push(
              `receiver ${rid} (incarnation ${k}) never got seqs ${fmt(lost)} (${count(lost)} messages) of sender ${skey}` +
                (isStart
                  ? ` before its first message of that sender (${st.first}; earlier incarnations of the receiver reached ${before}, ` +
                    `counting ${T} unreported messages for a killed one)`
                  : ` between ${a - 1} and ${b + 1}`) +
                ', and the sender did not report them undelivered',
            )
          }
        }
        if (st.first > 1 && !(r.gaps[skey] ?? []).some(([a, b]) => a === 1 && b === st.first - 1)) {
          violations.push(`receiver ${rid} (incarnation ${k}): stream ${skey} starts at seq ${st.first} with no gap recorded (report inconsistent)`)
        }
      }
      // Fold this incarnation into the reach of the next one.
      for (const [skey, st] of Object.entries(r.streams)) {
        const r2 = r.killed ? st.last + T : st.last
        if (r2 > (reach.get(skey) ?? 0)) reach.set(skey, r2)
      }
    }

    // Completeness: the last incarnation of this receiver (closed at the end,
    // fully reported) got everything each gracefully closed sender sent it,
    // or the sender reported it (event or close() result).
    const lastK = ks[ks.length - 1]
    const final = run.receivers[`${rid}.${lastK}`]
    if (final === undefined || !final.complete) continue
    for (const [skey, s] of Object.entries(run.senders)) {
      if (s.id === rid || !s.graceful || s.sentLast === null) continue
      const L = s.sentLast[rid] ?? 0
      const st = final.streams[skey]
      if (st !== undefined && st.last > L) {
        violations.push(`receiver ${rid} got seq ${st.last} of sender ${skey}, which sent it only ${L} messages`)
      }
      let got = reach.get(skey) ?? 0
      if (st !== undefined) got = Math.max(got, st.last)
      if (got >= L) continue
      const cover = normalize([...reportedOf(skey, rid), ...(s.closeFrom?.[rid] !== undefined ? [[s.closeFrom[rid], L]] : [])])
      const lost = uncovered(got + 1, L, cover)
      if (lost.length > 0) {
        violations.push(
          `receiver ${rid} (alive at the end) never got seqs ${fmt(lost)} (${count(lost)} messages) of sender ${skey}, ` +
            `which closed normally and reported none of them undelivered (events or close() result)`,
        )
      }
    }
  }
  return violations
}
