/**
 * Faults with real agent processes: the serving peer dies mid-transfer, the fetching agent is
 * killed and restarted, a peer sends corrupt blocks, forged and garbage announcements, and
 * garbage on every protocol. Deploys finish from the others; nothing corrupt reaches a target.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createPrivateKey } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import { CID } from 'multiformats/cid'
import { multiaddr } from '@multiformats/multiaddr'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { createSwarmNode, type SwarmNode } from '../node/swarm/libp2p-node.ts'
import { loadClusterKey, clusterKeyId } from '../node/swarm/cluster-key.ts'
import { generatePeerKey } from '../node/swarm/peer-key.ts'
import { BlockStore } from '../node/store/block-store.ts'
import { BLOCKS_PROTOCOL, encode, readMessages } from '../protocols/blocks/messages.ts'
import { sendParts } from '../protocols/blocks/frame.ts'
import { HEADS_PROTOCOL } from '../protocols/heads/heads.ts'
import { ANNOUNCE_TOPIC, encodeAnnouncement, signAnnouncement } from '../protocols/announce/announce.ts'
import { decodeVersion, encodeVersion, signVersion } from '../protocols/version.ts'
import { loadTree, pieceList } from '../node/tree/tree-loader.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'
import { rsyncDifferences } from './support/tree-check.ts'
import { AgentSet, waitFor } from './support/agents.ts'
import { ControlClient } from '../node/control/control-api.ts'

let work: string
let agents: AgentSet
let clusterKey: string
const golden = (): string => join(work, 'golden')
const nodes: SwarmNode[] = []

interface Status { peers: unknown[], banned: string[], versions: Array<{ image: string, number: number, cid: string, complete: boolean }>, traffic: { rejectedAnnouncements: number, badBlocks: number, received: number } }
// Straight to the control socket (as the CLI does), without starting a process per poll.
const status = async (name: string): Promise<Status> => await (await ControlClient.require(agents.dataDir(name))).call<Status>('status')

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'imgmesh-faults-'))
  agents = new AgentSet(join(work, 'nodes'))
  await makeSampleTree(golden(), { bytes: 16 * 1024 * 1024, seed: 11 })
  clusterKey = await agents.init('a')
  for (const n of ['b', 'c', 'd', 'e']) await agents.init(n, { clusterKey, trust: [agents.publishers.get('a')!] })
  // Sources upload slowly so that transfers last long enough to be interrupted.
  const a = await agents.start('a', { extra: ['--upload-limit', '2M'] })
  await agents.start('b', { bootstrap: [a.addr], extra: ['--upload-limit', '2M'] })
  await imgmeshJson(['capture', golden(), '--image', 'sample', '--no-default-excludes', '--data-dir', agents.dataDir('a')])
  const r = await imgmesh(['deploy', 'sample', join(work, 'target-b'), '--data-dir', agents.dataDir('b')])
  assert.equal(r.code, 0, r.stderr)
})

after(async () => {
  for (const n of nodes) await n.stop().catch(() => {})
  await agents.stopAll()
  await rm(work, { recursive: true, force: true })
})

test('the serving peer killed mid-transfer: the deploy finishes from the others', { timeout: 120_000 }, async () => {
  await agents.start('c', { bootstrap: [agents.agents.get('a')!.addr, agents.agents.get('b')!.addr], extra: ['--upload-limit', '2M'] })
  await waitFor('c sees a and b', async () => (await status('c')).peers.length >= 2)
  const deploying = imgmesh(['deploy', 'sample', join(work, 'target-c'), '--data-dir', agents.dataDir('c')])
  await waitFor('c has started receiving', async () => (await status('c')).traffic.received > 1024 * 1024)
  await agents.stop('a', 'SIGKILL')
  const r = await deploying
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(rsyncDifferences(golden(), join(work, 'target-c')), [])
})

test('the fetching agent killed and restarted mid-deploy resumes without refetching', { timeout: 120_000 }, async () => {
  const b = agents.agents.get('b')!
  await agents.start('d', { bootstrap: [b.addr], extra: ['--upload-limit', '2M'] })
  await waitFor('d sees b', async () => (await status('d')).peers.length >= 1)
  const first = imgmesh(['deploy', 'sample', join(work, 'target-d'), '--data-dir', agents.dataDir('d')])
  await waitFor('d has part of it', async () => (await status('d')).traffic.received > 2 * 1024 * 1024)
  const before = (await status('d')).traffic.received
  await agents.stop('d', 'SIGKILL')
  const failed = await first
  assert.notEqual(failed.code, 0, `first deploy finished: ${failed.stdout} received before kill ${before}`)
  const v = await imgmesh(['verify', join(work, 'target-d'), '--data-dir', agents.dataDir('d')])
  assert.equal(v.code, 1, 'an interrupted deploy is never reported as done')
  await agents.start('d', { bootstrap: [b.addr] })
  await waitFor('d sees b again', async () => (await status('d')).peers.length >= 1)
  const again = await imgmesh(['deploy', 'sample', join(work, 'target-d'), '--data-dir', agents.dataDir('d')])
  assert.equal(again.code, 0, again.stderr)
  assert.deepEqual(rsyncDifferences(golden(), join(work, 'target-d')), [])
  const s = await status('d')
  const total = s.versions.find(x => x.number === 1)
  assert.ok(total?.complete)
  // The second run fetched only what the first had not stored.
  const whole = (await imgmeshJson<{ stats: { chunkBytes: number } }>(['show', 'sample', '--data-dir', agents.dataDir('b')])).stats.chunkBytes
  assert.ok(s.traffic.received < whole - before / 2, `refetched: ${s.traffic.received} of ${whole}, ${before} already had`)
})

async function outsiderNode (bootstrap: string): Promise<SwarmNode> {
  const node = await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey: await loadClusterKey(clusterKey), listen: ['/ip4/127.0.0.1/tcp/0'] })
  nodes.push(node)
  await node.libp2p.dial(multiaddr(bootstrap))
  return node
}

test('a peer sending corrupt blocks is banned; the deploy completes from honest peers, exact', { timeout: 120_000 }, async () => {
  const b = agents.agents.get('b')!
  const honest = new BlockStore(join(agents.dataDir('b'), 'blocks'))
  await honest.open()
  const evil = await outsiderNode(b.addr)
  const pieceCountOf = async (version: CID): Promise<number> => pieceList(await loadTree(honest, decodeVersion(await honest.get(version)).body.tree)).length
  let servedGarbage = 0
  await evil.libp2p.handle(BLOCKS_PROTOCOL, (stream) => {
    void (async () => {
      try {
        for await (const msg of readMessages(stream)) {
          // It answers as a holder would, with the version's piece count (not an echo of the
          // asker's 0): the asker then counts it among its sources from the start of the fetch.
          if (msg.type === 'have') await sendParts(stream, encode({ type: 'have', version: msg.version, pieceCount: await pieceCountOf(msg.version), have: { kind: 'all' } }))
          if (msg.type === 'want') {
            const blocks = await Promise.all(msg.cids.map(async (cid) => {
              const real = await honest.get(cid).catch(() => new Uint8Array(10))
              if (cid.code === 0x71) return { cid, bytes: real }
              servedGarbage++
              const bad = new Uint8Array(real)
              bad[0] ^= 0xff
              return { cid, bytes: bad }
            }))
            await sendParts(stream, encode({ type: 'block', id: msg.id, blocks }))
          }
        }
      } catch {}
    })()
  })
  const evilAddr = evil.multiaddrs()[0].toString()
  await agents.start('e', { bootstrap: [evilAddr, b.addr] })
  await waitFor('e sees both', async () => (await status('e')).peers.length >= 2)
  const r = await imgmesh(['deploy', 'sample', join(work, 'target-e'), '--data-dir', agents.dataDir('e')])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(rsyncDifferences(golden(), join(work, 'target-e')), [])
  const s = await status('e')
  assert.ok(servedGarbage > 0, 'the evil peer was never asked')
  assert.ok(s.traffic.badBlocks > 0)
  assert.ok(s.banned.includes(evil.peerId.toString()), 'the evil peer is not banned')
})

test('forged, unsigned and garbage announcements are rejected; the agent stays up', { timeout: 60_000 }, async () => {
  const b = agents.agents.get('b')!
  const node = await outsiderNode(b.addr)
  const topic = `${ANNOUNCE_TOPIC}/${clusterKeyId(await loadClusterKey(clusterKey)).slice(0, 16)}`
  node.libp2p.services.pubsub.subscribe(topic)
  await new Promise(resolve => setTimeout(resolve, 2500))
  const known = (await status('b')).versions.find(v => v.number === 1)!
  // A version signed by a key nobody trusts.
  const { generateKeyPairSync } = await import('node:crypto')
  const stranger = generateKeyPairSync('ed25519').privateKey
  const fake = signVersion({ image: 'sample', number: 7, parents: [], tree: CID.parse(known.cid), root: { mode: 0o755, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: [] }, created: new Date().toISOString(), author: '', message: 'forged', stats: { files: 0, dirs: 0, entries: 0, bytes: 0, chunks: 0, chunkBytes: 0 } }, stranger)
  const { publicKeyToHex } = await import('../protocols/version.ts')
  const { createPublicKey } = await import('node:crypto')
  fake.body.author = publicKeyToHex(createPublicKey(stranger))
  const fakeSigned = signVersion(fake.body, stranger)
  const fakeBytes = encodeVersion(fakeSigned)
  const { versionCidOf } = await import('../protocols/heads/heads.ts')
  const forged = signAnnouncement({ image: 'sample', number: 7, cid: versionCidOf(fakeBytes), parents: [], newChunks: 0, newBytes: 0, time: Date.now() }, stranger, fakeBytes)
  await node.libp2p.services.pubsub.publish(topic, encodeAnnouncement(forged))
  await node.libp2p.services.pubsub.publish(topic, new Uint8Array([1, 2, 3, 4, 5]))
  // A replay of an older number with different content, signed by the real publisher.
  const realKey = createPrivateKey(await readFile(join(agents.dataDir('a'), 'publisher.key'), 'utf8'))
  const replay = signVersion({ ...fake.body, number: 1, author: agents.publishers.get('a')!, message: 'replayed number' }, realKey)
  const replayBytes = encodeVersion(replay)
  await node.libp2p.services.pubsub.publish(topic, encodeAnnouncement(signAnnouncement({ image: 'sample', number: 1, cid: versionCidOf(replayBytes), parents: [], newChunks: 0, newBytes: 0, time: Date.now() }, realKey, replayBytes)))
  await waitFor('b rejects the forgeries', async () => (await status('b')).traffic.rejectedAnnouncements >= 2, 10_000)
  const s = await status('b')
  assert.ok(!s.versions.some(v => v.number === 7), 'the forged version was accepted')
  assert.equal(s.versions.find(v => v.number === 1)?.cid, known.cid, 'the replayed number replaced the real version')
})

test('garbage and oversized frames on every protocol never bring the agent down', { timeout: 60_000 }, async () => {
  const b = agents.agents.get('b')!
  const node = await outsiderNode(b.addr)
  const peer = peerIdFromString(b.peerId)
  const payloads = [new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]), new Uint8Array(2000).fill(0xab), new Uint8Array([5, 9, 9, 9, 9, 9]), new Uint8Array([0x80])]
  for (const protocol of [BLOCKS_PROTOCOL, HEADS_PROTOCOL]) {
    for (const bytes of payloads) {
      try {
        const stream = await node.libp2p.dialProtocol(peer, protocol)
        stream.send(bytes)
        await stream.close().catch(() => {})
      } catch {}
    }
  }
  await new Promise(resolve => setTimeout(resolve, 1000))
  const s = await status('b')
  assert.ok(s.versions.some(v => v.number === 1 && v.complete))
  assert.equal(agents.agents.get('b')!.child.exitCode, null)
})

test('a control request sent while the agent is frozen (SIGSTOP) for longer than an idle connection lives is answered once it resumes', { timeout: 60_000 }, async () => {
  await agents.init('k')
  const k = await agents.start('k')
  const control = await ControlClient.require(agents.dataDir('k'))
  await control.call('status')
  const pid = k.child.pid!
  process.kill(pid, 'SIGSTOP')
  let answer: Promise<unknown>
  try {
    answer = control.call('status')
    answer.catch(() => {})
    // The agent's HTTP server closes a connection idle for 5 s: a request sent on a kept-alive
    // connection from the call above was reset at the resume.
    await new Promise(resolve => setTimeout(resolve, 8000))
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  const s = await answer as Status
  assert.ok(Array.isArray(s.peers))
  await agents.stop('k')
})

test('a peer frozen for 40 s (SIGSTOP) keeps its connection: a ping it does not answer does not close it', { timeout: 120_000 }, async () => {
  const clusterP = await agents.init('p')
  await agents.init('q', { clusterKey: clusterP, trust: [agents.publishers.get('p')!] })
  const p = await agents.start('p')
  const q = await agents.start('q', { bootstrap: [p.addr] })
  const idOf = (addr: string): string => addr.slice(addr.lastIndexOf('/') + 1)
  const peersOf = async (name: string): Promise<Array<{ peer: string, addresses: string[] }>> =>
    await (await ControlClient.require(agents.dataDir(name))).call<Array<{ peer: string, addresses: string[] }>>('peers')
  await waitFor('p and q connected', async () => (await peersOf('p')).some(x => x.peer === idOf(q.addr)))
  // q dialled p: p sees q at q's ephemeral port, which a new connection would change.
  const before = (await peersOf('p')).find(x => x.peer === idOf(q.addr))!.addresses
  // q's muxer pings p every 30 s and gets no answer while p is frozen (the library's connection
  // monitor, with its default, closed the connection on such a ping).
  const pid = p.child.pid!
  process.kill(pid, 'SIGSTOP')
  const gaps: number[] = []
  try {
    for (let i = 0; i < 40; i++) {
      await new Promise(resolve => setTimeout(resolve, 1000))
      if (!(await peersOf('q')).some(x => x.peer === idOf(p.addr))) gaps.push(i)
    }
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  assert.deepEqual(gaps, [], 'q lost its connection to the frozen p')
  const after = (await peersOf('p')).find(x => x.peer === idOf(q.addr))?.addresses
  assert.deepEqual(after, before, 'p sees q on the same connection')
  await agents.stop('p')
  await agents.stop('q')
})

test('the only holder stalls (SIGSTOP) before the tree arrives: the deploy waits for it and finishes, exact', { timeout: 120_000 }, async () => {
  // A cluster of its own, so that no other agent can answer for the stalled one.
  const frozen = join(work, 'frozen-golden')
  await makeSampleTree(frozen, { bytes: 2 * 1024 * 1024, seed: 12 })
  const clusterF = await agents.init('f')
  await agents.init('g', { clusterKey: clusterF, trust: [agents.publishers.get('f')!] })
  const f = await agents.start('f')
  await imgmeshJson(['capture', frozen, '--image', 'frozen', '--no-default-excludes', '--data-dir', agents.dataDir('f')])
  await agents.start('g', { bootstrap: [f.addr] })
  await waitFor('g knows frozen@1 from f', async () => (await status('g')).versions.some(v => v.image === 'frozen' && v.number === 1))
  const pid = f.child.pid!
  process.kill(pid, 'SIGSTOP')
  try {
    const deploying = imgmesh(['deploy', 'frozen', join(work, 'target-g'), '--data-dir', agents.dataDir('g')])
    // Longer than a tree request's timeout plus a fallback pass over every peer.
    await new Promise(resolve => setTimeout(resolve, 18_000))
    process.kill(pid, 'SIGCONT')
    const r = await deploying
    assert.equal(r.code, 0, r.stderr)
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  assert.deepEqual(rsyncDifferences(frozen, join(work, 'target-g')), [])
})
