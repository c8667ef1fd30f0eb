// Handlers module for W3 (`workers: N`): the CPU-heavy request handler, the
// same function bench/w3-workers.mjs registers on the main thread for
// workers = 0.
import { createHash } from 'node:crypto'

/** SHA-256 of the request, 50 times over; replies with the request (the loop checks echo). */
export function work(req) {
  let h = req
  for (let i = 0; i < 50; i++) h = createHash('sha256').update(h).digest()
  if (h.length !== 32) throw new Error('unreachable')
  return req
}

export default function setup(replica) {
  replica.handle('work', work)
}
