import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Stream } from '@libp2p/interface'
import { StreamState } from '@chainsafe/libp2p-yamux/stream'
import { generateClusterKey } from '../node/swarm/cluster-key.ts'
import { generatePeerKey } from '../node/swarm/peer-key.ts'
import { createSwarmNode, type SwarmNode } from '../node/swarm/libp2p-node.ts'
import { UPDATE_AFTER_BYTES, windowUpdateDue } from '../node/swarm/stream-window.ts'

const PROTOCOL = '/imgmesh-test/sink/1.0.0'

/** write(2)-family calls this process made so far (every fd: sockets, files, event fds). */
function writeCalls (): number {
  const m = /^syscw: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))
  assert.ok(m !== null, '/proc/self/io has syscw')
  return Number(m[1])
}

async function pair (): Promise<{ a: SwarmNode, b: SwarmNode }> {
  const clusterKey = generateClusterKey()
  const make = async (): Promise<SwarmNode> => await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
  return { a: await make(), b: await make() }
}

/** B counts (and hashes) what arrives on the test protocol; `pauseEvery` bytes it stops reading for 20 ms. */
function sink (b: SwarmNode, pauseEvery = 0): { bytes: () => number, digest: () => string, done: (n: number) => Promise<void> } {
  let got = 0
  let nextPause = pauseEvery
  const hash = createHash('sha256')
  const waiters: Array<{ n: number, resolve: () => void }> = []
  void b.libp2p.handle(PROTOCOL, async (stream: Stream) => {
    for await (const chunk of stream) {
      const bytes = chunk.subarray()
      hash.update(bytes)
      got += bytes.byteLength
      for (const w of waiters.filter(x => got >= x.n)) w.resolve()
      if (pauseEvery > 0 && got >= nextPause) {
        nextPause += pauseEvery
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    }
  })
  return {
    bytes: () => got,
    digest: () => hash.copy().digest('hex'),
    done: async (n: number) => {
      if (got >= n) return
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`sink got ${got} of ${n} bytes in 30 s`)) }, 30_000)
        waiters.push({ n, resolve: () => { clearTimeout(timer); resolve() } })
      })
    }
  }
}

async function send (stream: Stream, data: Uint8Array): Promise<void> {
  if (!stream.send(data)) await stream.onDrain({ signal: AbortSignal.timeout(30_000) })
}

test('window update rule: none until 64 KiB arrived on an established stream (half a smaller window), always while opening or paused', () => {
  const W = 256 * 1024
  assert.equal(UPDATE_AFTER_BYTES, 64 * 1024)
  assert.equal(windowUpdateDue(StreamState.Established, W, W), false)
  assert.equal(windowUpdateDue(StreamState.Established, W, W - 100), false)
  assert.equal(windowUpdateDue(StreamState.Established, W, W - 64 * 1024 + 1), false)
  assert.equal(windowUpdateDue(StreamState.Established, W, W - 64 * 1024), true)
  assert.equal(windowUpdateDue(StreamState.Established, W, 0), true)
  assert.equal(windowUpdateDue(StreamState.Established, 16 * 1024 * 1024, 16 * 1024 * 1024 - 64 * 1024), true)
  // a window smaller than 128 KiB: due at half of it
  assert.equal(windowUpdateDue(StreamState.Established, 64 * 1024, 32 * 1024 + 1), false)
  assert.equal(windowUpdateDue(StreamState.Established, 64 * 1024, 32 * 1024), true)
  // opening, acknowledging and resuming are the library's: always passed through
  assert.equal(windowUpdateDue(StreamState.Init, W, W), true)
  assert.equal(windowUpdateDue(StreamState.SYNReceived, W, W), true)
  assert.equal(windowUpdateDue(StreamState.Paused, W, W), true)
})

test('small messages cost about one write(2) each on a swarm connection: noise length and body leave together, no window update per frame', async () => {
  const { a, b } = await pair()
  try {
    const s = sink(b)
    await a.libp2p.dial(b.libp2p.getMultiaddrs()[0], { signal: AbortSignal.timeout(10_000) })
    const stream = await a.libp2p.dialProtocol(b.peerId, PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    await send(stream, new Uint8Array(16))
    await s.done(16)
    const messages = 2000
    const size = 24
    const before = writeCalls()
    for (let i = 0; i < messages; i++) {
      await send(stream, randomBytes(size))
      // one message per turn of the event loop: nothing above the socket merges them
      await new Promise(resolve => setImmediate(resolve))
    }
    await s.done(16 + messages * size)
    const writes = writeCalls() - before
    // Per message: one write of the sender. The library's own behaviour was 2 for the sender
    // (length, then ciphertext) plus 2 for the receiver's window update: about 4 per message.
    assert.ok(writes < messages * 1.3, `${writes} write calls for ${messages} messages`)
    assert.ok(writes >= messages * 0.9, `${writes} write calls for ${messages} messages: fewer than the messages sent?`)
    await stream.close()
  } finally {
    await Promise.allSettled([a.stop(), b.stop()])
  }
})

test('flow control still holds with batched window updates: 24 MiB to a reader that keeps pausing arrives whole', async () => {
  const { a, b } = await pair()
  try {
    const s = sink(b, 512 * 1024)
    const stream = await a.libp2p.dialProtocol(b.libp2p.getMultiaddrs()[0], PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const hash = createHash('sha256')
    const total = 24 * 1024 * 1024
    // pieces of uneven size, like content-defined chunks
    let sent = 0
    for (let i = 0; sent < total; i++) {
      const piece = randomBytes(Math.min(total - sent, 16 * 1024 + ((i * 7919) % (240 * 1024))))
      hash.update(piece)
      sent += piece.byteLength
      await send(stream, piece)
    }
    await s.done(total)
    assert.equal(s.bytes(), total)
    assert.equal(s.digest(), hash.digest('hex'))
    await stream.close()
  } finally {
    await Promise.allSettled([a.stop(), b.stop()])
  }
})
