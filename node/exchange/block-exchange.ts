/**
 * The block exchange (`/imgmesh/blocks/1.0.0`) over long-lived libp2p streams. Each node opens
 * one outbound stream per peer for its own requests (HAVE to ask what a peer holds of a
 * version, WANT for many blocks at once, CANCEL) and serves the peer's requests on the inbound
 * stream the peer opened (HAVE answers and updates, BLOCK, DONT_HAVE). Every received block is
 * hashed against its CID before anyone sees it; a peer that sends a bad one is banned a while.
 */
import type { Connection, Stream } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import { peerIdFromString } from '@libp2p/peer-id'
import type { SwarmLibp2p } from '../swarm/libp2p-node.ts'
import type { BlockStore } from '../store/block-store.ts'
import { matchesCid } from '../store/cid.ts'
import { BLOCKS_PROTOCOL, encode, packBlocks, readMessages, type Block, type BlocksMessage, type HaveSet } from '../../protocols/blocks/messages.ts'
import { sendParts } from '../../protocols/blocks/frame.ts'
import { rememberCids } from '../../protocols/blocks/cid-table.ts'
import { Bitfield } from '../fetch/bitfield.ts'
import type { SuperSeed } from '../fetch/super-seed.ts'
import { HAVE_PACING, haveDue, type HavePacing } from '../fetch/have-pacing.ts'
import { ImgmeshError } from '../errors.ts'
import { RateLimit } from './rate-limit.ts'
import { BlockCache } from './block-cache.ts'
import { PeerPieces } from './peer-pieces.ts'
import { BLOCKS_PROTOCOL_Z, ZSTD_AVAILABLE, BlockInflater, compressBlock, encodeZBlocks, readWireMessages, type ZBlock } from './zblocks.ts'
import { createLogger } from '../logger.ts'
import { mayKeepPushed, PushedBlocks, treeAfterRoot } from './pushed-blocks.ts'

const log = createLogger('exchange')
/** Bytes of block data read and written per turn of a serving stream (one drain wait). */
const FRAME_BYTES = 1024 * 1024
/**
 * Block data per BLOCK message: a receiver uses a message only once all of it arrived, so a
 * turn's blocks go out as messages of about one block each. On a link shared by many streams a
 * 1 MiB message takes seconds to arrive whole, and none of its blocks can be passed on
 * meanwhile (in the simulator: 50 clients 1.48 -> 1.38 T_min, 10 clients 1.15 -> 1.11).
 */
const MESSAGE_BYTES = 64 * 1024
/** Blocks of a turn read from the store at once (each read is one thread-pool job). */
const READS_AT_ONCE = 16
/** Marks a block in the compressed cache that does not compress (sent plain). */
const INCOMPRESSIBLE = new Uint8Array(0)
/**
 * Default memory for verified blocks kept for the deploy and for relaying (see block-cache.ts).
 * 16 MiB: from about 32 MiB held in ArrayBuffers on, V8 ran a full collection every 20–40 MB
 * received (bench: 6–8 instead of 2 per 256 MiB fetched, receiver 10–15% more CPU); at 16 MiB
 * a deploy costs the same CPU as with no cache at all, a 64 MiB one 15–20% more.
 */
const CACHE_BYTES = 16 * 1024 * 1024
/**
 * The compressed-block cache (what is relayed to peers taking compressed blocks) gets twice the
 * block cache's budget. Deploy's writer takes most blocks as they arrive, so the raw cache
 * serves a short window; relays come as late as peers ask, and with 50 clients on the testbed
 * that was past 16 MiB of compressed blocks often enough that a client spent 0.1 CPU-s reading
 * frames back from its store and checking them. At 32 MiB: N=50 9.29 and 8.78 T_min against
 * 9.43 and 9.48, client CPU 3.5 and 3.2 s against 3.7 and 3.6 (docs/benchmarks.md).
 */
const ZCACHE_SHARE = 2
/**
 * How often a served peer hears about pieces we got since the last HAVE. One timer serves every
 * served peer, and a peer whose view of a version did not change since the last turn costs no
 * scan (with a timer and a scan per served peer, the HAVE updates took 2.3% of all CPU in a
 * 50-client testbed deploy).
 */
const HAVE_UPDATE_MS = 100

