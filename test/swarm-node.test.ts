import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { readFileSync } from 'node:fs'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { generateClusterKey } from '../node/swarm/cluster-key.ts'
import { generatePeerKey, peerIdOf } from '../node/swarm/peer-key.ts'
import { createSwarmNode, lanPeerInfoMapper, publishToMesh, DHT_PROTOCOL, type SwarmNode, type SwarmNodeOptions } from '../node/swarm/libp2p-node.ts'
import { connectedPeerIds } from '../node/swarm/connected-peers.ts'
import { BLOCKS_PROTOCOL, readMessages, writeMessage } from '../protocols/blocks/messages.ts'
import type { Stream } from '@libp2p/interface'

const LOOPBACK = ['/ip4/127.0.0.1/tcp/0']

async function node (clusterKey: Uint8Array, extra: Partial<SwarmNodeOptions> = {}): Promise<SwarmNode> {
  return await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey, listen: LOOPBACK, mdns: false, ...extra })
}

/** Starts `n` nodes (added to `nodes`, for stopAll) and returns a bootstrap list of them. */
async function bootstrapPeers (key: Uint8Array, n: number, nodes: SwarmNode[]): Promise<{ peers: SwarmNode[], list: string[] }> {
  const peers = await Promise.all(Array.from({ length: n }, async () => await node(key)))
  nodes.push(...peers)
  return { peers, list: peers.map(p => p.multiaddrs()[0].toString()) }
}

async function stopAll (nodes: SwarmNode[]): Promise<void> {
  await Promise.allSettled(nodes.map(async n => { await n.stop() }))
}

/** Polls `cond` every 50 ms until true or `ms` elapse (then throws). */
async function waitFor (what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await cond()) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`)
}

/** A bounded wait for one operation (the nodes' listeners keep the event loop alive meanwhile). */
function deadline (ms: number): AbortSignal {
  return AbortSignal.timeout(ms)
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      srv.close(() => { typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port')) })
    })
  })
}

const ENCRYPTION_FAILURES = new Set(['EncryptionFailedError', 'InvalidCryptoExchangeError', 'UnexpectedEOFError', 'ConnectionFailedError', 'AbortError', 'TimeoutError'])

test('same cluster key: connect on 127.0.0.1 over noise + yamux and ping', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key); nodes.push(a)
    const b = await node(key); nodes.push(b)
    const addr = a.multiaddrs()[0]
    assert.match(addr.toString(), /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
    const rtt = await b.libp2p.services.ping.ping(addr, { signal: deadline(5000) })
    assert.equal(typeof rtt, 'number')
    const [conn] = b.libp2p.getConnections(a.peerId)
    assert.ok(conn !== undefined)
    assert.equal(conn.encryption, '/noise')
    assert.equal(conn.multiplexer, '/yamux/1.0.0')
    assert.equal(a.clusterId, b.clusterId)
  } finally {
    await stopAll(nodes)
  }
})

test('a node with another cluster key cannot finish a handshake (noise prologue)', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key); nodes.push(a)
    const outsider = await node(generateClusterKey()); nodes.push(outsider)
    const err = await outsider.libp2p.dial(a.multiaddrs()[0], { signal: deadline(5000) }).then(() => null, (e: unknown) => e as Error)
    assert.ok(err !== null, 'the dial must fail')
    assert.ok(ENCRYPTION_FAILURES.has(err.name), `unexpected failure ${err.name}: ${err.message}`)
    assert.equal(err.name, 'EncryptionFailedError')
    // and the other way round
    const err2 = await a.libp2p.dial(outsider.multiaddrs()[0], { signal: deadline(5000) }).then(() => null, (e: unknown) => e as Error)
    assert.ok(err2 !== null && ENCRYPTION_FAILURES.has(err2.name), `unexpected ${err2?.name}`)
    await new Promise(resolve => setTimeout(resolve, 100))
    assert.equal(a.libp2p.getConnections(outsider.peerId).length, 0)
    assert.equal(outsider.libp2p.getPeers().length, 0)
  } finally {
    await stopAll(nodes)
  }
})

test('the pnet gate also admits the same key only', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key, { gate: 'pnet' }); nodes.push(a)
    const b = await node(key, { gate: 'pnet' }); nodes.push(b)
    const outsider = await node(generateClusterKey(), { gate: 'pnet' }); nodes.push(outsider)
    const prologueOnly = await node(key); nodes.push(prologueOnly)
    await b.libp2p.services.ping.ping(a.multiaddrs()[0], { signal: deadline(5000) })
    for (const n of [outsider, prologueOnly]) {
      const err = await n.libp2p.dial(a.multiaddrs()[0], { signal: deadline(1500) }).then(() => null, (e: unknown) => e as Error)
      assert.ok(err !== null, 'the dial must fail')
    }
  } finally {
    await stopAll(nodes)
  }
})

test('kad-dht: provide on one node, findProviders on another (3 nodes, bootstrap)', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key); nodes.push(a)
    const boot = [a.multiaddrs()[0].toString()]
    const b = await node(key, { bootstrap: boot }); nodes.push(b)
    const c = await node(key, { bootstrap: boot }); nodes.push(c)
    // bootstrap dials after 100 ms; identify then tells kad-dht the peers run our DHT protocol
    await waitFor('b and c connected to a', () => b.libp2p.getConnections(a.peerId).length > 0 && c.libp2p.getConnections(a.peerId).length > 0)
    await waitFor('DHT protocol known', async () => {
      const p = await c.libp2p.peerStore.get(a.peerId)
      return p.protocols.includes(DHT_PROTOCOL)
    })
    assert.equal(b.libp2p.services.dht.getMode(), 'server')
    const cid = CID.createV1(0x71, Digest.create(0x12, new Uint8Array(randomBytes(32))))
    const t0 = Date.now()
    for await (const _ev of b.libp2p.services.dht.provide(cid, { signal: deadline(10_000) })) { /* run the query */ }
    const provideMs = Date.now() - t0
    const t1 = Date.now()
    let found: string[] = []
    for await (const ev of c.libp2p.services.dht.findProviders(cid, { signal: deadline(10_000) })) {
      if (ev.name === 'PROVIDER') {
        found = ev.providers.map(p => p.id.toString())
        assert.ok(ev.providers[0].multiaddrs.some(ma => ma.toString().startsWith('/ip4/127.0.0.1/tcp/')), 'loopback addresses are kept')
        break
      }
    }
    assert.ok(found.includes(b.peerId.toString()), 'c finds b as a provider')
    process.stderr.write(`# dht provide ${provideMs} ms, findProviders ${Date.now() - t1} ms\n`)
  } finally {
    await stopAll(nodes)
  }
})

