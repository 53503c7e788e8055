/**
 * Fetches one version from the swarm: its tree blocks first, then its pieces (the unique content
 * chunks) from every peer that has them, many at once, rarest first, with an endgame. While it
 * runs it is also an offer: the pieces it has verified are served to others at once. As a
 * BlockGetter it hands deploy each chunk as soon as it is here, so writing overlaps fetching.
 */
import type { CID } from 'multiformats/cid'
import type { BlockGetter, BlockStore } from '../store/block-store.ts'
import { makeOffer, type BlockExchange, type HaveEvent, type Offer } from './block-exchange.ts'
import { Bitfield } from '../fetch/bitfield.ts'
import { PieceScheduler } from '../fetch/piece-scheduler.ts'
import { PeerRates, DEFAULT_MAX_IN_FLIGHT } from '../fetch/peer-rates.ts'
import { loadTree, pieceList, treeBlocks, type DirNode } from '../tree/tree-loader.ts'
import { ImgmeshError } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('fetch')
const REQUEST_TIMEOUT_MS = 20_000
/** A tree block asked of a holder that has not come in this time is asked of another holder. */
const TREE_REQUEST_TIMEOUT_MS = 5000
/** With no peer known to hold the tree after this long, tree blocks are asked of every candidate in turn. */
const TREE_HOLDER_WAIT_MS = 2000
/** Tree blocks requested at once (the loader walks the tree breadth first). */
const TREE_CONCURRENCY = 256

/**
 * One tree block wanted. `tried`: peers asked in this round (a timeout or a DONT_HAVE moves the
 * request on to another); once every peer was tried, a new round asks them all again, since a
 * peer that was only slow (a busy machine) may answer next time.
 */
interface TreeRequest { cid: CID, resolve: (b: Uint8Array) => void, reject: (e: Error) => void, tried: Set<string>, peer: string | null, at: number, rounds: number }
/** What a peer said it holds before the piece list was known (HAVE answers that came during prepare()). */
interface EarlyHave { pieceCount: number, all: boolean, bits: Bitfield | null }

export interface FetchProgress {
  version: string
  pieces: number
  have: number
  bytes: number
  totalBytes: number
  peers: number
  /** Bytes per second over the last few seconds. */
  rate: number
  done: boolean
  /** Which pieces are here: the bitfield (bit 7 of byte 0 is piece 0), base64. */
  bitmap?: string
}

export interface FetcherOptions {
  /** Peers worth asking (connected peers, DHT providers); called again as peers come and go. */
  candidates: () => string[]
  maxInFlight?: number
  /**
   * Requests in flight per peer follow its measured rate: enough for this many ms of its data
   * (default 600), between 2 and maxInFlight. 0 keeps maxInFlight for every peer.
   */
  inFlightTargetMs?: number
  /** Give up when nothing arrives for this long while pieces are missing (default 120 s). */
  stallMs?: number
  /** Trees in memory whose directories the version may share (other versions of the image). */
  reuse?: readonly DirNode[]
}

export class VersionFetcher implements BlockGetter {
  readonly version: CID
  readonly treeCid: CID
  private readonly exchange: BlockExchange
  private readonly store: BlockStore
  private readonly opts: FetcherOptions
  tree: DirNode | null = null
  offer: Offer | null = null
  private scheduler: PieceScheduler | null = null
  private sizes: number[] = []
  private readonly asked = new Set<string>()
  private readonly pieceWaiters = new Map<number, Array<{ arrived: (b: Uint8Array) => void, failed: (e: Error) => void }>>()
  private readonly arrivalListeners = new Set<(cid: CID) => void>()
  private readonly requestedAt = new Map<string, number>()
  private readonly cleanups: Array<() => void> = []
  private timer: NodeJS.Timeout | undefined
  private finish!: { resolve: () => void, reject: (e: Error) => void }
  readonly done: Promise<void>
  private failure: Error | null = null
  private ended = false
  private lastProgress = Date.now()
  private samples: Array<[number, number]> = []
  bytes = 0
  totalBytes = 0
  private pumping = false
  private pumpQueued = false
  private pumpAll = false
  private readonly pumpPeers = new Set<string>()
  private startedAt = Date.now()
  /** Peers that answered HAVE with an offer of this version: they hold its whole tree. */
  private readonly holders = new Set<string>()
  /** Called (once each) when the first holder answers or the fetch ends: see noHolderWithin. */
  private readonly holderWaiters = new Set<() => void>()
  private readonly early = new Map<string, EarlyHave>()
  private readonly treeQueue: TreeRequest[] = []
  private readonly treePending = new Map<string, TreeRequest>()
  private treeFlushQueued = false
  private treeTimer: NodeJS.Timeout | undefined
  private treeSince = 0
  /** When a tree block last arrived (or the tree fetch began): no tree block for stallMs fails it. */
  private treeProgress = 0
  private rates: PeerRates | null = null
  private lastLog = 0