/** What this node offers of one version: its piece list and which pieces it holds. */
export interface Offer {
  version: CID
  pieces: CID[]
  index: Map<string, number>
  /** Complete, or the live bitfield of a download in progress. */
  have: 'all' | Bitfield
  /** Set while this node is the first holder of a brand-new version. */
  superSeed?: SuperSeed
  /** The version's tree blocks, root first, when known: sent whole to a peer that asks for the root. */
  tree?: CID[]
}

/**
 * The offer of a version's pieces, indexed by CID. The pieces' CIDs go into the wire's CID table
 * too: every WANT, BLOCK and CANCEL of this version then names instances already decoded.
 */
export function makeOffer (version: CID, pieces: CID[], have: 'all' | Bitfield, tree?: CID[]): Offer {
  const index = new Map<string, number>()
  for (let i = 0; i < pieces.length; i++) index.set(pieces[i].toString(), i)
  rememberCids(pieces)
  return tree === undefined ? { version, pieces, index, have } : { version, pieces, index, have, tree }
}

export interface HaveEvent { peer: string, version: CID, pieceCount: number, have: HaveSet }

/** Resolves an offer for a version on demand (null: we hold nothing of it). */
export type OfferSource = (version: CID) => Promise<Offer | null>

/**
 * What to do when a requested block arrives or is refused. resolve gets the bytes, already checked
 * against the CID, lent for the call only (a decompressed block lies in a buffer the next block
 * reuses): a waiter that keeps them past the call copies them. A block that came compressed
 * comes with its zstd frame too (also lent), which the store may keep instead of the bytes.
 */
interface Waiter { resolve: (peer: string, bytes: Uint8Array, frame?: Uint8Array) => void, reject: (peer: string, missing: boolean) => void }

export interface PeerTraffic { sent: number, received: number, blocksSent: number, blocksReceived: number }

function countMessage (counts: Record<string, number>, type: string): void {
  counts[type] = (counts[type] ?? 0) + 1
}

class ClientSession {
  readonly peer: string
  readonly stream: Stream
  private nextId = 1
  closed = false
  private readonly counts: Record<string, number>

  constructor (peer: string, stream: Stream, counts: Record<string, number>) { this.peer = peer; this.stream = stream; this.counts = counts }

  async send (msg: BlocksMessage): Promise<void> {
    if (this.closed) throw new ImgmeshError('EPROTOCOL', `session with ${this.peer} is closed`)
    countMessage(this.counts, msg.type)
    await sendParts(this.stream, encode(msg))
  }

  id (): number { this.nextId = (this.nextId + 1) % 0xffff_fff0; return this.nextId }
}

function * offersOf (watching: Map<string, { offer: Offer }>): Iterable<Offer> {
  for (const w of watching.values()) yield w.offer
}

/** Whether an offer is super-seeded now (it shows each peer a few unsent pieces). */
function seeding (offer: Offer): boolean {
  return offer.superSeed !== undefined && !offer.superSeed.finished
}

function seedingAny (watching: Map<string, { offer: Offer }>): boolean {
  for (const { offer } of watching.values()) if (seeding(offer)) return true
  return false
}

