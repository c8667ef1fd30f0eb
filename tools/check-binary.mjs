// Checks a built addon with objdump: its architecture, and the newest GLIBC
// and GLIBCXX symbol versions it needs (the floor of the systems it loads
// on). Prints one line per fact; exits 1 when one is over the given bound.
//   node tools/check-binary.mjs FILE [--arch x86-64|aarch64] [--glibc 2.31]
//                                    [--glibcxx 3.4.28] [--objdump CMD]
import { execFileSync } from 'node:child_process'

const [file, ...rest] = process.argv.slice(2)
if (file === undefined) {
  process.stderr.write('usage: node tools/check-binary.mjs FILE [--arch A] [--glibc V] [--glibcxx V] [--objdump CMD]\n')
  process.exit(2)
}
const opt = (name) => {
  const i = rest.indexOf(`--${name}`)
  return i >= 0 ? rest[i + 1] : undefined
}
const objdump = opt('objdump') ?? 'objdump'
const cmp = (a, b) => {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
  return 0
}

/** The newest `prefix`_x.y[.z] version named in `text`, or undefined. */
export function newest(text, prefix) {
  let max
  for (const m of text.matchAll(new RegExp(`\\b${prefix}_([0-9]+(?:\\.[0-9]+)+)\\b`, 'g'))) if (max === undefined || cmp(m[1], max) > 0) max = m[1]
  return max
}

const header = execFileSync(objdump, ['-f', file], { encoding: 'utf8' })
// What it needs: the undefined symbols (a library also lists the versions it defines).
const symbols = execFileSync(objdump, ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  .split('\n')
  .filter((l) => l.includes('*UND*'))
  .join('\n')
const format = /file format (\S+)/.exec(header)?.[1] ?? '?'
const arch = /architecture: ([^,\s]+)/.exec(header)?.[1] ?? '?'
const glibc = newest(symbols, 'GLIBC')
const glibcxx = newest(symbols, 'GLIBCXX')
let bad = false
console.log(`${file}: ${format}, ${arch}; needs GLIBC_${glibc ?? '-'}, GLIBCXX_${glibcxx ?? '-'}`)
const wantArch = opt('arch')
if (wantArch !== undefined && !arch.replace(/[:_]/g, '-').includes(wantArch)) {
  console.log(`  architecture ${arch}, expected ${wantArch}`)
  bad = true
}
for (const [name, have, max] of [['GLIBC', glibc, opt('glibc')], ['GLIBCXX', glibcxx, opt('glibcxx')]]) {
  if (max === undefined || have === undefined) continue
  if (cmp(have, max) > 0) {
    const over = [...new Set([...symbols.matchAll(new RegExp(`(${name}_[0-9.]+)\\)?\\s+(\\S+)$`, 'gm'))].filter((m) => cmp(m[1].slice(name.length + 1), max) > 0).map((m) => `${m[2]}@${m[1]}`))]
    console.log(`  needs ${name}_${have}, over the floor ${name}_${max}: ${over.slice(0, 12).join(', ')}`)
    bad = true
  } else {
    console.log(`  ${name}_${have} <= ${name}_${max}: ok`)
  }
}
process.exit(bad ? 1 : 0)