  constructor (exchange: BlockExchange, store: BlockStore, version: CID, tree: CID, opts: FetcherOptions) {
    this.exchange = exchange
    this.store = store
    this.version = version
    this.treeCid = tree
    this.opts = opts
    this.done = new Promise<void>((resolve, reject) => { this.finish = { resolve, reject } })
    this.done.catch(() => {})
  }

  /**
   * Loads the tree (from the store, or from peers) and works out which pieces are missing.
   * Every candidate is asked at once what it holds of the version; those that answer with an
   * offer hold its whole tree, and tree blocks are asked of them, in batches, spread over them
   * (not of every connected peer in turn). Their answers are kept for the scheduler.
   */
  async prepare (): Promise<void> {
    const started = Date.now()
    this.cleanups.push(this.exchange.onHave(this.version, (e) => { this.onHave(e) }))
    this.probe()
    const treeGetter: BlockGetter = {
      get: async (cid) => {
        if (await this.store.has(cid)) return await this.store.get(cid)
        return await this.treeBlock(cid)
      }
    }
    try {
      this.tree = await loadTree(treeGetter, this.treeCid, { concurrency: TREE_CONCURRENCY, reuse: this.opts.reuse })
      // A directory taken from memory must be in the store too (it is served, and deploys and
      // verify read it there); one collected meanwhile by a gc in another process is fetched.
      if ((this.opts.reuse?.length ?? 0) > 0 && !(await this.store.hasAll(treeBlocks(this.tree)))) {
        this.tree = await loadTree(treeGetter, this.treeCid, { concurrency: TREE_CONCURRENCY })
      }
    } catch (err) {
      this.cleanup()
      throw err
    } finally {
      this.stopTreeFetch()
    }
    const pieces = pieceList(this.tree)
    const have = new Bitfield(pieces.length)
    this.sizes = pieces.map(p => p.length)
    const held = this.store.heldOf(pieces.map(p => p.cid))
    for (let i = 0; i < pieces.length; i++) {
      this.totalBytes += pieces[i].length
      if (held[i]) { have.set(i); this.bytes += pieces[i].length }
    }
    const maxInFlight = this.opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT
    this.scheduler = new PieceScheduler(pieces.length, have, { maxInFlight })
    if (this.opts.inFlightTargetMs !== 0) this.rates = new PeerRates(this.totalBytes / Math.max(1, pieces.length), { targetMs: this.opts.inFlightTargetMs ?? 600, max: maxInFlight })
    this.offer = makeOffer(this.version, pieces.map(p => p.cid), have, treeBlocks(this.tree))
    this.startedAt = Date.now()
    log.info('tree loaded', { version: this.version.toString(), ms: this.startedAt - started, pieces: pieces.length, have: have.cardinality, holders: this.holders.size })
    // Peers that asked us about this version before we had anything now hear that we do.
    this.exchange.offerReady(this.version)
  }

  /** Asks every candidate not asked yet what it holds (before the piece list is known: count 0). */
  private probe (): void {
    for (const peer of this.opts.candidates()) {
      if (this.asked.has(peer) || this.exchange.isBanned(peer)) continue
      this.asked.add(peer)
      this.exchange.askHave(peer, this.version, 0, { kind: 'bitmap', bitmap: new Uint8Array(0) })
        .catch((err: unknown) => { this.asked.delete(peer); log.debug('could not ask peer', { peer, error: (err as Error).message }) })
    }
  }

  // ------------------------------------------------------------------ tree blocks