export class BlockExchange {
  readonly libp2p: SwarmLibp2p
  readonly store: BlockStore
  private readonly offerSource: OfferSource
  private readonly sessions = new Map<string, Promise<ClientSession>>()
  private readonly waiters = new Map<string, Waiter>()
  private readonly haveListeners = new Map<string, Set<(e: HaveEvent) => void>>()
  private readonly banned = new Map<string, number>()
  private readonly servedStreams = new Set<Stream>()
  /** Per served peer: sends the HAVEs its peer has not heard yet; run together every HAVE_UPDATE_MS. */
  private readonly haveFlushers = new Set<() => void>()
  /** When HAVE news to a peer may wait (have-pacing.ts). */
  private readonly havePacing: Readonly<HavePacing>
  private haveTimer: NodeJS.Timeout | undefined
  /** Per version: served peers that asked while we had nothing of it (told when we have an offer). */
  private readonly interested = new Map<string, Set<(version: CID) => void>>()
  readonly traffic = new Map<string, PeerTraffic>()
  /** What peers told us they hold, left out of the HAVEs we send them. */
  private readonly peerPieces = new PeerPieces()
  /** Tree blocks sent with their root before we asked for them. */
  private readonly pushed = new PushedBlocks()
  /** Listeners told when a peer is gone (disconnected or banned). */
  readonly peerGone = new Set<(peer: string) => void>()
  bytesSent = 0
  bytesReceived = 0
  blocksServed = 0
  blocksFetched = 0
  badBlocks = 0
  private started = false
  private readonly uploadLimit: RateLimit | null
  /** Verified blocks that just arrived, for the deploy and for the peers they are relayed to. */
  readonly cache: BlockCache
  /** Blocks as zstd frames (as received, or compressed once here), relayed as they are. */
  readonly zcache: BlockCache
  /** Decompresses the blocks received, one buffer reused for all. */
  private readonly inflater = new BlockInflater()
  /**
   * Whether blocks travel compressed (zblocks.ts): we ask for it and send it to peers that ask.
   * On by default where this Node has zstd; IMGMESH_WIRE_COMPRESSION=off turns it off.
   */
  readonly compress: boolean
  /** Bytes of block data that went out / came in on the wire (compressed or not). */
  wireSent = 0
  wireReceived = 0
  /** Blocks compressed here to be served (not found in zcache). */
  blocksCompressed = 0
  /** Messages sent and received, by type (for logs and benchmarks). */
  readonly messagesSent: Record<string, number> = {}
  readonly messagesReceived: Record<string, number> = {}

  constructor (libp2p: SwarmLibp2p, store: BlockStore, offerSource: OfferSource, opts: { uploadBytesPerSecond?: number, cacheBytes?: number, compress?: boolean, havePacing?: Readonly<HavePacing> } = {}) {
    this.libp2p = libp2p
    this.store = store
    this.offerSource = offerSource
    const envCache = Number(process.env.IMGMESH_BLOCK_CACHE_MB)
    this.cache = new BlockCache(opts.cacheBytes ?? (Number.isFinite(envCache) && envCache >= 0 ? envCache * 1024 * 1024 : CACHE_BYTES))
    this.zcache = new BlockCache(this.cache.maxBytes * ZCACHE_SHARE)
    this.compress = opts.compress ?? (ZSTD_AVAILABLE && process.env.IMGMESH_WIRE_COMPRESSION !== 'off')
    this.uploadLimit = opts.uploadBytesPerSecond === undefined || opts.uploadBytesPerSecond <= 0 ? null : new RateLimit(opts.uploadBytesPerSecond)
    this.havePacing = opts.havePacing ?? HAVE_PACING
  }

  async start (): Promise<void> {
    await this.libp2p.handle([BLOCKS_PROTOCOL_Z, BLOCKS_PROTOCOL], (stream, connection) => { void this.serve(stream, connection) }, { maxInboundStreams: 8, maxOutboundStreams: 8 })
    this.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.libp2p.addEventListener('peer:connect', this.onConnect)
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    this.libp2p.removeEventListener('peer:connect', this.onConnect)
    await this.libp2p.unhandle([BLOCKS_PROTOCOL_Z, BLOCKS_PROTOCOL]).catch(() => {})
    for (const s of this.servedStreams) s.abort(new Error('stopping'))
    for (const p of this.sessions.values()) void p.then(s => { s.closed = true; s.stream.abort(new Error('stopping')) }).catch(() => {})
    this.sessions.clear()
  }

  private readonly onDisconnect = (evt: CustomEvent<{ toString: () => string }>): void => {
    this.dropPeer(evt.detail.toString())
  }

  /** A banned peer that comes back (it dialled us, or a bootstrap redial did) is hung up on. */
  private readonly onConnect = (evt: CustomEvent<{ toString: () => string }>): void => {
    const peer = evt.detail.toString()
    if (this.isBanned(peer)) void this.libp2p.hangUp(peerIdFromString(peer)).catch(() => {})
  }

  bannedPeers (): string[] {
    return [...this.banned.keys()].filter(p => this.isBanned(p))
  }

  private dropPeer (peer: string): void {
    const s = this.sessions.get(peer)
    this.sessions.delete(peer)
    if (s !== undefined) void s.then(x => { x.closed = true }).catch(() => {})
    this.peerPieces.forget(peer)
    for (const fn of this.peerGone) fn(peer)
  }

