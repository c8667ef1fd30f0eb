// Smoke test of an installed binary (tools/cross-prebuild.sh runs it under
// qemu-user with the arm64 build): two replicas with authenticated, encrypted
// links exchange a message each way, and a client's sealed call gets its
// answer. Prints which binary loaded; exits 1 on any failure or after 120 s.
import { createServer } from 'node:net'
import { Client, Replica, generateKeyPair } from 'nexres-rpc'

const timer = setTimeout(() => {
  console.error('smoke: no round trip within 120 s')
  process.exit(1)
}, 120_000)
const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
const keys = [1, 2].map(() => generateKeyPair())
const cluster = {
  id: 'smoke',
  replicas: await Promise.all(
    [1, 2].map(async (id) => ({ id, host: '127.0.0.1', port: await freePort(), clientPort: await freePort(), publicKey: keys[id - 1].publicKey })),
  ),
}
const [r1, r2] = await Promise.all(
  [1, 2].map((id) => Replica.start({ id, cluster, auth: 'seal', privateKey: keys[id - 1].privateKey, ioThreads: 1 })),
)
const got = new Promise((resolve) => r2.on('ping', (msg) => (r2.send(msg.from, 'pong', msg.text() + '!'), undefined)) && r1.on('pong', (msg) => resolve(msg.text())))
r2.handle('echo', (req) => req)
await r1.waitForPeers()
r1.send(2, 'ping', 'hello')
const answer = await got
const client = await Client.connect({ replicas: [{ host: '127.0.0.1', port: cluster.replicas[1].clientPort }], seal: true })
const echoed = await client.call('echo', new Uint8Array([1, 2, 3]), { timeoutMs: 60_000 })
await client.close()
await Promise.all([r1.close(), r2.close()])
clearTimeout(timer)
const ok = answer === 'hello!' && Buffer.from(echoed).equals(Buffer.from([1, 2, 3]))
console.log(`smoke: ${process.arch} Node ${process.version}: replica link ${JSON.stringify(answer)}, sealed call ${JSON.stringify([...echoed])}: ${ok ? 'ok' : 'FAILED'}`)
process.exit(ok ? 0 : 1)