  /**
   * A tree block sent with the tree's root before we asked for it (checked against its CID on
   * arrival), being stored; undefined when none came.
   */
  private usePushed (cid: CID): Promise<Uint8Array> | undefined {
    const pushed = this.exchange.takePushed(cid)
    if (pushed === undefined) return undefined
    this.treeProgress = Date.now()
    return this.store.putTrusted(cid, pushed).then(() => pushed)
  }

  private async treeBlock (cid: CID): Promise<Uint8Array> {
    const pushed = this.usePushed(cid)
    if (pushed !== undefined) return await pushed
    return await new Promise<Uint8Array>((resolve, reject) => {
      this.treeQueue.push({ cid, resolve, reject, tried: new Set(), peer: null, at: 0, rounds: 1 })
      if (this.treeSince === 0) { this.treeSince = Date.now(); this.treeProgress = this.treeSince }
      this.treeTimer ??= setInterval(() => { this.treeTick() }, 250)
      this.flushTree()
    })
  }

  /** Sends the queued tree requests at the next turn of the event loop, one WANT per holder. */
  private flushTree (): void {
    if (this.treeFlushQueued) return
    this.treeFlushQueued = true
    setImmediate(() => {
      this.treeFlushQueued = false
      this.sendTreeRequests()
    })
  }

  private sendTreeRequests (): void {
    if (this.treeQueue.length === 0) return
    const holders = [...this.holders].filter(p => !this.exchange.isBanned(p))
    const load = new Map<string, number>(holders.map(h => [h, 0]))
    for (const r of this.treePending.values()) if (r.peer !== null && load.has(r.peer)) load.set(r.peer, (load.get(r.peer) ?? 0) + 1)
    const batches = new Map<string, TreeRequest[]>()
    const left: TreeRequest[] = []
    for (const r of this.treeQueue.splice(0)) {
      // Arrived with the root meanwhile: no request needed.
      const pushed = this.usePushed(r.cid)
      if (pushed !== undefined) {
        pushed.then(r.resolve, (err: unknown) => { r.reject(err as Error) })
        continue
      }
      let best: string | null = null
      let bestLoad = Infinity
      for (const h of holders) {
        if (r.tried.has(h)) continue
        const l = (load.get(h) ?? 0) + Math.random() * 0.5
        if (l < bestLoad) { best = h; bestLoad = l }
      }
      if (best === null) {
        // No holder known yet (or all tried): wait for one, then fall back to asking everyone.
        if (Date.now() - this.treeSince > TREE_HOLDER_WAIT_MS || (holders.length > 0 && holders.every(h => r.tried.has(h)))) this.fallbackTree(r)
        else left.push(r)
        continue
      }
      load.set(best, (load.get(best) ?? 0) + 1)
      let b = batches.get(best)
      if (b === undefined) { b = []; batches.set(best, b) }
      b.push(r)
    }
    this.treeQueue.push(...left)
    const now = Date.now()
    for (const [peer, reqs] of batches) {
      for (const r of reqs) {
        r.peer = peer
        r.at = now
        this.treePending.set(r.cid.toString(), r)
        this.exchange.expect(r.cid, {
          resolve: (from, bytes) => { void this.onTreeBlock(r, from, new Uint8Array(bytes)) },
          reject: (from) => { if (from === r.peer) this.retryTree(r) }
        })
      }
      this.exchange.want(peer, reqs.map(r => r.cid)).catch(() => { for (const r of reqs) if (r.peer === peer) this.retryTree(r) })
    }
  }

  private async onTreeBlock (r: TreeRequest, _from: string, bytes: Uint8Array): Promise<void> {
    const key = r.cid.toString()
    if (this.treePending.get(key) !== r) return
    this.treePending.delete(key)
    this.exchange.unexpect(r.cid)
    this.treeProgress = Date.now()
    try {
      // the exchange checked it against its CID on arrival (and bans senders of bad blocks)
      await this.store.putTrusted(r.cid, bytes)
    } catch (err) {
      r.reject(err as Error)
      return
    }
    r.resolve(bytes)
  }

