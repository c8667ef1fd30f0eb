// Free ports on 127.0.0.1 for the examples, picked at once: every one is
// held until all are picked, so none is handed out twice (taking them one at
// a time, bind-and-release, handed the same port out twice in CI).
import net from 'node:net'

export async function freePorts(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => resolve(s))
  })))
  const ports = servers.map((s) => s.address().port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}