  isBanned (peer: string): boolean {
    const until = this.banned.get(peer)
    if (until === undefined) return false
    if (Date.now() > until) { this.banned.delete(peer); return false }
    return true
  }

  /** Drops a peer that sent a corrupt block, and refuses it for a while. */
  ban (peer: string, why: string, ms = 10 * 60_000): void {
    log.warn('banning peer', { peer, why, minutes: ms / 60_000 })
    this.banned.set(peer, Date.now() + ms)
    this.dropPeer(peer)
    void this.libp2p.hangUp(peerIdFromString(peer)).catch(() => {})
  }

  private count (peer: string): PeerTraffic {
    let t = this.traffic.get(peer)
    if (t === undefined) { t = { sent: 0, received: 0, blocksSent: 0, blocksReceived: 0 }; this.traffic.set(peer, t) }
    return t
  }

  // ---------------------------------------------------------------- client side (our requests)

  onHave (version: CID, fn: (e: HaveEvent) => void): () => void {
    const key = version.toString()
    let set = this.haveListeners.get(key)
    if (set === undefined) { set = new Set(); this.haveListeners.set(key, set) }
    set.add(fn)
    return () => { set.delete(fn); if (set.size === 0) this.haveListeners.delete(key) }
  }

  private async session (peer: string): Promise<ClientSession> {
    if (this.isBanned(peer)) throw new ImgmeshError('EPROTOCOL', `peer ${peer} is banned`)
    let s = this.sessions.get(peer)
    if (s === undefined) {
      s = this.open(peer)
      this.sessions.set(peer, s)
      s.catch(() => { if (this.sessions.get(peer) === s) this.sessions.delete(peer) })
    }
    const session = await s
    if (session.closed) { this.sessions.delete(peer); return await this.session(peer) }
    return session
  }

  private async open (peer: string): Promise<ClientSession> {
    const protocols = this.compress ? [BLOCKS_PROTOCOL_Z, BLOCKS_PROTOCOL] : [BLOCKS_PROTOCOL]
    const stream = await this.libp2p.dialProtocol(peerIdFromString(peer), protocols, { signal: AbortSignal.timeout(10_000) })
    const session = new ClientSession(peer, stream, this.messagesSent)
    void this.readClient(session)
    return session
  }

  private async readClient (session: ClientSession): Promise<void> {
    const { peer } = session
    const traffic = this.count(peer)
    try {
      for await (const msg of readWireMessages(session.stream)) {
        countMessage(this.messagesReceived, msg.type)
        if (msg.type === 'have') {
          const key = msg.version.toString()
          this.peerPieces.note(peer, key, msg.pieceCount, msg.have)
          for (const fn of this.haveListeners.get(key) ?? []) fn({ peer, version: msg.version, pieceCount: msg.pieceCount, have: msg.have })
        } else if (msg.type === 'block' || msg.type === 'zblock') {
          const compressed = msg.type === 'zblock'
          for (let k = 0; k < msg.blocks.length; k++) {
            const cid = msg.blocks[k].cid
            const wire = msg.type === 'zblock' ? msg.blocks[k].z : msg.blocks[k].bytes
            traffic.received += wire.length
            this.bytesReceived += wire.length
            this.wireReceived += wire.length
            const key = cid.toString()
            const waiter = this.waiters.get(key)
            // Only what someone waits for is decompressed, and tree blocks sent with their root.
            if (waiter === undefined && !mayKeepPushed(cid, wire.length)) continue
            const bytes = this.checked(peer, cid, wire, compressed, waiter)
            if (bytes === null) return
            traffic.blocksReceived++
            this.blocksFetched++
            // Kept for the tree loader (the bytes may lie in the inflater's buffer: copied).
            if (waiter === undefined) { this.pushed.put(key, bytes.slice()); continue }
            if (compressed) this.zcache.put(key, wire)
            waiter.resolve(peer, bytes, compressed ? wire : undefined)
          }
        } else if (msg.type === 'dont-have') {
          for (const c of msg.cids) this.waiters.get(c.toString())?.reject(peer, true)
        }
      }
    } catch (err) {
      log.debug('client stream ended', { peer, error: (err as Error).message })
    } finally {
      session.closed = true
      if (this.sessions.has(peer)) this.dropPeer(peer)
    }
  }