  private retryTree (r: TreeRequest): void {
    const key = r.cid.toString()
    if (this.treePending.get(key) !== r) return
    this.treePending.delete(key)
    this.exchange.unexpect(r.cid)
    if (r.peer !== null) r.tried.add(r.peer)
    r.peer = null
    this.treeQueue.push(r)
    this.flushTree()
  }

  /**
   * Every peer was tried for this block in this round. While tree blocks still arrive (or for
   * stallMs), a new round begins at the next tick (250 ms on); after that the fetch fails.
   */
  private nextTreeRound (r: TreeRequest, asked: number): boolean {
    const idle = Date.now() - this.treeProgress
    if (idle > (this.opts.stallMs ?? 120_000)) {
      r.reject(new ImgmeshError('ENOBLOCK', `no peer sent tree block ${r.cid.toString()} (asked ${asked} peer(s) in ${r.rounds} round(s), no tree block for ${Math.round(idle / 1000)}s)`))
      return false
    }
    r.tried.clear()
    r.rounds++
    return true
  }

  /** The old way: every candidate in turn (no peer said it holds the version). */
  private fallbackTree (r: TreeRequest): void {
    const untried = this.opts.candidates().filter(p => !r.tried.has(p))
    const peers = untried.length > 0 ? untried : this.opts.candidates()
    this.exchange.fetchOne(r.cid, peers).then((bytes) => { this.treeProgress = Date.now(); r.resolve(bytes) }, (err: unknown) => {
      if (!(err instanceof ImgmeshError) || err.code !== 'ENOBLOCK') { r.reject(err as Error); return }
      for (const p of peers) r.tried.add(p)
      if (this.treeTimer === undefined) { r.reject(err); return }
      if (this.nextTreeRound(r, peers.length)) this.treeQueue.push(r)
    })
  }

  private treeTick (): void {
    const now = Date.now()
    this.probe()
    for (const r of [...this.treePending.values()]) if (now - r.at > TREE_REQUEST_TIMEOUT_MS) this.retryTree(r)
    if (this.treeQueue.length > 0) this.sendTreeRequests()
  }

  private stopTreeFetch (): void {
    if (this.treeTimer !== undefined) clearInterval(this.treeTimer)
    this.treeTimer = undefined
    for (const r of this.treePending.values()) this.exchange.unexpect(r.cid)
    this.treePending.clear()
  }

  /** Starts asking peers; resolves `done` when every piece is in the store. */
  start (): void {
    const s = this.scheduler
    if (s === null || this.offer === null) throw new ImgmeshError('EBADARG', 'prepare() the fetcher first')
    if (s.done) { this.complete(); return }
    // What peers said while the tree was loading.
    for (const [peer, e] of this.early) {
      if (this.exchange.isBanned(peer)) continue
      // An answer that did not fit the piece list (a peer that echoed our count): ask again.
      if (e.pieceCount !== s.pieces) { this.asked.delete(peer); continue }
      s.setPeer(peer, e.all ? Bitfield.full(s.pieces) : (e.bits ?? new Bitfield(s.pieces)))
    }
    this.early.clear()
    const gone = (peer: string): void => {
      this.asked.delete(peer)
      this.holders.delete(peer)
      this.rates?.forget(peer)
      for (const i of s.removePeer(peer)) this.requestedAt.delete(`${peer}:${i}`)
      this.pump()
    }
    this.exchange.peerGone.add(gone)
    this.cleanups.push(() => { this.exchange.peerGone.delete(gone) })
    this.timer = setInterval(() => { this.tick() }, 500)
    this.askPeers()
    this.pump()
  }

  /** Asks every candidate peer not asked yet what it holds. */
  askPeers (): void {
    const s = this.scheduler
    if (s === null || this.offer === null || s.done) return
    for (const peer of this.opts.candidates()) {
      if (this.asked.has(peer) || this.exchange.isBanned(peer)) continue
      this.asked.add(peer)
      this.exchange.askHave(peer, this.version, s.pieces, { kind: 'bitmap', bitmap: s.have.bytes })
        .catch((err: unknown) => { this.asked.delete(peer); log.debug('could not ask peer', { peer, error: (err as Error).message }) })
    }
  }

