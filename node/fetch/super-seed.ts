/**
 * Super-seeding for the only holder of a brand-new version: each peer is shown a few pieces
 * nobody has been sent yet, and more as it takes them, so the origin uploads every piece once
 * before any piece twice and the swarm makes the other copies. Once every piece has gone out,
 * the holder shows everything.
 *
 * It also gives up, and shows everything, when no new piece has gone out for `stallMs` after
 * the first did: pieces offered to peers that never take them (a peer that has not heard of the
 * version yet) or sent to a peer that then failed or left would otherwise never be sent again.
 * The likely cause of a stall on the testbed with 50 clients on two cores: 28 clients waited for
 * the same 94 pieces while the origin sent 0.2 Mbit/s for 200 s.
 */
import { Bitfield } from './bitfield.ts'

export class SuperSeed {
  readonly pieces: number
  private readonly sentCount: Uint32Array
  private readonly offered = new Map<string, Bitfield>()
  /** Per piece: how many peers' offers hold it. */
  private readonly offeredCount: Uint32Array
  /** Per peer: pieces in its offer that nobody has been sent yet. */
  private readonly pending = new Map<string, number>()
  /** Pieces nobody has been sent and nobody is offered: what a top-up can still hand out. */
  private free: number
  private nextUnsent = 0
  private unsent: number
  private readonly perPeer: number
  private readonly windowMs: number
  /** Per peer: when its recent pieces went out (ms), oldest first, within windowMs of the last. */
  private readonly recent = new Map<string, number[]>()
  private readonly stallMs: number
  private readonly clock: () => number
  /** When a piece last went out for the first time (ms), null before the first. */
  private lastNewAt: number | null = null
  private gaveUp = false

  /**
   * `perPeer`: pieces shown to a peer that it has not taken yet, at least. A peer that takes
   * pieces fast is shown as many as it took in the last `windowMs` (default 100): the offer
   * covers what that stream carries in about a round of HAVE and WANT, so a lone fast peer is
   * not held up by the offer, while a peer among many slow streams sees only a few pieces and
   * each piece reaches a first receiver soon.
   *
   * `spread`: pieces the swarm already holds (those of the parent version, for an update). They
   * count as sent: only the new pieces are super-seeded, and the rest comes from the peers that
   * have it. Without this a follower holding the parent would be offered only pieces it has.
   */
  constructor (pieces: number, perPeer = 8, spread?: Bitfield, opts: { windowMs?: number, stallMs?: number, now?: () => number } = {}) {
    this.pieces = pieces
    this.sentCount = new Uint32Array(pieces)
    this.offeredCount = new Uint32Array(pieces)
    this.unsent = pieces
    this.perPeer = perPeer
    this.windowMs = opts.windowMs ?? 100
    this.stallMs = opts.stallMs ?? 15_000
    this.clock = opts.now ?? Date.now
    if (spread !== undefined) {
      for (let i = 0; i < pieces; i++) if (spread.has(i)) { this.sentCount[i] = 1; this.unsent-- }
    }
    this.free = this.unsent
  }

  /** Every piece has gone out once, or super-seeding stalled: the holder shows everything. */
  get finished (): boolean {
    if (this.unsent === 0 || this.gaveUp) return true
    if (this.lastNewAt !== null && this.clock() - this.lastNewAt > this.stallMs) this.gaveUp = true
    return this.gaveUp
  }

  /** What to advertise to a peer: a few pieces not yet sent to anyone (or all, once all went out). */
  offer (peer: string): Bitfield {
    if (this.finished) return Bitfield.full(this.pieces)
    let b = this.offered.get(peer)
    if (b === undefined) { b = new Bitfield(this.pieces); this.offered.set(peer, b) }
    this.topUp(peer, b)
    return b
  }

  /** How many untaken pieces peer should see now. */
  private want (peer: string): number {
    return Math.max(this.perPeer, this.recent.get(peer)?.length ?? 0)
  }

  /**
   * Adds unsent pieces to a peer's offer until it shows `want` of them: first pieces offered to
   * nobody, in turn from a cursor over the pieces; if there are none, pieces already offered to
   * others. Counts kept per piece and per peer make this cost the pieces it adds, not a scan.
   */
  private topUp (peer: string, b: Bitfield): void {
    const want = this.want(peer)
    let pending = this.pending.get(peer) ?? 0
    if (this.free > 0 && pending < want) {
      const start = this.nextUnsent
      let scanned = 0
      while (pending < want && scanned < this.pieces) {
        if (this.free === 0) {
          // Nothing left to find: a full scan would end where it started.
          this.nextUnsent = start
          break
        }
        const i = this.nextUnsent
        this.nextUnsent = (this.nextUnsent + 1) % this.pieces
        scanned++
        if (this.sentCount[i] > 0 || this.offeredCount[i] > 0) continue
        this.add(b, i)
        pending++
      }
    }
    // Everything unsent is already offered to someone: share the rest too.
    if (pending === 0) {
      for (let i = 0; i < this.pieces && pending < want; i++) {
        if (this.sentCount[i] === 0 && this.add(b, i)) pending++
      }
    }
    this.pending.set(peer, pending)
  }

  /** Puts piece i in offer b; false if it was there. */
  private add (b: Bitfield, i: number): boolean {
    if (!b.set(i)) return false
    if (this.offeredCount[i]++ === 0 && this.sentCount[i] === 0) this.free--
    return true
  }

  /** Whether serving piece i to peer keeps the once-before-twice rule. */
  allowed (peer: string, i: number): boolean {
    if (this.finished) return true
    return this.offered.get(peer)?.has(i) === true && this.sentCount[i] === 0
  }

  /** Records that piece i went to peer. Returns whether the peer's offer grew (advertise it again). */
  sent (peer: string, i: number, now = this.clock()): boolean {
    if (this.sentCount[i]++ === 0) {
      this.lastNewAt = this.clock()
      this.unsent--
      if (this.offeredCount[i] === 0) this.free--
      else for (const [p, ob] of this.offered) if (ob.has(i)) this.pending.set(p, (this.pending.get(p) ?? 1) - 1)
    }
    const b = this.offered.get(peer)
    if (b === undefined) return false
    let times = this.recent.get(peer)
    if (times === undefined) { times = []; this.recent.set(peer, times) }
    times.push(now)
    let drop = 0
    while (drop < times.length && now - times[drop] > this.windowMs) drop++
    if (drop > 0) times.splice(0, drop)
    if (times.length > this.pieces) times.splice(0, times.length - this.pieces)
    const before = b.cardinality
    this.topUp(peer, b)
    return b.cardinality !== before || this.finished
  }

  forget (peer: string): void {
    const b = this.offered.get(peer)
    if (b !== undefined) {
      for (let i = 0; i < this.pieces; i++) {
        if (b.has(i) && --this.offeredCount[i] === 0 && this.sentCount[i] === 0) this.free++
      }
    }
    this.offered.delete(peer)
    this.pending.delete(peer)
    this.recent.delete(peer)
  }
}
