// The command line: usage texts, option limits, parsing into a typed command.
// Every error is a UsageError naming the option and what arrived.
import { parseArgs } from 'node:util'

export const HOST = '127.0.0.1'
export const MiB = 1024 * 1024
/** Client calls kept outstanding by the demo's load generator (spread over the replicas). */
export const OUTSTANDING = 32

export type AuthMode = 'seal' | 'mac' | 'none'
const AUTH_MODES: readonly AuthMode[] = ['seal', 'mac', 'none']

export interface DemoOptions {
  replicas: number
  duration: number
  size: number
  auth: AuthMode
  /** Replicas that lie (answer every echo call wrong); the client uses quorum calls (f = byzantine). */
  byzantine: number
  /** Clusters of `replicas` each, every replica linked to the others' (remoteClusters). */
  clusters: number
}

export interface KeygenOptions {
  count: number
  json: boolean
}

export type Command =
  | { command: 'help'; usage: string }
  | { command: 'version' }
  | { command: 'replica' }
  | { command: 'demo'; opts: DemoOptions }
  | { command: 'keygen'; opts: KeygenOptions }

type Limited = 'replicas' | 'duration' | 'size' | 'count' | 'byzantine' | 'clusters'
const DEFAULTS = { replicas: 4, duration: 5, size: 64, auth: 'mac' as AuthMode, count: 1, byzantine: 0, clusters: 1 }
const LIMITS: Record<Limited, [number, number]> = { replicas: [2, 16], duration: [1, 600], size: [0, MiB], count: [1, 1000], byzantine: [0, 5], clusters: [1, 4] }

/** What each option takes, for error messages. */
const VALUES: Record<Limited | 'auth', string> = {
  replicas: `an integer from ${LIMITS.replicas[0]} to ${LIMITS.replicas[1]}`,
  duration: `a number of seconds from ${LIMITS.duration[0]} to ${LIMITS.duration[1]}`,
  size: `an integer from ${LIMITS.size[0]} to ${LIMITS.size[1]}`,
  auth: '"seal", "mac" or "none"',
  count: `an integer from ${LIMITS.count[0]} to ${LIMITS.count[1]}`,
  byzantine: `an integer from ${LIMITS.byzantine[0]} to ${LIMITS.byzantine[1]}, at most (replicas - 1) / 3`,
  clusters: `an integer from ${LIMITS.clusters[0]} to ${LIMITS.clusters[1]}, with clusters × replicas at most ${LIMITS.replicas[1]}`,
}

const USAGE_TOP = `Usage: nexres-rpc <command> [options]

Commands:
  demo             start a local cluster, drive traffic through it, print a summary
  keygen           print Ed25519 key pairs for replicas (auth: 'mac')

  -v, --version    print the version of nexres-rpc

Run "nexres-rpc <command> --help" for a command's options (below).
`

const DEMO_USAGE = `Usage: nexres-rpc demo [options]

Starts a local cluster of replicas on ${HOST}, each in its own process, drives
traffic through it for a few seconds and prints a summary. Every replica
broadcasts messages to all the others (waiting for 'drain' when its queues
are full) while a client keeps ${OUTSTANDING} echo calls outstanding against the
replicas' client ports. With --auth mac or seal, replicas authenticate each
other with freshly generated keys and also send a few signed broadcasts.

Options:
  --replicas N     replicas in the cluster, ${LIMITS.replicas[0]}..${LIMITS.replicas[1]} (default ${DEFAULTS.replicas})
  --duration S     seconds of traffic, ${LIMITS.duration[0]}..${LIMITS.duration[1]} (default ${DEFAULTS.duration})
  --size BYTES     payload size of messages and requests, ${LIMITS.size[0]}..${LIMITS.size[1]} (default ${DEFAULTS.size})
  --auth MODE      replica links: "mac" (default: Ed25519 keys, MAC'ed frames,
                   some signed broadcasts), "seal" (the same, frames encrypted)
                   or "none" (plain connections)
  --byzantine N    N replicas answer every echo call with wrong bytes; the client
                   then makes quorum calls (f = N, quorum N + 1) to all replicas
                   and counts the lies it outvoted (needs replicas >= 3N + 1)
  --clusters N     N clusters of --replicas each, ${LIMITS.clusters[0]}..${LIMITS.clusters[1]} (default ${DEFAULTS.clusters}); every
                   replica also links to the other clusters' replicas
                   (remoteClusters) and broadcasts to them (broadcastTo)
  -h, --help       show this help

Example:
  nexres-rpc demo --replicas 4 --duration 10 --size 1024
  nexres-rpc demo --auth none
  nexres-rpc demo --replicas 4 --byzantine 1
  nexres-rpc demo --clusters 2 --replicas 3
`

const KEYGEN_USAGE = `Usage: nexres-rpc keygen [options]

Prints new Ed25519 key pairs (base64url), one per replica. The public key goes
into the cluster config every replica shares (cluster.replicas[i].publicKey);
the private key goes to that replica only (Replica.start({ privateKey })).

Options:
  --count N        key pairs to print, ${LIMITS.count[0]}..${LIMITS.count[1]} (default ${DEFAULTS.count})
  --json           print a JSON array of { publicKey, privateKey }
  -h, --help       show this help

Example:
  nexres-rpc keygen --count 4 --json > keys.json
`