  private onHave (e: HaveEvent): void {
    // An answer with an offer (pieces, or a complete empty version) means the peer holds the tree.
    if (e.pieceCount > 0 || e.have.kind === 'all') {
      this.holders.add(e.peer)
      this.wakeHolderWaiters()
    }
    const s = this.scheduler
    if (s === null) {
      this.noteEarly(e)
      if (this.treeQueue.length > 0) this.flushTree()
      return
    }
    if (e.pieceCount !== s.pieces) return
    const known = s.peerIds().includes(e.peer)
    if (e.have.kind === 'all') {
      if (!known) s.setPeer(e.peer, Bitfield.full(s.pieces))
      else for (let i = 0; i < s.pieces; i++) s.peerHas(e.peer, i)
    } else if (e.have.kind === 'bitmap') {
      const b = new Bitfield(s.pieces, e.have.bitmap)
      if (!known) s.setPeer(e.peer, b)
      else for (let i = 0; i < s.pieces; i++) if (b.has(i)) s.peerHas(e.peer, i)
    } else {
      if (!known) s.setPeer(e.peer, new Bitfield(s.pieces))
      for (const i of e.have.indexes) s.peerHas(e.peer, i)
    }
    this.pump(e.peer)
  }

  /** Keeps what a peer says it holds until the scheduler exists. */
  private noteEarly (e: HaveEvent): void {
    if (e.pieceCount === 0 && e.have.kind !== 'all') return
    let x = this.early.get(e.peer)
    if (x === undefined || x.pieceCount !== e.pieceCount) { x = { pieceCount: e.pieceCount, all: false, bits: null }; this.early.set(e.peer, x) }
    if (e.have.kind === 'all') { x.all = true; return }
    x.bits ??= new Bitfield(e.pieceCount)
    if (e.have.kind === 'bitmap') {
      const b = new Bitfield(e.pieceCount, e.have.bitmap)
      for (let i = 0; i < e.pieceCount; i++) if (b.has(i)) x.bits.set(i)
    } else {
      for (const i of e.have.indexes) x.bits.set(i)
    }
  }

  /** Sends requests to one peer (after it answered or delivered), or to every peer. */
  /**
   * Sends requests to one peer (after it answered or delivered), or to every peer: at the next
   * turn of the event loop, so that the blocks that came in together lead to one WANT per peer,
   * and only once a peer has room for a few requests (half its allowance), not one WANT per block.
   */
  private pump (only?: string): void {
    if (only === undefined) this.pumpAll = true
    else this.pumpPeers.add(only)
    if (this.pumpQueued) return
    this.pumpQueued = true
    setImmediate(() => {
      this.pumpQueued = false
      this.pumpNow()
    })
  }

  private pumpNow (): void {
    const s = this.scheduler
    const offer = this.offer
    const peers = this.pumpAll ? null : [...this.pumpPeers]
    this.pumpAll = false
    this.pumpPeers.clear()
    if (s === null || offer === null || this.pumping || s.done) return
    this.pumping = true
    try {
      const now = Date.now()
      const tail = s.missing <= 64
      for (const peer of peers ?? s.peerIds()) {
        const allowance = this.rates === null ? Number.POSITIVE_INFINITY : this.rates.allowance(peer, now)
        const room = allowance - s.inFlight(peer)
        if (room <= 0 || (!tail && allowance >= 4 && room < Math.floor(allowance / 2))) continue
        const picks = s.next(peer, room)
        if (picks.length === 0) continue
        const cids = picks.map(i => offer.pieces[i])
        for (const i of picks) {
          this.requestedAt.set(`${peer}:${i}`, now)
          this.exchange.expect(offer.pieces[i], {
            resolve: (from, bytes, frame) => { try { this.onBlock(from, i, bytes, frame) } catch (err) { this.fail(err as Error) } },
            reject: (from, missing) => { this.requestedAt.delete(`${from}:${i}`); s.failed(from, i, missing); this.pump() }
          })
        }
        this.exchange.want(peer, cids).catch(() => {
          for (const i of picks) { this.requestedAt.delete(`${peer}:${i}`); s.failed(peer, i) }
        })
      }
    } finally {
      this.pumping = false
    }
  }

