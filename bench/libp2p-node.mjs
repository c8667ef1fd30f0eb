// A js-libp2p 3.x node for the W1 and W2 libp2p contenders: TCP + Noise +
// Yamux with their default options, listening (when asked) on 127.0.0.1 only,
// with no other services (no identify, no discovery, no DHT).
//
// libp2p 3.x uses Promise.withResolvers, which Node 20 lacks: it is
// polyfilled here before libp2p is imported (hence the dynamic imports).
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers() {
      let resolve, reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    },
  })
}

const [{ createLibp2p }, { tcp }, { noise }, { yamux }, { multiaddr }, utils] = await Promise.all([
  import('libp2p'),
  import('@libp2p/tcp'),
  import('@chainsafe/libp2p-noise'),
  import('@chainsafe/libp2p-yamux'),
  import('@multiformats/multiaddr'),
  import('@libp2p/utils'),
])

export { multiaddr }
export const { LengthPrefixedDecoder } = utils

// listen: true for the side that is dialled (port 0: any free port).
export async function createNode({ listen, port = 0 }) {
  return createLibp2p({
    addresses: { listen: listen ? [`/ip4/127.0.0.1/tcp/${port}`] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
  })
}

// The node's listening address, /ip4/127.0.0.1/tcp/<port>/p2p/<peer id>.
export function listenAddr(node) {
  const a = node.getMultiaddrs().find((m) => m.toString().startsWith('/ip4/127.0.0.1/tcp/'))
  if (a === undefined) throw new Error('libp2p node: no 127.0.0.1 TCP address')
  return a.toString()
}
