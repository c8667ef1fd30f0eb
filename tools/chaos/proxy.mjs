// Loopback partitions for the chaos run (when network namespaces cannot be
// made): one TCP proxy on 127.0.0.1 per directed link i -> j. Replica i is
// configured to reach j at the proxy's port; the proxy forwards to j's real
// port. A blackholed proxy stops forwarding in both directions and holds
// its connections (accepted ones too, without dialling j): the replicas see
// silence, as with packets dropped. heal('resume') forwards again whatever
// was held; heal('reset') resets every held connection.
import { createServer, connect } from 'node:net'

export class LinkProxy {
  /**
   * @param {number} from replica id that dials through this proxy
   * @param {number} to replica id behind it
   * @param {number} targetPort the real replica port of `to` on 127.0.0.1
   */
  constructor(from, to, targetPort) {
    this.from = from
    this.to = to
    this.targetPort = targetPort
    this.blocked = false
    this.pairs = new Set()
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (c) => this.accept(c))
    this.server.on('error', () => {})
    this.closed = false
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, '127.0.0.1', () => {
        this.server.off('error', reject)
        this.port = this.server.address().port
        resolve(this.port)
      })
    })
  }

  accept(c) {
    if (this.closed) return c.destroy()
    const pair = { c, u: undefined, done: false }
    this.pairs.add(pair)
    c.on('error', () => this.drop(pair))
    c.on('close', () => this.drop(pair))
    if (!this.blocked) this.dial(pair)
  }

  dial(pair) {
    const u = connect({ host: '127.0.0.1', port: this.targetPort, allowHalfOpen: true })
    pair.u = u
    u.on('error', () => this.drop(pair))
    u.on('close', () => this.drop(pair))
    this.wire(pair.c, u, pair)
    this.wire(u, pair.c, pair)
    if (!this.blocked) {
      pair.c.resume()
      u.resume()
    }
  }

  /** Forwards a -> b with backpressure; reads only while the link is open. */
  wire(a, b, pair) {
    a.on('data', (d) => {
      if (!b.write(d)) {
        a.pause()
        b.once('drain', () => {
          if (!this.blocked && !pair.done) a.resume()
        })
      }
    })
    a.on('end', () => b.end())
  }

  drop(pair) {
    if (pair.done) return
    pair.done = true
    this.pairs.delete(pair)
    // Half-closes were forwarded; what is left is an error or a full close.
    pair.c.destroy()
    pair.u?.destroy()
  }

  blackhole() {
    this.blocked = true
    for (const p of this.pairs) {
      p.c.pause()
      p.u?.pause()
    }
  }

  /** @param {'resume' | 'reset'} how */
  heal(how) {
    if (how === 'reset') {
      for (const p of [...this.pairs]) {
        p.done = true
        this.pairs.delete(p)
        p.c.resetAndDestroy()
        p.u?.resetAndDestroy()
      }
    }
    this.blocked = false
    for (const p of this.pairs) {
      if (p.u === undefined) this.dial(p)
      else {
        p.c.resume()
        p.u.resume()
      }
    }
  }

  close() {
    this.closed = true
    for (const p of [...this.pairs]) {
      p.done = true
      p.c.destroy()
      p.u?.destroy()
    }
    this.pairs.clear()
    return new Promise((r) => this.server.close(() => r()))
  }
}