  /**
   * A piece arrived (checked against its CID by the exchange). The bytes are lent for this call
   * (the exchange reuses their buffer for the next block), so everything here that uses them
   * does so before returning: the store and the block cache copy them, and deploy's writers
   * (whenArrived) write them at once; get() callers get a copy. A piece that came compressed is
   * stored as its zstd frame (about half the bytes to write and keep).
   */
  private onBlock (peer: string, i: number, bytes: Uint8Array, frame?: Uint8Array): void {
    const s = this.scheduler!
    const offer = this.offer!
    if (s.have.has(i)) return
    try {
      this.store.putTrustedSync(offer.pieces[i], bytes, frame)
    } catch (err) {
      this.fail(err as Error)
      return
    }
    this.exchange.unexpect(offer.pieces[i])
    this.requestedAt.delete(`${peer}:${i}`)
    const others = s.received(peer, i)
    for (const o of others) { this.requestedAt.delete(`${o}:${i}`); void this.exchange.cancel(o, [offer.pieces[i]]) }
    this.exchange.cache.put(offer.pieces[i].toString(), bytes)
    this.bytes += bytes.length
    this.lastProgress = Date.now()
    this.rates?.delivered(peer, bytes.length, this.lastProgress)
    for (const w of this.pieceWaiters.get(i) ?? []) w.arrived(bytes)
    this.pieceWaiters.delete(i)
    for (const l of this.arrivalListeners) l(offer.pieces[i])
    if (s.done) { this.complete(); return }
    this.pump(peer)
    for (const o of others) this.pump(o)
  }

  private tick (): void {
    const s = this.scheduler
    if (s === null || s.done) return
    const now = Date.now()
    this.samples.push([now, this.bytes])
    while (this.samples.length > 0 && now - this.samples[0][0] > 3000) this.samples.shift()
    for (const [key, at] of this.requestedAt) {
      if (now - at < REQUEST_TIMEOUT_MS) continue
      this.requestedAt.delete(key)
      const sep = key.lastIndexOf(':')
      s.failed(key.slice(0, sep), Number(key.slice(sep + 1)))
    }
    this.askPeers()
    this.pump()
    if (log.enabled('info') && now - this.lastLog >= 1000) {
      this.lastLog = now
      const st = s.stats()
      const peers = s.peerIds().map(p => `${p.slice(-4)}:${s.inFlight(p)}/${this.rates?.allowance(p, now) ?? '-'}@${Math.round((this.rates?.rate(p, now) ?? 0) / 1024)}`)
      log.info('fetching', { have: s.have.cardinality, ...st, inFlight: this.requestedAt.size, waiting: this.pieceWaiters.size, peers: peers.join(' ') })
    }
    if (now - this.lastProgress > (this.opts.stallMs ?? 120_000)) {
      this.fail(new ImgmeshError('ETIMEOUT', `no peer sent any of the ${s.missing} missing pieces of ${this.version.toString()} for ${Math.round((now - this.lastProgress) / 1000)}s`))
    }
  }

  /**
   * Resolves true when no peer has offered this version within `ms` and the fetch is still
   * running (holders beyond the connected peers are worth looking for); false as soon as a peer
   * offers it, or the fetch ends.
   */
  async noHolderWithin (ms: number): Promise<boolean> {
    if (this.holders.size > 0 || this.ended) return false
    return await new Promise<boolean>((resolve) => {
      const wake = (): void => { clearTimeout(timer); this.holderWaiters.delete(wake); resolve(false) }
      const timer = setTimeout(() => { this.holderWaiters.delete(wake); resolve(true) }, ms)
      this.holderWaiters.add(wake)
    })
  }

  private wakeHolderWaiters (): void {
    for (const w of [...this.holderWaiters]) w()
  }

  private complete (): void {
    this.ended = true
    this.wakeHolderWaiters()
    this.cleanup()
    log.info('version fetched', { version: this.version.toString(), bytes: this.bytes, ms: Date.now() - this.startedAt, sent: this.exchange.messagesSent, received: this.exchange.messagesReceived, wireSent: this.exchange.wireSent, wireReceived: this.exchange.wireReceived, cacheHits: this.exchange.cache.hits, cacheMisses: this.exchange.cache.misses, zcacheHits: this.exchange.zcache.hits, zcacheMisses: this.exchange.zcache.misses, blocksCompressed: this.exchange.blocksCompressed })
    this.finish.resolve()
  }

