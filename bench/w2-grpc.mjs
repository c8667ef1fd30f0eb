// W2 on @grpc/grpc-js: one unary method of a generic service defined without
// .proto files (identity serializers on Buffers), insecure credentials on
// 127.0.0.1, one channel; the callback API wrapped in a promise per call.
//   node bench/w2-grpc.mjs server <port>                -> prints "ready <port>"
//   node bench/w2-grpc.mjs client <port> <C> <size> <warmupMs> <durationMs> <maxCalls>
import grpc from '@grpc/grpc-js'

import { clientArgs, runClient } from './w2-loop.mjs'

const identity = (b) => b
const service = {
  echo: {
    path: '/bench.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
}

const [role, ...rest] = process.argv.slice(2)

if (role === 'server') {
  const server = new grpc.Server()
  server.addService(service, { echo: (call, callback) => callback(null, call.request) })
  process.once('SIGTERM', () => process.exit(0))
  server.bindAsync(`127.0.0.1:${Number(rest[0])}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err
    process.stdout.write(`ready ${port}\n`)
  })
} else if (role === 'client') {
  const a = clientArgs(rest)
  const Echo = grpc.makeGenericClientConstructor(service, 'Echo')
  const client = new Echo(`127.0.0.1:${a.port}`, grpc.credentials.createInsecure())
  await new Promise((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())))
  const call = (payload) =>
    new Promise((resolve, reject) => client.echo(payload, (err, reply) => (err ? reject(err) : resolve(reply))))
  await runClient(a, call)
  client.close()
  process.exit(0)
} else {
  throw new Error(`unknown role ${role}`)
}
