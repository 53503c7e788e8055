/**
 * A node's offer of a version can be replaced: what its store held of it (an interrupted fetch,
 * scanned on demand) gives way to a fetch's live offer once the fetch resumes. A peer told of the
 * first must go on hearing of the pieces the second gains. And a fetch stopped while its tree is
 * loading ends at once; a fetch given a tree in memory still brings every tree block into its
 * store. Two real libp2p nodes on loopback.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { generateClusterKey } from '../node/swarm/cluster-key.ts'
import { generatePeerKey } from '../node/swarm/peer-key.ts'
import { createSwarmNode, type SwarmNode } from '../node/swarm/libp2p-node.ts'
import { BlockStore } from '../node/store/block-store.ts'
import { BlockExchange, makeOffer, type HaveEvent, type Offer, type OfferSource } from '../node/exchange/block-exchange.ts'
import { Bitfield } from '../node/fetch/bitfield.ts'
import { VersionFetcher } from '../node/exchange/version-fetcher.ts'
import { loadTree, treeBlocks } from '../node/tree/tree-loader.ts'
import { encodeTree, type TreeEntry } from '../protocols/tree.ts'
import { DAG_CBOR_CODE } from '../node/store/cid.ts'
import { BLOCKS_PROTOCOL, encode, readMessages } from '../protocols/blocks/messages.ts'
import { sendParts } from '../protocols/blocks/frame.ts'

const cid = (codec: number): CID => CID.createV1(codec, Digest.create(0x12, new Uint8Array(randomBytes(32))))

function offerOf (version: CID, pieces: CID[], held: number[]): Offer {
  const have = new Bitfield(pieces.length)
  for (const i of held) have.set(i)
  return makeOffer(version, pieces, have)
}

/** Indexes a HAVE message says the sender holds. */
function heldIn (e: HaveEvent): number[] {
  if (e.have.kind === 'all') return Array.from({ length: e.pieceCount }, (_, i) => i)
  if (e.have.kind === 'indexes') return e.have.indexes
  const b = new Bitfield(e.pieceCount, e.have.bitmap)
  return Array.from({ length: e.pieceCount }, (_, i) => i).filter(i => b.has(i))
}

type ExchangeOptions = ConstructorParameters<typeof BlockExchange>[3]

interface TwoNodes {
  a: SwarmNode
  b: SwarmNode
  storeA: BlockStore
  storeB: BlockStore
  /** Starts a's exchange (offering what `source` says) and b's (offering nothing), and dials a from b. */
  connect: (source: OfferSource, optsA?: ExchangeOptions) => Promise<{ exA: BlockExchange, exB: BlockExchange }>
}

/**
 * Runs fn with two nodes of one cluster on loopback, each with a block store; afterwards stops
 * the exchanges `connect` started, then the nodes, and removes the stores, even on failure.
 */
async function withTwoNodes (fn: (t: TwoNodes) => Promise<void>): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'imgmesh-offers-'))
  const nodes: SwarmNode[] = []
  const exchanges: BlockExchange[] = []
  try {
    const clusterKey = generateClusterKey()
    const a = await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
    nodes.push(a)
    const b = await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
    nodes.push(b)
    const storeA = new BlockStore(join(work, 'a'))
    await storeA.open()
    const storeB = new BlockStore(join(work, 'b'))
    await storeB.open()
    const connect = async (source: OfferSource, optsA?: ExchangeOptions): Promise<{ exA: BlockExchange, exB: BlockExchange }> => {
      const exA = new BlockExchange(a.libp2p, storeA, source, optsA)
      const exB = new BlockExchange(b.libp2p, storeB, async () => null)
      exchanges.push(exA, exB)
      await exA.start()
      await exB.start()
      await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
      return { exA, exB }
    }
    await fn({ a, b, storeA, storeB, connect })
  } finally {
    for (const ex of exchanges) await ex.stop().catch(() => {})
    for (const n of nodes) await n.stop().catch(() => {})
    await rm(work, { recursive: true, force: true })
  }
}