  /**
   * A received block's bytes, decompressed if it came compressed and checked against its CID;
   * null when bad: its waiter (if any) is told, the sender banned.
   */
  private checked (peer: string, cid: CID, wire: Uint8Array, compressed: boolean, waiter: Waiter | undefined): Uint8Array | null {
    let bytes = wire
    if (compressed) {
      try { bytes = this.inflater.inflate(wire) } catch { return this.refuse(peer, waiter, 'sent compressed blocks that do not decompress') }
    }
    if (!matchesCid(cid, bytes)) return this.refuse(peer, waiter, `sent a block that does not hash to ${cid.toString()}`)
    return bytes
  }

  private refuse (peer: string, waiter: Waiter | undefined, why: string): null {
    waiter?.reject(peer, false)
    this.badBlocks++
    this.ban(peer, why)
    return null
  }

  /** A tree block a peer sent before we asked for it (checked against its CID), once. */
  takePushed (cid: CID): Uint8Array | undefined { return this.pushed.take(cid.toString()) }

  /** Asks a peer what it holds of a version (the answer arrives through onHave). */
  async askHave (peer: string, version: CID, pieceCount: number, mine: HaveSet): Promise<void> {
    const s = await this.session(peer)
    await s.send({ type: 'have', version, pieceCount, have: mine })
  }

  /**
   * Registers what to do when a block arrives or is refused. One waiter per CID: requests of the
   * same block from several peers (endgame) share it.
   */
  expect (cid: CID, waiter: Waiter): void { this.waiters.set(cid.toString(), waiter) }
  unexpect (cid: CID): void { this.waiters.delete(cid.toString()) }

  async want (peer: string, cids: CID[]): Promise<void> {
    if (cids.length === 0) return
    const s = await this.session(peer)
    await s.send({ type: 'want', id: s.id(), cids })
  }

  async cancel (peer: string, cids: CID[]): Promise<void> {
    if (cids.length === 0) return
    const s = this.sessions.get(peer)
    if (s === undefined) return
    try { await (await s).send({ type: 'cancel', cids }) } catch {}
  }

  /** Fetches one block from the first of peers that has it (tree blocks, outside any piece list). */
  async fetchOne (cid: CID, peers: string[], timeoutMs = 10_000): Promise<Uint8Array> {
    const key = cid.toString()
    for (const peer of peers) {
      if (this.isBanned(peer)) continue
      const got = await new Promise<Uint8Array | null>((resolve) => {
        const timer = setTimeout(() => { done(null) }, timeoutMs)
        const done = (v: Uint8Array | null): void => { clearTimeout(timer); if (this.waiters.get(key) === waiter) this.waiters.delete(key); resolve(v) }
        const waiter: Waiter = { resolve: (_p, bytes) => { done(new Uint8Array(bytes)) }, reject: (p) => { if (p === peer) done(null) } }
        this.waiters.set(key, waiter)
        this.want(peer, [cid]).catch(() => { done(null) })
      })
      if (got !== null) {
        // readClient checked it against its CID
        await this.store.putTrusted(cid, got)
        return got
      }
    }
    throw new ImgmeshError('ENOBLOCK', `no peer could send block ${key} (asked ${peers.length})`)
  }

  /**
   * We have a new offer of this version (a fetch has its piece list): peers that asked about it
   * while we had nothing get our HAVE now, and peers told of an earlier offer of it (what the
   * store held of an interrupted fetch) are moved to this one; all are kept up to date from then
   * on.
   */
  offerReady (version: CID): void {
    const set = this.interested.get(version.toString())
    if (set === undefined) return
    for (const fn of [...set]) fn(version)
  }

  /** How many served peers asked about this version (peers fetching it too, or holding it). */
  peersAsking (version: CID): number {
    return this.interested.get(version.toString())?.size ?? 0
  }

  // ---------------------------------------------------------------- server side (their requests)

  private addHaveFlusher (flush: () => void): void {
    this.haveFlushers.add(flush)
    if (this.haveTimer !== undefined) return
    this.haveTimer = setInterval(() => { for (const f of this.haveFlushers) { try { f() } catch (err) { log.debug('HAVE update failed', { error: (err as Error).message }) } } }, HAVE_UPDATE_MS)
    this.haveTimer.unref()
  }

