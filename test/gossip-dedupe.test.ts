/**
 * Gossip drops a copy of a message it has already seen before checking the copy's signature
 * (node/swarm/libp2p-node.ts, gossipFastMessageId). These tests check that this shortcut cannot
 * be used to censor: a forged message carrying a real message's sender and sequence number,
 * sent first, is refused, and the real message still gets through.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { RPC } from '@libp2p/gossipsub/message'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { generateClusterKey } from '../node/swarm/cluster-key.ts'
import { generatePeerKey, peerIdOf } from '../node/swarm/peer-key.ts'
import { createSwarmNode, gossipFastMessageId, type SwarmNode } from '../node/swarm/libp2p-node.ts'

const SIGN_PREFIX = new TextEncoder().encode('libp2p-pubsub:')

function concat (parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts))
}

/** A varint length prefix, as gossipsub frames its RPCs. */
function lengthPrefixed (bytes: Uint8Array): Uint8Array {
  const head: number[] = []
  let n = bytes.length
  while (n >= 0x80) { head.push((n & 0x7f) | 0x80); n >>>= 7 }
  head.push(n)
  return concat([Uint8Array.from(head), bytes])
}

test('the quick duplicate id is sender and sequence number per topic', () => {
  const a = { from: new Uint8Array([1, 2, 3]), seqno: new Uint8Array([0, 0, 0, 7]), topic: 't' }
  assert.equal(gossipFastMessageId(a), gossipFastMessageId({ ...a }))
  assert.notEqual(gossipFastMessageId(a), gossipFastMessageId({ ...a, seqno: new Uint8Array([0, 0, 0, 8]) }))
  assert.notEqual(gossipFastMessageId(a), gossipFastMessageId({ ...a, from: new Uint8Array([1, 2, 4]) }))
  assert.notEqual(gossipFastMessageId(a), gossipFastMessageId({ ...a, topic: 'u' }))
  assert.equal(gossipFastMessageId({ topic: 't' }), 'unsigned')
})

test('a forged copy sent first (same sender and sequence number, bad signature) does not shadow the real message', { timeout: 30_000 }, async () => {
  const clusterKey = generateClusterKey()
  const nodes: SwarmNode[] = []
  try {
    const a = await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
    nodes.push(a)
    const b = await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
    nodes.push(b)
    const topic = 'imgmesh-test-dedupe'
    const pubsub = a.libp2p.services.pubsub
    const seen: string[] = []
    pubsub.topicValidators.set(topic, (_peer, msg) => {
      seen.push(new TextDecoder().decode(msg.data))
      return TopicValidatorResult.Accept
    })
    const delivered: string[] = []
    pubsub.addEventListener('message', (evt) => {
      if (evt.detail.topic === topic) delivered.push(new TextDecoder().decode(evt.detail.data))
    })
    pubsub.subscribe(topic)

    // The message a third node (c) publishes, signed with its key, and a forgery of it.
    const cKey = await generatePeerKey()
    const from = peerIdOf(cKey).toMultihash().bytes
    const seqno = randomBytes(8)
    const real: RPC.Message = { from, seqno, topic, data: new TextEncoder().encode('real') }
    real.signature = await cKey.sign(concat([SIGN_PREFIX, RPC.Message.encode(real)]))
    const forged: RPC.Message = { from, seqno, topic, data: new TextEncoder().encode('forged'), signature: randomBytes(64) }

    // b speaks gossipsub to a by hand: the forgery first, then the real message.
    const stream = await b.libp2p.dialProtocol(a.multiaddrs()[0], '/meshsub/1.1.0', { signal: AbortSignal.timeout(5000) })
    const rpc = (messages: RPC.Message[]): Uint8Array => lengthPrefixed(RPC.encode({ subscriptions: [{ subscribe: true, topic }], messages, control: undefined }))
    stream.send(rpc([forged]))
    await new Promise(resolve => setTimeout(resolve, 300))
    stream.send(rpc([real]))
    const deadline = Date.now() + 10_000
    while (!delivered.includes('real') && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    assert.deepEqual(delivered, ['real'], 'the real message is delivered, the forgery is not')
    assert.ok(!seen.includes('forged'), 'the forgery never reached the topic validator (its signature failed)')

    // A second copy of the real message is a duplicate: not validated or delivered again.
    stream.send(rpc([real]))
    await new Promise(resolve => setTimeout(resolve, 500))
    assert.deepEqual(delivered, ['real'])
    assert.deepEqual(seen, ['real'])
    await stream.close().catch(() => {})
  } finally {
    await Promise.allSettled(nodes.map(async n => { await n.stop() }))
  }
})