test('gossipsub: a message published by one node reaches another', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key); nodes.push(a)
    const b = await node(key, { bootstrap: [a.multiaddrs()[0].toString()] }); nodes.push(b)
    const c = await node(key, { bootstrap: [a.multiaddrs()[0].toString()] }); nodes.push(c)
    const topic = '/imgmesh/test/1'
    for (const n of nodes) n.libp2p.services.pubsub.subscribe(topic)
    await waitFor('c sees a subscriber', () => c.libp2p.services.pubsub.getSubscribers(topic).length > 0)
    await waitFor('b sees a subscriber', () => b.libp2p.services.pubsub.getSubscribers(topic).length > 0)
    // a relays only to its mesh: a message that reaches a before c's GRAFT does is not forwarded
    // to c, and no later gossip round offers it to a mesh peer
    const meshOfA = a.libp2p.services.pubsub as unknown as { getMeshPeers: (topic: string) => string[] }
    await waitFor('c in the mesh of a', () => meshOfA.getMeshPeers(topic).includes(c.peerId.toString()))
    const received = new Promise<{ data: Uint8Array, from: string }>((resolve) => {
      c.libp2p.services.pubsub.addEventListener('message', (evt) => {
        const m = evt.detail
        if (m.topic === topic && m.type === 'signed') resolve({ data: m.data, from: m.from.toString() })
      })
    })
    const payload = new Uint8Array(randomBytes(100))
    const t0 = Date.now()
    const res = await b.libp2p.services.pubsub.publish(topic, payload)
    assert.ok(res.recipients.length > 0)
    const timeout = new Promise<never>((_resolve, reject) => { const t = setTimeout(() => { reject(new Error('no gossip within 5 s')) }, 5000); received.finally(() => { clearTimeout(t) }).catch(() => {}) })
    const got = await Promise.race([received, timeout])
    assert.ok(Buffer.from(got.data).equals(payload), "payload intact")
    assert.equal(got.from, b.peerId.toString(), 'signed by the publisher')
    process.stderr.write(`# gossip delivered in ${Date.now() - t0} ms\n`)
  } finally {
    await stopAll(nodes)
  }
})

