// One fault proxy for the tests that cut, stall or tamper with a link (as
// udx-native keeps test/helpers/proxy.js): a TCP proxy on 127.0.0.1, port 0,
// in front of a target port. A replica configured to reach its peer at
// the proxy's port dials through it. Faults, changeable at any time:
//   cut()        destroy every connection now (both ends see a reset);
//   blackhole()  stop forwarding both ways and hold the connections (and
//                new ones, undialled): the ends see silence, as when packets
//                are dropped; heal() forwards again what was held;
//   delayMs      hold every chunk this long before forwarding it (order kept);
//   tamper       rewrite the bytes from the dialling side (return null to
//                drop the chunk); `sent` counts what that side sent before.
//   tamperBack   the same for the bytes coming back from the target.
import { type Server, type Socket, connect, createServer } from 'node:net'

import type { Tap } from './helpers.js'

const HOST = '127.0.0.1'

export type Tamper = (chunk: Buffer, sent: number, connection: number, up: Socket) => Buffer | null

interface Pair {
  n: number
  down: Socket
  up: Socket | undefined
  sent: number
  back: number
}

export class FaultProxy {
  port = 0
  /** Connections accepted so far. */
  connections = 0
  delayMs = 0
  tamper: Tamper | undefined
  tamperBack: Tamper | undefined
  private blocked = false
  private readonly pairs = new Set<Pair>()
  private readonly server: Server

  private constructor(private readonly target: number) {
    this.server = createServer({ pauseOnConnect: true }, (s) => this.accept(s))
    this.server.on('error', () => {})
  }

  /** A proxy to `target` on 127.0.0.1, closed with the test. */
  static async open(t: Tap, target: number, tamper?: Tamper): Promise<FaultProxy> {
    const p = new FaultProxy(target)
    p.tamper = tamper
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject)
      p.server.listen(0, HOST, () => resolve())
    })
    const a = p.server.address()
    p.port = typeof a === 'object' && a !== null ? a.port : 0
    t.teardown(() => p.close())
    return p
  }

  /** Destroys every connection through the proxy now. */
  cut(): void {
    for (const p of this.pairs) this.drop(p)
  }

  blackhole(): void {
    this.blocked = true
    for (const p of this.pairs) {
      p.down.pause()
      p.up?.pause()
    }
  }

  heal(): void {
    this.blocked = false
    for (const p of this.pairs) {
      if (p.up === undefined) this.dial(p)
      p.down.resume()
      p.up?.resume()
    }
  }

  close(): Promise<void> {
    this.cut()
    return new Promise((r) => this.server.close(() => r()))
  }

  private accept(down: Socket): void {
    const p: Pair = { n: ++this.connections, down, up: undefined, sent: 0, back: 0 }
    this.pairs.add(p)
    down.on('error', () => this.drop(p))
    down.on('close', () => this.drop(p))
    if (!this.blocked) this.dial(p)
  }

  private dial(p: Pair): void {
    const up = connect({ host: HOST, port: this.target, noDelay: true })
    p.up = up
    up.on('error', () => this.drop(p))
    up.on('close', () => this.drop(p))
    p.down.on('data', (d: Buffer) => {
      const out = this.tamper === undefined ? d : this.tamper(d, p.sent, p.n, up)
      p.sent += d.length
      if (out !== null) this.forward(up, out)
    })
    up.on('data', (d: Buffer) => {
      const out = this.tamperBack === undefined ? d : this.tamperBack(d, p.back, p.n, p.down)
      p.back += d.length
      if (out !== null) this.forward(p.down, out)
    })
    p.down.setNoDelay(true)
    if (!this.blocked) p.down.resume()
  }

  // Delayed chunks keep their order: each waits as long as every other.
  private forward(to: Socket, d: Buffer): void {
    if (this.delayMs === 0) to.write(d)
    else setTimeout(() => to.destroyed || to.write(d), this.delayMs)
  }

  private drop(p: Pair): void {
    if (!this.pairs.delete(p)) return
    p.down.destroy()
    p.up?.destroy()
  }
}