  private removeHaveFlusher (flush: () => void): void {
    this.haveFlushers.delete(flush)
    if (this.haveFlushers.size > 0 || this.haveTimer === undefined) return
    clearInterval(this.haveTimer)
    this.haveTimer = undefined
  }

  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    if (this.isBanned(peer)) { stream.abort(new Error('banned')); return }
    this.servedStreams.add(stream)
    const traffic = this.count(peer)
    const queue: CID[] = []
    const cancelled = new Set<string>()
    /**
     * Per version: the offer, what this peer was told of it (a copy, or all), which bitfield (and
     * at which of its changes) the last HAVE turn looked at, and since when news has waited.
     */
    const watching = new Map<string, { offer: Offer, told: Bitfield | null, toldAll: boolean, seen?: Bitfield, seenChanges?: number, waitingSince?: number }>()
    /** Roots of the trees this peer was sent whole. */
    const treesSent = new Set<string>()
    const waker: { wake: (() => void) | null } = { wake: null }
    let ended = false
    const send = async (msg: BlocksMessage): Promise<void> => { countMessage(this.messagesSent, msg.type); await sendParts(stream, encode(msg)) }
    /** What we hold of an offer for this peer now: all, or a bitfield (a super-seeded offer shows a few unsent pieces). */
    const current = (offer: Offer): Bitfield | 'all' => {
      if (offer.superSeed !== undefined && !offer.superSeed.finished) return offer.superSeed.offer(peer)
      if (offer.have === 'all' || offer.have.complete) return 'all'
      return offer.have
    }
    const tell = async (key: string, offer: Offer): Promise<void> => {
      const cur = current(offer)
      if (cur === 'all') {
        watching.set(key, { offer, told: null, toldAll: true })
        await send({ type: 'have', version: offer.version, pieceCount: offer.pieces.length, have: { kind: 'all' } })
        return
      }
      watching.set(key, { offer, told: new Bitfield(cur.size, cur.bytes), toldAll: false })
      await send({ type: 'have', version: offer.version, pieceCount: offer.pieces.length, have: { kind: 'bitmap', bitmap: cur.bytes.slice() } })
    }
    // Tell watchers what changed since the last HAVE: the pieces we got, or the growth of a
    // super-seeded offer, as a list of indexes (a bitmap when that is shorter, `all` at the end).
    // Pieces the peer told us it holds are left out (peer-pieces.ts); a peer holding everything
    // hears nothing more. News of pieces we got waits while the peer can already ask us for
    // enough (have-pacing.ts); a super-seeded offer's growth goes out at once.
    const flushHave = (): void => {
      const now = Date.now()
      for (const [key, w] of watching) {
        if (w.toldAll || w.told === null) continue
        const pieceCount = w.offer.pieces.length
        if (this.peerPieces.hasAll(peer, key)) continue
        const cur = current(w.offer)
        if (cur === 'all') {
          w.toldAll = true
          w.told = null
          send({ type: 'have', version: w.offer.version, pieceCount, have: { kind: 'all' } }).catch(() => {})
          continue
        }
        // Nothing set or cleared since the last turn that looked: the scan would find nothing new.
        if (w.seen === cur && w.seenChanges === cur.changes) continue
        const told = w.told
        const news: number[] = []
        const fresh: number[] = []
        const a = cur.bytes
        const b = told.bytes
        for (let k = 0; k < a.length; k++) {
          const d = a[k] & ~b[k]
          if (d === 0) continue
          for (let bit = 0; bit < 8; bit++) {
            if ((d & (0x80 >> bit)) === 0) continue
            const i = k * 8 + bit
            news.push(i)
            if (!this.peerPieces.has(peer, key, pieceCount, i)) fresh.push(i)
          }
        }
        if (fresh.length > 0 && !seeding(w.offer)) {
          w.waitingSince ??= now
          if (!haveDue(fresh.length, this.peerPieces.countLacking(peer, key, told), now - w.waitingSince, this.havePacing)) continue
        }
        for (const i of news) told.set(i)
        w.seen = cur
        w.seenChanges = cur.changes
        w.waitingSince = undefined
        if (fresh.length === 0) continue
        const have = fresh.length * 2 > a.length ? { kind: 'bitmap' as const, bitmap: told.bytes.slice() } : { kind: 'indexes' as const, indexes: fresh }
        send({ type: 'have', version: w.offer.version, pieceCount, have }).catch(() => {})
      }
    }
    // Versions this peer asked about: answered when an offer appears (we had nothing), or told
    // again when the offer is replaced (a fetch began where the store held part of the version).
    const asked = new Set<string>()
    const onOffer = (version: CID): void => {
      const key = version.toString()
      if (ended || !asked.has(key)) return
      void this.offerSource(version).then(async (offer) => {
        if (offer === null || ended || watching.get(key)?.offer === offer) return
        await tell(key, offer)
      }).catch(() => {})
    }
    const listen = (key: string): void => {
      if (asked.has(key)) return
      asked.add(key)
      let set = this.interested.get(key)
      if (set === undefined) { set = new Set(); this.interested.set(key, set) }
      set.add(onOffer)
    }
    this.addHaveFlusher(flushHave)
    const zStream = this.compress && stream.protocol === BLOCKS_PROTOCOL_Z