test('bootstrap peers are redialled until they come up', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const laterKey = await generatePeerKey()
    const port = await freePort()
    const addr = `/ip4/127.0.0.1/tcp/${port}/p2p/${peerIdOf(laterKey).toString()}`
    const d = await node(key, { bootstrap: [addr], topUpInterval: 200 }); nodes.push(d)
    await new Promise(resolve => setTimeout(resolve, 400))
    const later = await createSwarmNode({ privateKey: laterKey, clusterKey: key, listen: [`/ip4/127.0.0.1/tcp/${port}`] }); nodes.push(later)
    await waitFor('d connects to the late bootstrap peer', () => d.libp2p.getConnections(later.peerId).length > 0, 5000)
  } finally {
    await stopAll(nodes)
  }
})

test('lanPeerInfoMapper keeps loopback and private TCP addresses, drops unspecified ones', () => {
  const id = peerIdFromString('12D3KooWRAEGLb6STpkufq4i6Hty8xHKFSgGtBm1HaGFMJxvJS8n')
  const mapped = lanPeerInfoMapper({
    id,
    multiaddrs: ['/ip4/127.0.0.1/tcp/1', '/ip4/10.1.2.3/tcp/2', '/ip4/192.168.1.9/tcp/3', '/ip4/0.0.0.0/tcp/4', '/ip6/::1/tcp/5', '/ip6/::/tcp/6', '/ip4/8.8.8.8/tcp/7', '/ip4/10.0.0.1/udp/8'].map(a => multiaddr(a))
  })
  assert.deepEqual(mapped.multiaddrs.map(String), ['/ip4/127.0.0.1/tcp/1', '/ip4/10.1.2.3/tcp/2', '/ip4/192.168.1.9/tcp/3', '/ip6/::1/tcp/5', '/ip4/8.8.8.8/tcp/7'])
})

/** The largest size the kernel lets a TCP socket buffer grow to (third field of net.ipv4.NAME). */
function kernelMax (name: 'tcp_rmem' | 'tcp_wmem', fallback: number): number {
  try {
    const max = Number(readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8').trim().split(/\s+/)[2])
    return Number.isFinite(max) && max > 0 ? max : fallback
  } catch {
    return fallback
  }
}

test('block exchange over yamux: a slow reader holds the sender back', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key); nodes.push(a)
    const b = await node(key); nodes.push(b)
    const block = new Uint8Array(256 * 1024)
    // What may sit between writer and reader: the reader's queue (8 MiB), the yamux window (at
    // most 16 MiB), the kernel's socket buffers at their autotuning maxima (the receive side may
    // grow to 32 MiB on some kernels), one message. The writer sends 2.5 times that: a stream
    // that let the window open while its reader was paused was reset long before the end.
    const socketMiB = (kernelMax('tcp_rmem', 6 << 20) + kernelMax('tcp_wmem', 4 << 20)) / (1 << 20)
    const boundMiB = 8 + 16 + socketMiB + 1
    const total = 4 * Math.ceil(boundMiB * 2.5) // in 256 KiB blocks, 4 per message
    let consumed = 0
    const done = new Promise<void>((resolve, reject) => {
      void b.libp2p.handle(BLOCKS_PROTOCOL, async (stream: Stream) => {
        try {
          for await (const m of readMessages(stream)) {
            if (m.type === 'block') consumed += m.blocks.length
            await new Promise(resolve => setTimeout(resolve, 4)) // a slow disk
          }
          resolve()
        } catch (err) { reject(err as Error) }
      })
    })
    const stream = await a.libp2p.dialProtocol(b.multiaddrs()[0], BLOCKS_PROTOCOL, { signal: deadline(5000) })
    let sent = 0
    let maxAhead = 0
    for (let i = 0; i < total; i += 4) {
      await writeMessage(stream, { type: 'block', id: i, blocks: [0, 1, 2, 3].map(() => ({ cid: CID.createV1(0x55, Digest.create(0x12, new Uint8Array(randomBytes(32)))), bytes: block })) }, { signal: deadline(20_000) })
      sent += 4
      maxAhead = Math.max(maxAhead, sent - consumed)
    }
    await stream.close()
    await Promise.race([done, new Promise((_resolve, reject) => setTimeout(() => { reject(new Error('reader did not finish in 20 s')) }, 20_000).unref())])
    assert.equal(consumed, total)
    process.stderr.write(`# writer ran at most ${maxAhead / 4} MiB ahead of the reader\n`)
    assert.ok(maxAhead / 4 <= boundMiB, `writer ran ${maxAhead / 4} MiB ahead (bound ${boundMiB} MiB, sent ${total / 4} MiB)`)
  } finally {
    await stopAll(nodes)
  }
})

