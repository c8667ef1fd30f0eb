// Typed services: serve() and client.service() round trip with every codec
// (raw, text, json, msgpack); the type-level checks in this file (what must
// not compile is marked @ts-expect-error) are compiled by types.test.ts.

import t from 'tap'

import { codecs, defineService } from 'nexres-rpc'

import { sleep, utf8, within, startServer, connectClient } from './client-support.js'

t.test('typed services: raw, text, json and msgpack codecs round trip through serve() and client.service()', async (t) => {
  interface Point {
    x: number
    y: number
    label: string
  }
  interface Sum {
    sum: number
    labels: string[]
    nested: { ok: boolean; none: null }
  }
  interface Blob {
    id: number
    name: string
    bin: Uint8Array
    tags: string[]
    big: number
  }
  interface BlobInfo {
    id: number
    size: number
    bin: Uint8Array
    name: string
    route: string
  }
  const Svc = defineService('codecs', {
    raw: { request: codecs.raw, response: codecs.raw },
    text: { request: codecs.text, response: codecs.text },
    json: { request: codecs.json<Point[]>(), response: codecs.json<Sum>() },
    pack: { request: codecs.msgpack<Blob>(), response: codecs.msgpack<BlobInfo>() },
    mixed: { request: codecs.json<{ n: number }>(), response: codecs.text },
  })
  const { replica, endpoint } = await startServer(t)
  replica.serve(Svc, {
    raw: (req) => Uint8Array.from(req).reverse(),
    text: async (req) => {
      await sleep(1)
      return req.toUpperCase()
    },
    json: (req) => ({
      sum: req.reduce((s, p) => s + p.x * p.y, 0),
      labels: req.map((p) => p.label),
      nested: { ok: true, none: null },
    }),
    pack: async (req, ctx) => ({ id: req.id + 1, size: req.bin.length, bin: req.bin, name: req.name, route: ctx.route }),
    mixed: (req) => `n=${req.n}`,
  })
  const c = await connectClient(t, endpoint)
  const api = c.service(Svc)

  // Each result is assigned to a variable of the type the codec promises:
  // this file's own type check (last subtest) fails if the types drift.
  const raw: Uint8Array = await within(api.raw(new Uint8Array([1, 2, 3, 250])), 5000, 'raw')
  t.same([...raw], [250, 3, 2, 1], 'raw')
  const text: string = await within(api.text('héllo wörld ✓'), 5000, 'text')
  t.equal(text, 'HÉLLO WÖRLD ✓', 'text (UTF-8)')
  const sum: Sum = await within(
    api.json([
      { x: 2, y: 3, label: 'a' },
      { x: 4, y: 5, label: 'b"quoted"' },
    ]),
    5000,
    'json',
  )
  t.same(sum, { sum: 26, labels: ['a', 'b"quoted"'], nested: { ok: true, none: null } }, 'json')
  const bin = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff)
  const info: BlobInfo = await within(
    api.pack({ id: 41, name: 'ünïcødé', bin, tags: ['x', 'y'], big: 2 ** 40 + 1 }),
    5000,
    'msgpack',
  )
  t.equal(info.id, 42, 'msgpack: number')
  t.equal(info.size, 300, 'msgpack: the binary arrived whole')
  t.equal(info.name, 'ünïcødé', 'msgpack: string')
  t.equal(info.route, 'codecs.pack', "the handler's ctx names the method's route")
  t.ok(info.bin instanceof Uint8Array, 'msgpack: binary decodes to bytes')
  t.equal(Buffer.compare(info.bin, bin), 0, 'msgpack: binary round trip')
  const mixed: string = await within(api.mixed({ n: 7 }), 5000, 'mixed')
  t.equal(mixed, 'n=7', 'json request, text response')

  // large values, many at once
  const bigText = 'ß'.repeat(50_000)
  const bigRes = await within(Promise.all([api.text(bigText), api.raw(new Uint8Array(70_000).fill(3)), api.mixed({ n: -1 })]), 10_000, 'concurrent typed calls')
  t.equal(bigRes[0], 'SS'.repeat(50_000), '100 KB of text')
  t.equal(bigRes[1].length, 70_000)
  t.equal(bigRes[2], 'n=-1')

  // the route of a method is "<service>.<method>"
  t.equal(utf8(await within(c.call('codecs.text', 'plain call'), 5000, 'plain call on a method route')), 'PLAIN CALL')

  // Compile-time only (never called): wrong types must be rejected by tsc.
  const typeErrors = async (): Promise<void> => {
    // @ts-expect-error a text method takes a string
    await api.text(42)
    // @ts-expect-error a json request must match the codec's type
    await api.json([{ x: 1 }])
    // @ts-expect-error the reply of a text method is a string
    const n: number = await api.text('x')
    // @ts-expect-error there is no such method
    await api.nope('x')
    replica.serve(Svc, {
      raw: (r) => r,
      text: (r) => r,
      json: () => ({ sum: 0, labels: [], nested: { ok: true, none: null } }),
      pack: (r) => ({ id: r.id, size: 0, bin: r.bin, name: r.name, route: '' }),
      // @ts-expect-error the implementation must return the response type
      mixed: () => 42,
    })
    void n
  }
  void typeErrors
})
