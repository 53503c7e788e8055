/**
 * Fetches one version from the swarm: its tree blocks first, then its pieces (the unique content
 * chunks) from every peer that has them, many at once, rarest first, with an endgame. While it
 * runs it is also an offer: the pieces it has verified are served to others at once. As a
 * BlockGetter it hands deploy each chunk as soon as it is here, so writing overlaps fetching.
 */
import type { CID } from 'multiformats/cid'
import type { BlockGetter, BlockStore } from '../store/block-store.ts'
import type { BlockExchange, HaveEvent, Offer } from './block-exchange.ts'
import { Bitfield } from '../fetch/bitfield.ts'
import { PieceScheduler } from '../fetch/piece-scheduler.ts'
import { loadTree, pieceList, type DirNode } from '../tree/tree-loader.ts'
import { ImgmeshError } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('fetch')
const REQUEST_TIMEOUT_MS = 20_000

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
}

export interface FetcherOptions {
  /** Peers worth asking (connected peers, DHT providers); called again as peers come and go. */
  candidates: () => string[]
  maxInFlight?: number
  /** Give up when nothing arrives for this long while pieces are missing (default 120 s). */
  stallMs?: number
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
  private readonly pieceWaiters = new Map<number, Array<{ resolve: (b: Uint8Array) => void, reject: (e: Error) => void }>>()
  private readonly requestedAt = new Map<string, number>()
  private readonly cleanups: Array<() => void> = []
  private timer: NodeJS.Timeout | undefined
  private finish!: { resolve: () => void, reject: (e: Error) => void }
  readonly done: Promise<void>
  private failure: Error | null = null
  private lastProgress = Date.now()
  private samples: Array<[number, number]> = []
  bytes = 0
  totalBytes = 0
  private pumping = false
  private startedAt = Date.now()

  constructor (exchange: BlockExchange, store: BlockStore, version: CID, tree: CID, opts: FetcherOptions) {
    this.exchange = exchange
    this.store = store
    this.version = version
    this.treeCid = tree
    this.opts = opts
    this.done = new Promise<void>((resolve, reject) => { this.finish = { resolve, reject } })
    this.done.catch(() => {})
  }

  /** Loads the tree (from the store, or from peers) and works out which pieces are missing. */
  async prepare (): Promise<void> {
    const started = Date.now()
    const treeGetter: BlockGetter = {
      get: async (cid) => {
        if (await this.store.has(cid)) return await this.store.get(cid)
        return await this.exchange.fetchOne(cid, this.opts.candidates())
      }
    }
    this.tree = await loadTree(treeGetter, this.treeCid)
    const pieces = pieceList(this.tree)
    const have = new Bitfield(pieces.length)
    this.sizes = pieces.map(p => p.length)
    for (let i = 0; i < pieces.length; i++) {
      this.totalBytes += pieces[i].length
      if (await this.store.has(pieces[i].cid)) { have.set(i); this.bytes += pieces[i].length }
    }
    this.scheduler = new PieceScheduler(pieces.length, have, { maxInFlight: this.opts.maxInFlight ?? 32 })
    const index = new Map<string, number>()
    pieces.forEach((p, i) => index.set(p.cid.toString(), i))
    this.offer = { version: this.version, pieces: pieces.map(p => p.cid), index, have }
    this.startedAt = Date.now()
    log.info('tree loaded', { version: this.version.toString(), ms: this.startedAt - started, pieces: pieces.length, have: have.cardinality })
  }

  /** Starts asking peers; resolves `done` when every piece is in the store. */
  start (): void {
    const s = this.scheduler
    if (s === null || this.offer === null) throw new ImgmeshError('EBADARG', 'prepare() the fetcher first')
    if (s.done) { this.complete(); return }
    this.cleanups.push(this.exchange.onHave(this.version, (e) => { this.onHave(e) }))
    const gone = (peer: string): void => {
      this.asked.delete(peer)
      for (const i of s.removePeer(peer)) this.requestedAt.delete(`${peer}:${i}`)
      this.pump()
    }
    this.exchange.peerGone.add(gone)
    this.cleanups.push(() => { this.exchange.peerGone.delete(gone) })
    this.timer = setInterval(() => { this.tick() }, 500)
    this.askPeers()
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
    const s = this.scheduler
    if (s === null || e.pieceCount !== s.pieces) return
    const known = s.peerIds().includes(e.peer)
    if (e.have.kind === 'all') {
      s.setPeer(e.peer, Bitfield.full(s.pieces))
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

  /** Sends requests to one peer (after it answered or delivered), or to every peer. */
  private pump (only?: string): void {
    const s = this.scheduler
    const offer = this.offer
    if (s === null || offer === null || this.pumping || s.done) return
    this.pumping = true
    try {
      for (const peer of only === undefined ? s.peerIds() : [only]) {
        const picks = s.next(peer)
        if (picks.length === 0) continue
        const cids = picks.map(i => offer.pieces[i])
        const now = Date.now()
        for (const i of picks) {
          this.requestedAt.set(`${peer}:${i}`, now)
          this.exchange.expect(offer.pieces[i], {
            resolve: (from, bytes) => { void this.onBlock(from, i, bytes) },
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

  private async onBlock (peer: string, i: number, bytes: Uint8Array): Promise<void> {
    const s = this.scheduler!
    const offer = this.offer!
    if (s.have.has(i)) return
    try {
      await this.store.putVerified(offer.pieces[i], bytes)
    } catch (err) {
      this.fail(err as Error)
      return
    }
    if (s.have.has(i)) return
    this.exchange.unexpect(offer.pieces[i])
    this.requestedAt.delete(`${peer}:${i}`)
    const others = s.received(peer, i)
    for (const o of others) { this.requestedAt.delete(`${o}:${i}`); void this.exchange.cancel(o, [offer.pieces[i]]) }
    this.bytes += bytes.length
    this.lastProgress = Date.now()
    for (const w of this.pieceWaiters.get(i) ?? []) w.resolve(bytes)
    this.pieceWaiters.delete(i)
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
    if (now - this.lastProgress > (this.opts.stallMs ?? 120_000)) {
      this.fail(new ImgmeshError('ETIMEOUT', `no peer sent any of the ${s.missing} missing pieces of ${this.version.toString()} for ${Math.round((now - this.lastProgress) / 1000)}s`))
    }
  }

  private complete (): void {
    this.cleanup()
    log.info('version fetched', { version: this.version.toString(), bytes: this.bytes, ms: Date.now() - this.startedAt })
    this.finish.resolve()
  }

  private fail (err: Error): void {
    if (this.failure !== null) return
    this.failure = err
    this.cleanup()
    for (const ws of this.pieceWaiters.values()) for (const w of ws) w.reject(err)
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

  /** BlockGetter for deploy: a chunk as soon as it is here. */
  async get (cid: CID): Promise<Uint8Array> {
    const i = this.offer?.index.get(cid.toString())
    if (i === undefined || this.scheduler === null) {
      if (await this.store.has(cid)) return await this.store.get(cid)
      return await this.exchange.fetchOne(cid, this.opts.candidates())
    }
    if (this.scheduler.have.has(i)) return await this.store.get(cid)
    if (this.failure !== null) throw this.failure
    return await new Promise<Uint8Array>((resolve, reject) => {
      let list = this.pieceWaiters.get(i)
      if (list === undefined) { list = []; this.pieceWaiters.set(i, list) }
      list.push({ resolve, reject })
    })
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
      done: s?.done ?? false
    }
  }
}