// mDNS multicasts on every real interface: run only when asked (IMGMESH_TEST_MDNS=1).
test('mDNS: two nodes with the same key find and dial each other', { skip: process.env.IMGMESH_TEST_MDNS !== '1' && 'mDNS multicasts on real interfaces; set IMGMESH_TEST_MDNS=1 to run' }, async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key, { mdns: { interval: 500 } }); nodes.push(a)
    const b = await node(key, { mdns: { interval: 500 } }); nodes.push(b)
    await waitFor('mDNS discovery and dial', () => a.libp2p.getConnections(b.peerId).length > 0, 10_000)
  } finally {
    await stopAll(nodes)
  }
})

test('a node bootstrapping to 12 peers dials them at most 4 at a time and connects to all of them', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const { peers, list } = await bootstrapPeers(key, 12, nodes)
    const late = await node(key, { bootstrap: list, start: false }); nodes.push(late)
    let most = 0
    const sampler = setInterval(() => { most = Math.max(most, late.dialer.active) }, 1)
    try {
      await late.libp2p.start()
      await waitFor('the late node connected to all 12', () => peers.every(p => late.libp2p.getConnections(p.peerId).length > 0), 20_000)
    } finally {
      clearInterval(sampler)
    }
    assert.ok(most >= 1 && most <= 4, `dials at once: ${most}`)
    assert.equal(late.dialer.size, 0, 'no dial left queued')
  } finally {
    await stopAll(nodes)
  }
})

test('the dialer: one dial per peer however often asked, a failed dial says why, stop() drops queued dials', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await node(key); nodes.push(a)
    const b = await node(key); nodes.push(b)
    const addr = [b.multiaddrs()[0]]
    const [x, y] = await Promise.all([a.dialer.dial(b.peerId, addr), a.dialer.dial(b.peerId, addr)])
    assert.deepEqual([x.connected, y.connected], [true, true])
    assert.equal(a.libp2p.getConnections(b.peerId).length, 1, 'one connection')
    assert.equal((await a.dialer.dial(a.peerId)).connected, false, 'not to itself')

    // Nobody listens on this port: refused, with the reason.
    const ghost = peerIdOf(await generatePeerKey())
    const port = await freePort()
    const dead = await a.dialer.dial(ghost, [multiaddr(`/ip4/127.0.0.1/tcp/${port}/p2p/${ghost.toString()}`)])
    assert.equal(dead.connected, false)
    assert.ok((dead.error ?? '').length > 0, 'a reason')

    // A node stopped while dials are queued: they end, none is left waiting.
    const c = await node(key, { start: false }); nodes.push(c)
    const ghosts = await Promise.all(Array.from({ length: 6 }, async () => peerIdOf(await generatePeerKey())))
    const pending = ghosts.map(g => c.dialer.dial(g, [multiaddr(`/ip4/127.0.0.1/tcp/${port}/p2p/${g.toString()}`)]))
    await c.stop()
    const ends = await Promise.all(pending)
    assert.ok(ends.every(e => !e.connected))
    assert.equal(c.dialer.size, 0)
  } finally {
    await stopAll(nodes)
  }
})

test('bootstrap to more peers than `peers`: dials only up to the limit', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const { list } = await bootstrapPeers(key, 8, nodes)
    const late = await node(key, { bootstrap: list, peers: 3 }); nodes.push(late)
    await waitFor('three connections', () => late.libp2p.getPeers().length >= 3, 10_000)
    await waitFor('no dial running', () => late.dialer.size === 0, 10_000)
    await new Promise(resolve => setTimeout(resolve, 500))
    assert.equal(late.libp2p.getPeers().length, 3)
  } finally {
    await stopAll(nodes)
  }
})