    /** The block to send for a request: compressed or plain, or null when we do not have it. */
    const load = async (cid: CID, key: string): Promise<{ z: Uint8Array } | { bytes: Uint8Array } | null> => {
      try {
        if (zStream) {
          let z = this.zcache.get(key)
          if (z === undefined) {
            z = await this.storedFrame(cid, key)
            if (z === undefined) {
              z = (await compressBlock(await this.rawBlock(cid, key))) ?? INCOMPRESSIBLE
              this.blocksCompressed++
            }
            this.zcache.put(key, z)
          }
          if (z.length > 0) return { z }
        }
        return { bytes: await this.rawBlock(cid, key) }
      } catch {
        return null
      }
    }
    // The previous turn's wait for the stream to drain: the next turn reads its blocks meanwhile.
    let draining: Promise<void> = Promise.resolve()
    const worker = async (): Promise<void> => {
      while (!ended) {
        if (queue.length === 0) {
          await draining
          if (queue.length === 0 && !ended) { await new Promise<void>(resolve => { waker.wake = resolve }); waker.wake = null }
          continue
        }
        const batch: Block[] = []
        const zbatch: ZBlock[] = []
        const missing: CID[] = []
        let bytes = 0
        while (queue.length > 0 && bytes < FRAME_BYTES) {
          // A few blocks at a time, read at once (the thread pool reads them in parallel).
          const group: Array<[CID, string]> = []
          while (queue.length > 0 && group.length < READS_AT_ONCE) {
            const cid = queue.shift()!
            const key = cid.toString()
            if (cancelled.delete(key)) continue
            if (!this.allowedBySuperSeed(peer, key, watching)) { missing.push(cid); continue }
            group.push([cid, key])
          }
          const loaded = await Promise.all(group.map(async ([cid, key]) => await load(cid, key)))
          for (let k = 0; k < group.length; k++) {
            const b = loaded[k]
            const cid = group[k][0]
            if (b === null) missing.push(cid)
            else if ('z' in b) { zbatch.push({ cid, z: b.z }); bytes += b.z.length } else { batch.push({ cid, bytes: b.bytes }); bytes += b.bytes.length }
          }
        }
        await draining
        if (missing.length > 0) await send({ type: 'dont-have', id: 0, cids: missing })
        const sent = (cid: CID, n: number): void => {
          traffic.sent += n
          traffic.blocksSent++
          this.bytesSent += n
          this.wireSent += n
          this.blocksServed++
          this.noteSent(peer, cid.toString(), watching)
        }
        // The turn's messages are written together and drained once.
        const parts: Uint8Array[] = []
        let turnBytes = 0
        for (const group of groupBySize(zbatch, b => b.z.length, MESSAGE_BYTES)) {
          countMessage(this.messagesSent, 'zblock')
          parts.push(...encodeZBlocks({ type: 'zblock', id: 0, blocks: group }))
          for (const b of group) turnBytes += b.z.length
        }
        for (const msg of packBlocks(batch, 0, MESSAGE_BYTES)) {
          countMessage(this.messagesSent, msg.type)
          parts.push(...encode(msg))
          for (const b of msg.blocks) turnBytes += b.bytes.length
        }
        if (parts.length > 0) {
          if (this.uploadLimit !== null) await this.uploadLimit.take(turnBytes)
          const out = sendParts(stream, parts)
          for (const b of zbatch) sent(b.cid, b.z.length)
          for (const b of batch) sent(b.cid, b.bytes.length)
          draining = out
          // a failed drain ends the worker at the next turn's await, as before
          out.catch(() => {})
        }
        // A super-seeded offer grew as its pieces went out: say so now, not at the next tick.
        if (seedingAny(watching)) flushHave()
      }
      await draining
    }
    const working = worker().catch((err: unknown) => { log.debug('serving stopped', { peer, error: (err as Error).message }) })
    try {
      for await (const msg of readMessages(stream)) {
        countMessage(this.messagesReceived, msg.type)
        if (msg.type === 'have') {
          const key = msg.version.toString()
          // The asker's HAVE says what it holds now.
          this.peerPieces.note(peer, key, msg.pieceCount, msg.have, true)
          const offer = await this.offerSource(msg.version)
          listen(key)
          if (offer === null) {
            await send({ type: 'have', version: msg.version, pieceCount: msg.pieceCount, have: { kind: 'indexes', indexes: [] } })
            continue
          }
          await tell(key, offer)
        } else if (msg.type === 'want') {
          for (const c of msg.cids) {
            cancelled.delete(c.toString())
            queue.push(c)
            // The root of a tree we offer: the rest of the tree follows it unasked.
            for (const t of treeAfterRoot(c, offersOf(watching), treesSent)) queue.push(t)
          }
          waker.wake?.()
        } else if (msg.type === 'cancel') {
          for (const c of msg.cids) cancelled.add(c.toString())
        }
      }
    } catch (err) {
      log.debug('peer stream failed', { peer, error: (err as Error).message })
    } finally {
      ended = true
      this.removeHaveFlusher(flushHave)
      for (const key of asked) {
        const set = this.interested.get(key)
        set?.delete(onOffer)
        if (set?.size === 0) this.interested.delete(key)
      }
      waker.wake?.()
      await working
      this.servedStreams.delete(stream)
      stream.abort(new Error('closed'))
    }
  }

  /**
   * For a block not in memory that the store keeps as its zstd frame (it came compressed): the
   * frame, checked by the store (it decompresses to the block), so it is sent without
   * compressing it again; the block goes to the block cache. Undefined otherwise.
   */
  private async storedFrame (cid: CID, key: string): Promise<Uint8Array | undefined> {
    if (this.cache.has(key)) return undefined
    const { bytes, frame } = await this.store.getWithFrame(cid)
    this.cache.put(key, bytes)
    return frame
  }

  /** A verified block for serving: from memory if it just came or went, else from the store. */
  private async rawBlock (cid: CID, key: string): Promise<Uint8Array> {
    let data = this.cache.get(key)
    if (data === undefined) {
      data = await this.store.get(cid)
      this.cache.put(key, data)
    }
    return data
  }

  private allowedBySuperSeed (peer: string, key: string, watching: Map<string, { offer: Offer }>): boolean {
    for (const { offer } of watching.values()) {
      if (offer.superSeed === undefined || offer.superSeed.finished) continue
      const i = offer.index.get(key)
      if (i !== undefined && !offer.superSeed.allowed(peer, i)) return false
    }
    return true
  }

  private noteSent (peer: string, key: string, watching: Map<string, { offer: Offer }>): void {
    for (const { offer } of watching.values()) {
      if (offer.superSeed === undefined) continue
      const i = offer.index.get(key)
      if (i !== undefined) offer.superSeed.sent(peer, i)
    }
  }
}

/** Consecutive groups of items whose sizes add up to at most max (an item larger than max alone). */
function groupBySize<T> (items: T[], size: (item: T) => number, max: number): T[][] {
  const groups: T[][] = []
  let cur: T[] = []
  let bytes = 0
  for (const item of items) {
    const n = size(item)
    if (cur.length > 0 && bytes + n > max) { groups.push(cur); cur = []; bytes = 0 }
    cur.push(item)
    bytes += n
  }
  if (cur.length > 0) groups.push(cur)
  return groups
}