/** Waits until ok() holds, checking every 20 ms; fails after 5 s naming what it waited for. */
async function until (what: string, ok: () => boolean): Promise<void> {
  const end = Date.now() + 5000
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

test('a peer told of a stored part of a version hears of the pieces a resumed fetch adds; a stopped tree load ends', { timeout: 30_000 }, async () => {
  await withTwoNodes(async ({ a, storeB, connect }) => {
    const version = cid(0x71)
    const pieces = Array.from({ length: 16 }, () => cid(0x55))
    // Node a holds piece 0 from an earlier, interrupted fetch: each ask scans the store anew.
    let live: Offer | null = null
    const { exA, exB } = await connect(async (v: CID): Promise<Offer | null> => v.equals(version) ? (live ?? offerOf(version, pieces, [0])) : null)

    const heard = new Set<number>()
    let messages = 0
    exB.onHave(version, (e) => { messages++; for (const i of heldIn(e)) heard.add(i) })
    await exB.askHave(a.libp2p.peerId.toString(), version, 0, { kind: 'bitmap', bitmap: new Uint8Array(0) })
    await until('the first answer', () => heard.has(0))
    assert.deepEqual([...heard], [0])
    // a counts b among the peers asking about the version, and only that version.
    assert.equal(exA.peersAsking(version), 1)
    assert.equal(exA.peersAsking(pieces[0]), 0)

    // The fetch resumes on a: a live offer replaces the scanned one, and gains pieces.
    live = offerOf(version, pieces, [0])
    exA.offerReady(version)
    const have = live.have as Bitfield
    have.set(3)
    have.set(9)
    await until('pieces 3 and 9', () => heard.has(3) && heard.has(9))
    have.set(15)
    await until('piece 15', () => heard.has(15))
    assert.deepEqual([...heard].sort((x, y) => x - y), [0, 3, 9, 15])
    assert.ok(messages >= 2)

    // A fetch stopped while its tree is still loading (no peer holds the tree) ends at once.
    const fetcher = new VersionFetcher(exB, storeB, cid(0x71), cid(0x71), { candidates: () => [] })
    const preparing = fetcher.prepare()
    await new Promise(resolve => setTimeout(resolve, 300))
    const t = Date.now()
    fetcher.stop()
    await assert.rejects(preparing, (err: Error & { code?: string }) => err.code === 'EABORTED')
    assert.ok(Date.now() - t < 1000, `prepare() ended ${Date.now() - t} ms after stop()`)
  })
})

test('a fetch that takes directories from a tree in memory whose blocks are not in its store fetches them', { timeout: 30_000 }, async () => {
  await withTwoNodes(async ({ a, storeA, storeB, connect }) => {
    // Node a holds a version: a root directory, a subdirectory, a file of two chunks in it.
    const chunks = [randomBytes(40_000), randomBytes(30_000)].map(bytes => storeA.putSync(bytes).cid)
    const meta = { mode: 0o755, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: [] }
    const file: TreeEntry = { ...meta, name: new Uint8Array(Buffer.from('f')), type: 'file', mode: 0o644, size: 70_000, segments: [{ length: 40_000, cid: chunks[0] }, { length: 30_000, cid: chunks[1] }] }
    const sub = storeA.putSync(encodeTree([file]), DAG_CBOR_CODE).cid
    const root = storeA.putSync(encodeTree([{ ...meta, name: new Uint8Array(Buffer.from('sub')), type: 'dir', tree: sub }]), DAG_CBOR_CODE).cid
    const version = cid(0x71)
    const { exB } = await connect(async (v) => v.equals(version) ? offerOf(version, chunks, [0, 1]) : null)

    // b has the tree in memory (loaded from a's store), but none of its blocks.
    const inMemory = await loadTree(storeA, root)
    const fetcher = new VersionFetcher(exB, storeB, version, root, { candidates: () => [a.libp2p.peerId.toString()], reuse: [inMemory] })
    await fetcher.prepare()
    fetcher.start()
    await fetcher.done
    for (const c of [root, sub, ...chunks]) assert.equal(await storeB.has(c), true, `${c.toString()} in b's store`)
    assert.deepEqual(Buffer.from(await storeB.get(chunks[1])), Buffer.from(await storeA.get(chunks[1])))
    fetcher.stop()
  })
})

test('HAVE pacing: news waits while the peer can ask us for enough, and goes out once it cannot or a batch gathered', { timeout: 30_000 }, async () => {
  await withTwoNodes(async ({ a, connect }) => {
    const version = cid(0x71)
    const pieces = Array.from({ length: 200 }, () => cid(0x55))
    // a holds pieces 0..49; news waits while b can ask a for 8 or more, or until 4 gathered.
    const offer = offerOf(version, pieces, Array.from({ length: 50 }, (_, i) => i))
    const { exA, exB } = await connect(async (v) => v.equals(version) ? offer : null, { havePacing: { enough: 8, batch: 4, maxWaitMs: 60_000 } })
    const heard = new Set<number>()
    let messages = 0
    exB.onHave(version, (e) => { messages++; for (const i of heldIn(e)) heard.add(i) })
    const A = a.libp2p.peerId.toString()
    const have = offer.have as Bitfield
    await exB.askHave(A, version, 200, { kind: 'bitmap', bitmap: new Bitfield(200).bytes })
    await until('the first answer', () => heard.size === 50)
    const answered = messages

    // b can ask a for 50 pieces: three new ones wait (turns every 100 ms)...
    for (const i of [100, 101, 102]) have.set(i)
    await new Promise(resolve => setTimeout(resolve, 600))
    assert.equal(heard.has(100), false, 'news waited')
    assert.equal(messages, answered)
    // ...until a fourth makes a batch.
    have.set(103)
    await until('the batch', () => [100, 101, 102, 103].every(i => heard.has(i)))
    assert.equal(messages, answered + 1, 'one HAVE for the batch')

    // b now says it holds 0..49 and 100..103 (asking again): it can ask a for nothing, so news goes out at once.
    const mine = new Bitfield(200)
    for (let i = 0; i < 50; i++) mine.set(i)
    for (const i of [100, 101, 102, 103]) mine.set(i)
    await exB.askHave(A, version, 200, { kind: 'bitmap', bitmap: mine.bytes })
    await until('the answer to the second ask', () => messages >= answered + 2)
    const before = messages
    have.set(150)
    await until('piece 150', () => heard.has(150))
    assert.equal(messages, before + 1)
  })
})

test('a peer that asks for a tree\'s root is sent the whole tree: a tree eight levels deep loads with one WANT', { timeout: 30_000 }, async () => {
  await withTwoNodes(async ({ a, storeA, storeB, connect }) => {
    // Node a holds a version whose tree nests eight directories, two of them at each level.
    const chunk = storeA.putSync(randomBytes(20_000)).cid
    const meta = { mode: 0o755, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: [] }
    const name = (s: string): Uint8Array => new Uint8Array(Buffer.from(s))
    let dir = storeA.putSync(encodeTree([{ ...meta, name: name('f'), type: 'file', mode: 0o644, size: 20_000, segments: [{ length: 20_000, cid: chunk }] }]), DAG_CBOR_CODE).cid
    for (let level = 0; level < 8; level++) {
      const side = storeA.putSync(encodeTree([{ ...meta, name: name(`empty-${level}`), type: 'dir', tree: storeA.putSync(encodeTree([]), DAG_CBOR_CODE).cid }]), DAG_CBOR_CODE).cid
      dir = storeA.putSync(encodeTree([{ ...meta, name: name('a'), type: 'dir', tree: dir }, { ...meta, name: name('b'), type: 'dir', tree: side }]), DAG_CBOR_CODE).cid
    }
    const root = dir
    const tree = await loadTree(storeA, root)
    const blocks = treeBlocks(tree)
    const version = cid(0x71)
    const { exB } = await connect(async (v) => v.equals(version) ? makeOffer(version, [chunk], 'all', blocks) : null)

    const fetcher = new VersionFetcher(exB, storeB, version, root, { candidates: () => [a.libp2p.peerId.toString()] })
    await fetcher.prepare()
    // One WANT (the root), and every tree block in b's store.
    assert.equal(exB.messagesSent.want, 1)
    for (const c of blocks) assert.equal(await storeB.has(c), true, `${c.toString()} in b's store`)
    fetcher.start()
    await fetcher.done
    assert.equal(await storeB.has(chunk), true)
    fetcher.stop()
    assert.equal(exB.badBlocks, 0)
  })
})

test('tree blocks sent unasked are kept only when they hash to their CID; a bad one bans its sender', { timeout: 30_000 }, async () => {
  await withTwoNodes(async ({ a, b, storeA, storeB }) => {
    const meta = { mode: 0o755, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: [] }
    const sub = storeA.putSync(encodeTree([]), DAG_CBOR_CODE).cid
    const other = storeA.putSync(encodeTree([{ ...meta, name: new Uint8Array([0x78]), type: 'dir', tree: sub }]), DAG_CBOR_CODE).cid
    const root = storeA.putSync(encodeTree([{ ...meta, name: new Uint8Array([0x73]), type: 'dir', tree: sub }, { ...meta, name: new Uint8Array([0x6f]), type: 'dir', tree: other }]), DAG_CBOR_CODE).cid
    const piece = storeA.putSync(randomBytes(1000)).cid
    // a answers a WANT of the root with the root, then sub (good, unasked), a piece (unasked),
    // and then `other` with its bytes changed.
    await a.libp2p.handle(BLOCKS_PROTOCOL, (stream) => {
      void (async () => {
        try {
          for await (const msg of readMessages(stream)) {
            if (msg.type !== 'want') continue
            const bad = new Uint8Array(await storeA.get(other))
            bad[bad.length - 1] ^= 0xff
            await sendParts(stream, encode({ type: 'block', id: msg.id, blocks: [{ cid: root, bytes: await storeA.get(root) }, { cid: sub, bytes: await storeA.get(sub) }, { cid: piece, bytes: await storeA.get(piece) }] }))
            await sendParts(stream, encode({ type: 'block', id: 0, blocks: [{ cid: other, bytes: bad }] }))
          }
        } catch {}
      })()
    })
    const exB = new BlockExchange(b.libp2p, storeB, async () => null)
    await exB.start()
    try {
      await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
      const A = a.libp2p.peerId.toString()
      let got: Uint8Array | null = null
      exB.expect(root, { resolve: (_p, bytes) => { got = new Uint8Array(bytes) }, reject: () => {} })
      await exB.want(A, [root])
      await until('the ban', () => exB.isBanned(A))
      assert.ok(got !== null, 'the root arrived')
      assert.equal(exB.badBlocks, 1)
      assert.deepEqual(Buffer.from(exB.takePushed(sub) ?? new Uint8Array(0)), Buffer.from(await storeA.get(sub)), 'the good tree block was kept')
      assert.equal(exB.takePushed(piece), undefined, 'a piece sent unasked is not kept')
      assert.equal(exB.takePushed(other), undefined, 'the bad block is not kept')
    } finally {
      await exB.stop()
    }
  })
})