test('nodes with one bootstrap list dial it in different orders, and refuse inbound connections past maxConnections', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const { peers, list } = await bootstrapPeers(key, 8, nodes)
    const late = await Promise.all(Array.from({ length: 6 }, async () => await node(key, { bootstrap: list, peers: 2 })))
    nodes.push(...late)
    await waitFor('two connections each', () => late.every(n => n.libp2p.getPeers().length >= 2), 15_000)
    const dialled = new Set(late.flatMap(n => n.libp2p.getPeers().map(String)))
    // All six taking the same first two of eight in list order would be the unshuffled list.
    assert.ok(dialled.size > 2, `the six nodes dialled ${dialled.size} distinct peers`)

    // A node that accepts 3 connections: the 4th and 5th inbound are refused, the first 3 stay.
    const small = await node(key, { peers: 1, maxConnections: 3 }); nodes.push(small)
    const addr = [small.multiaddrs()[0]]
    const outcomes = []
    for (const p of peers.slice(0, 5)) outcomes.push(await p.dialer.dial(small.peerId, addr))
    await new Promise(resolve => setTimeout(resolve, 300))
    assert.equal(small.libp2p.getPeers().length, 3)
    assert.deepEqual(outcomes.slice(0, 3).map(o => o.connected), [true, true, true])
    // The refused ones see the socket closed (during or right after the handshake).
    assert.deepEqual(peers.slice(0, 5).map(p => p.libp2p.getConnections(small.peerId).length > 0), [true, true, true, false, false])
  } finally {
    await stopAll(nodes)
  }
})

test('a node tops its connections up from its candidates when a peer goes away', async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const { peers, list } = await bootstrapPeers(key, 4, nodes)
    const n = await node(key, { bootstrap: list, peers: 2, topUpInterval: 200 }); nodes.push(n)
    await waitFor('two connections', () => n.libp2p.getPeers().length === 2, 10_000)
    const first = n.libp2p.getPeers().map(String)
    const gone = peers.find(p => p.peerId.toString() === first[0]) as SwarmNode
    await gone.stop()
    await waitFor('back to two connections, with another peer', () => {
      const now = n.libp2p.getPeers().map(String)
      return now.length === 2 && !now.includes(first[0])
    }, 10_000)
    await new Promise(resolve => setTimeout(resolve, 500))
    assert.equal(n.libp2p.getPeers().length, 2, 'no more than `peers`')
  } finally {
    await stopAll(nodes)
  }
})

test('a status-style publish goes to the mesh only; the peer list needs no PeerId round trip', { timeout: 60_000 }, async () => {
  const key = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const hub = await node(key); nodes.push(hub)
    const hubAddr = hub.multiaddrs()[0].toString()
    const leaves = await Promise.all(Array.from({ length: 10 }, async () => await node(key, { bootstrap: [hubAddr] })))
    nodes.push(...leaves)
    const topic = '/imgmesh/test/mesh-only'
    for (const n of nodes) n.libp2p.services.pubsub.subscribe(topic)
    await waitFor('ten connections at the hub', () => hub.libp2p.getPeers().length === 10, 15_000)
    assert.deepEqual(connectedPeerIds(hub.libp2p).sort(), hub.libp2p.getPeers().map(String).sort())
    assert.equal(connectedPeerIds(leaves[0].libp2p).length, 1)
    const pubsub = hub.libp2p.services.pubsub
    const mesh = pubsub as unknown as { getMeshPeers: (topic: string) => string[] }
    await waitFor('ten subscribers and a full mesh at the hub', () => pubsub.getSubscribers(topic).length === 10 && mesh.getMeshPeers(topic).length >= 4, 15_000)
    // every leaf grafts the hub, its only peer; the hub keeps at most Dhi (8) inbound ones
    const inMesh = mesh.getMeshPeers(topic)
    assert.ok(inMesh.length <= 8, `mesh of ${inMesh.length} peers`)
    const toMesh = await publishToMesh(pubsub, topic, new Uint8Array(randomBytes(64)))
    assert.deepEqual(toMesh.recipients.map(String).sort(), mesh.getMeshPeers(topic).sort(), 'sent to the mesh peers only')
    const flooded = await pubsub.publish(topic, new Uint8Array(randomBytes(64)))
    assert.equal(flooded.recipients.length, 10, 'a plain publish still reaches every subscriber directly')
  } finally {
    await stopAll(nodes)
  }
})
