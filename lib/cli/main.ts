// nexres-rpc command line (bin/nexres-rpc.mjs runs this module).
//
//   nexres-rpc demo [--replicas N] [--duration S] [--size BYTES] [--auth mac|none]
//   nexres-rpc keygen [--count N] [--json]
//   nexres-rpc --version
//
// Which file holds what: args.ts (usage, parsing), keygen.ts, demo.ts (the
// parent), replica-role.ts (each replica process of the demo; this module
// run with the hidden `replica` command), demo-protocol.ts (what they tell
// each other), summary.ts, output.ts, latency.ts. Only the package's public
// API is used, loaded on demand so that usage errors and --help work even
// where the native addon does not load.
import { readFileSync } from 'node:fs'

import { UsageError, parseCommandLine } from './args.js'
import { demo } from './demo.js'
import { keygen } from './keygen.js'
import { replicaRole } from './replica-role.js'

export async function main(argv: readonly string[]): Promise<number> {
  let cmd
  try {
    cmd = parseCommandLine(argv)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    const help = err.command !== undefined ? `nexres-rpc ${err.command} --help` : 'nexres-rpc --help'
    process.stderr.write(`nexres-rpc: ${err.message}\nRun "${help}" for the options.\n`)
    return 2
  }
  switch (cmd.command) {
    case 'help':
      process.stdout.write(cmd.usage)
      return 0
    case 'version': {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
      process.stdout.write(`${pkg.version}\n`)
      return 0
    }
    case 'replica':
      return replicaRole()
    case 'keygen':
      return keygen(cmd.opts)
    case 'demo':
      return demo(cmd.opts)
  }
}

process.exitCode = await main(process.argv.slice(2))
if (process.argv[2] !== 'replica') {
  // Everything is closed by now and the process ends by itself; should
  // something still hold the event loop, do not hang.
  setTimeout(() => {
    process.stderr.write('nexres-rpc: something still holds the event loop; exiting\n')
    process.exit(process.exitCode)
  }, 3000).unref()
}