/** A command line that cannot be run; `command` names the subcommand whose help applies. */
export class UsageError extends Error {
  readonly command: string | undefined
  constructor(message: string, command?: string) {
    super(message)
    this.name = 'UsageError'
    this.command = command
  }
}

const COMMANDS = '"demo" or "keygen"'

export function parseCommandLine(argv: readonly string[]): Command {
  const [command, ...rest] = argv
  if (command === undefined) throw new UsageError(`missing command (${COMMANDS})`)
  if (command === '-h' || command === '--help' || command === 'help') return { command: 'help', usage: `${USAGE_TOP}\n${DEMO_USAGE}\n${KEYGEN_USAGE}` }
  if (command === '-v' || command === '--version') return { command: 'version' }
  if (command === 'replica') return { command: 'replica' }
  if (command === 'demo') return parseDemo(rest)
  if (command === 'keygen') return parseKeygen(rest)
  throw new UsageError(`unknown command "${command}" (${COMMANDS})`)
}

type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>
type OptionValues = Record<string, string | boolean | undefined>

function errorField(err: unknown, field: 'code' | 'message'): string {
  if (typeof err !== 'object' || err === null) return ''
  const v = (err as Record<string, unknown>)[field]
  return typeof v === 'string' ? v : ''
}

/** parseArgs, with its errors turned into UsageErrors naming the option. */
function parseOptions(command: string, args: string[], options: OptionSpec): OptionValues {
  try {
    return parseArgs({ args, strict: true, allowPositionals: false, options }).values as OptionValues
  } catch (err) {
    const code = errorField(err, 'code')
    const message = errorField(err, 'message') || String(err)
    const quoted = /'([^']+)'/.exec(message)?.[1]
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${quoted ?? ''}`, command)
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unexpected argument "${quoted ?? ''}" (${command} takes only options)`, command)
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      // A missing value, or one starting with "-" (taken for an option).
      const name = /--([a-z]+)/.exec(message)?.[1]
      if (name !== undefined && name in VALUES) throw new UsageError(`--${name} needs a value: ${VALUES[name as keyof typeof VALUES]}`, command)
    }
    throw new UsageError(message, command)
  }
}

function stringValue(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined
}

function parseDemo(args: string[]): Command {
  const values = parseOptions('demo', args, {
    replicas: { type: 'string' },
    duration: { type: 'string' },
    size: { type: 'string' },
    auth: { type: 'string' },
    byzantine: { type: 'string' },
    clusters: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help === true) return { command: 'help', usage: DEMO_USAGE }
  const clusters = numberOption('clusters', stringValue(values.clusters), 'demo', true)
  const replicas = numberOption('replicas', stringValue(values.replicas), 'demo', true)
  const byzantine = numberOption('byzantine', stringValue(values.byzantine), 'demo', true)
  if (clusters * replicas > LIMITS.replicas[1]) throw new UsageError(`--clusters must be ${VALUES.clusters} (got --clusters ${clusters} --replicas ${replicas})`, 'demo')
  if (clusters > 1 && byzantine > 0) throw new UsageError('--byzantine works with one cluster (--clusters 1)', 'demo')
  if (3 * byzantine + 1 > replicas) throw new UsageError(`--byzantine ${byzantine} needs at least ${3 * byzantine + 1} replicas (3f + 1), got --replicas ${replicas}`, 'demo')
  const auth = stringValue(values.auth) ?? DEFAULTS.auth
  if (!(AUTH_MODES as readonly string[]).includes(auth)) throw new UsageError(`--auth must be ${VALUES.auth} (got ${JSON.stringify(auth)})`, 'demo')
  return {
    command: 'demo',
    opts: {
      replicas,
      duration: numberOption('duration', stringValue(values.duration), 'demo', false),
      size: numberOption('size', stringValue(values.size), 'demo', true),
      auth: auth as AuthMode,
      byzantine,
      clusters,
    },
  }
}

function parseKeygen(args: string[]): Command {
  const values = parseOptions('keygen', args, {
    count: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help === true) return { command: 'help', usage: KEYGEN_USAGE }
  return { command: 'keygen', opts: { count: numberOption('count', stringValue(values.count), 'keygen', true), json: values.json === true } }
}

/** An option's value within its limits (its default when absent): digits only, a fraction only where `integer` is false. */
function numberOption(name: Limited, raw: string | undefined, command: string, integer: boolean): number {
  const [min, max] = LIMITS[name]
  if (raw === undefined) return DEFAULTS[name]
  const v = (integer ? /^\d+$/ : /^\d+(\.\d+)?$/).test(raw) ? Number(raw) : NaN
  if (!Number.isFinite(v) || (integer && !Number.isSafeInteger(v)) || v < min || v > max) {
    throw new UsageError(`--${name} must be ${VALUES[name]} (got ${JSON.stringify(raw)})`, command)
  }
  return v
}
