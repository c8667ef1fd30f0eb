// `nexres-rpc keygen`: Ed25519 key pairs for replicas (auth 'mac').
import type { KeygenOptions } from './args.js'
import { errorMessage } from './demo-protocol.js'

export async function keygen(opts: KeygenOptions): Promise<number> {
  let nexres: typeof import('../index.js')
  try {
    nexres = await import('../index.js')
  } catch (err) {
    process.stderr.write(`nexres-rpc: cannot load the library: ${errorMessage(err)}\n`)
    return 1
  }
  const pairs = Array.from({ length: opts.count }, () => nexres.generateKeyPair())
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(pairs, null, 2)}\n`)
    return 0
  }
  const lines = [
    `# ${opts.count === 1 ? 'An Ed25519 key pair' : `${opts.count} Ed25519 key pairs`} for replicas with auth: 'mac' (base64url), one pair per replica.`,
    '# publicKey:  into the cluster config every replica shares: cluster.replicas[i].publicKey',
    '# privateKey: to that replica only: Replica.start({ id, cluster, privateKey }); keep it secret',
  ]
  pairs.forEach((p, i) => {
    lines.push('', `key pair ${i + 1}`, `  publicKey:  ${p.publicKey}`, `  privateKey: ${p.privateKey}`)
  })
  process.stdout.write(`${lines.join('\n')}\n`)
  return 0
}
