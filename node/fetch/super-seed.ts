/**
 * Super-seeding for the only holder of a brand-new version: each peer is shown a few pieces
 * nobody has been sent yet, and more as it takes them, so the origin uploads every piece once
 * before any piece twice and the swarm makes the other copies. Once every piece has gone out,
 * the holder shows everything.
 */
import { Bitfield } from './bitfield.ts'

export class SuperSeed {
  readonly pieces: number
  private readonly sentCount: Uint32Array
  private readonly offered = new Map<string, Bitfield>()
  private nextUnsent = 0
  private unsent: number
  private readonly perPeer: number

  /**
   * `spread`: pieces the swarm already holds (those of the parent version, for an update). They
   * count as sent: only the new pieces are super-seeded, and the rest comes from the peers that
   * have it. Without this a follower holding the parent would be offered only pieces it has.
   */
  constructor (pieces: number, perPeer = 8, spread?: Bitfield) {
    this.pieces = pieces
    this.sentCount = new Uint32Array(pieces)
    this.unsent = pieces
    this.perPeer = perPeer
    if (spread !== undefined) {
      for (let i = 0; i < pieces; i++) if (spread.has(i)) { this.sentCount[i] = 1; this.unsent-- }
    }
  }

  get finished (): boolean { return this.unsent === 0 }

  /** What to advertise to a peer: a few pieces not yet sent to anyone (or all, once all went out). */
  offer (peer: string): Bitfield {
    if (this.finished) return Bitfield.full(this.pieces)
    let b = this.offered.get(peer)
    if (b === undefined) { b = new Bitfield(this.pieces); this.offered.set(peer, b) }
    this.topUp(b)
    return b
  }

  private topUp (b: Bitfield): void {
    let pending = 0
    for (let i = 0; i < this.pieces; i++) if (b.has(i) && this.sentCount[i] === 0) pending++
    let scanned = 0
    while (pending < this.perPeer && scanned < this.pieces) {
      const i = this.nextUnsent
      this.nextUnsent = (this.nextUnsent + 1) % this.pieces
      scanned++
      if (this.sentCount[i] > 0 || b.has(i)) continue
      if (this.offeredElsewhere(i)) continue
      b.set(i)
      pending++
    }
    // Everything unsent is already offered to someone: share the rest too.
    if (pending === 0) for (let i = 0; i < this.pieces && pending < this.perPeer; i++) if (this.sentCount[i] === 0 && b.set(i)) pending++
  }

  private offeredElsewhere (i: number): boolean {
    for (const b of this.offered.values()) if (b.has(i)) return true
    return false
  }

  /** Whether serving piece i to peer keeps the once-before-twice rule. */
  allowed (peer: string, i: number): boolean {
    if (this.finished) return true
    return this.offered.get(peer)?.has(i) === true && this.sentCount[i] === 0
  }

  /** Records that piece i went to peer. Returns whether the peer's offer grew (advertise it again). */
  sent (peer: string, i: number): boolean {
    if (this.sentCount[i]++ === 0) this.unsent--
    const b = this.offered.get(peer)
    if (b === undefined) return false
    const before = b.cardinality
    this.topUp(b)
    return b.cardinality !== before || this.finished
  }

  forget (peer: string): void { this.offered.delete(peer) }
}