  private fail (err: Error): void {
    if (this.failure !== null) return
    this.failure = err
    this.ended = true
    this.wakeHolderWaiters()
    this.cleanup()
    // A tree still loading (stop() during prepare) ends with the same error, and its timer stops.
    for (const r of [...this.treePending.values(), ...this.treeQueue.splice(0)]) r.reject(err)
    this.stopTreeFetch()
    for (const ws of this.pieceWaiters.values()) for (const w of ws) w.failed(err)
    this.pieceWaiters.clear()
    this.finish.reject(err)
  }

  private cleanup (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    for (const c of this.cleanups.splice(0)) c()
    if (this.offer !== null) for (const cid of this.offer.pieces) this.exchange.unexpect(cid)
  }

  stop (): void { this.fail(new ImgmeshError('EABORTED', 'fetch stopped')) }

  /**
   * BlockGetter for deploy: if a chunk of this version is still to come, calls `arrived` with
   * its verified bytes the moment it is here (or `failed` if the fetch fails) and returns true;
   * returns false, calling nothing, when it is here already or not part of the version.
   */
  whenArrived (cid: CID, arrived: (bytes: Uint8Array) => void, failed: (err: Error) => void): boolean {
    const i = this.offer?.index.get(cid.toString())
    if (i === undefined || this.scheduler === null || this.scheduler.have.has(i) || this.failure !== null) return false
    this.waitFor(i, { arrived, failed })
    return true
  }

  /** BlockGetter for deploy: whether a chunk is here (arrived, or not part of this fetch). */
  isHere (cid: CID): boolean {
    const i = this.offer?.index.get(cid.toString())
    return i === undefined || this.scheduler === null || this.scheduler.have.has(i)
  }

  /** BlockGetter for deploy: `listener` hears of every piece from the moment it is stored and cached. */
  onArrival (listener: (cid: CID) => void): () => void {
    this.arrivalListeners.add(listener)
    return () => { this.arrivalListeners.delete(listener) }
  }

  /** BlockGetter for deploy: a chunk of this version that arrived and is still in the block cache, lent without a copy. */
  lend (cid: CID, use: (bytes: Uint8Array) => void): boolean {
    const key = cid.toString()
    const i = this.offer?.index.get(key)
    if (i === undefined || this.scheduler === null || !this.scheduler.have.has(i)) return false
    return this.exchange.cache.lend(key, use)
  }

  private waitFor (i: number, w: { arrived: (b: Uint8Array) => void, failed: (e: Error) => void }): void {
    let list = this.pieceWaiters.get(i)
    if (list === undefined) { list = []; this.pieceWaiters.set(i, list) }
    list.push(w)
  }

  /** BlockGetter for deploy: a chunk as soon as it is here. */
  async get (cid: CID): Promise<Uint8Array> {
    const i = this.offer?.index.get(cid.toString())
    if (i === undefined || this.scheduler === null) {
      if (await this.store.has(cid)) return await this.store.get(cid)
      return await this.exchange.fetchOne(cid, this.opts.candidates())
    }
    if (this.scheduler.have.has(i)) return this.exchange.cache.get(cid.toString()) ?? await this.store.get(cid)
    if (this.failure !== null) throw this.failure
    return await new Promise<Uint8Array>((resolve, reject) => { this.waitFor(i, { arrived: (bytes) => { resolve(new Uint8Array(bytes)) }, failed: reject }) })
  }

  progress (): FetchProgress {
    const s = this.scheduler
    const first = this.samples[0]
    const last = this.samples[this.samples.length - 1]
    const rate = first !== undefined && last !== undefined && last[0] > first[0] ? (last[1] - first[1]) * 1000 / (last[0] - first[0]) : 0
    return {
      version: this.version.toString(),
      pieces: s?.pieces ?? 0,
      have: s?.have.cardinality ?? 0,
      bytes: this.bytes,
      totalBytes: this.totalBytes,
      peers: s?.peerIds().length ?? 0,
      rate,
      done: s?.done ?? false,
      ...(s === null ? {} : { bitmap: Buffer.from(s.have.bytes).toString('base64') })
    }
  }
}
