/**
 * Which piece to ask which peer for. Rarest first (ties broken at random, so peers spread out),
 * a bounded number of requests in flight per peer, and an endgame: once every missing piece is
 * requested, the last ones are asked of other peers too and the losers cancelled. Pure logic
 * with no I/O: the swarm fetcher and the simulator drive the same code.
 */
import { Bitfield } from './bitfield.ts'

export interface SchedulerOptions {
  /** Requests in flight per peer. */
  maxInFlight?: number
  /**
   * Endgame starts when at most this many pieces are missing and all are requested (default:
   * ENDGAME_PIECES, or a 32nd of the pieces this fetch lacks at its start if fewer, at least 2).
   */
  endgamePieces?: number
  /**
   * In the endgame, a piece is asked of at most this many peers at once (default 3): enough to
   * get around a slow or dead holder without every peer sending the last pieces to everyone.
   */
  endgameFanout?: number
  random?: () => number
}

interface PeerState { have: Bitfield, inFlight: Set<number> }

/** Missing pieces at which the endgame of a large fetch starts. */
export const ENDGAME_PIECES = 16
/**
 * A fetch of few pieces (an update) starts its endgame at this share of them: with 16, the
 * endgame of a 69-piece update (1,923 pieces, v1 held) covered a quarter of it, each client
 * cancelled 10–29 duplicate requests, and it received 1.33–1.46 times the changed chunks' bytes
 * on the wire; with 3, 1.20–1.22 times (testbed, 10 clients).
 */
const ENDGAME_SHARE = 32

/** Where the endgame starts for a fetch that lacks `missing` pieces at its start. */
export function endgameStart (missing: number): number {
  return Math.min(ENDGAME_PIECES, Math.max(2, Math.ceil(missing / ENDGAME_SHARE)))
}

export class PieceScheduler {
  readonly pieces: number
  readonly have: Bitfield
  private readonly peers = new Map<string, PeerState>()
  /** How many known peers hold each piece. */
  private readonly availability: Uint32Array
  /** Peers each piece is requested from. */
  private readonly requested = new Map<number, Set<string>>()
  private readonly maxInFlight: number
  private readonly endgamePieces: number
  private readonly endgameFanout: number
  private readonly random: () => number

  constructor (pieces: number, have?: Bitfield, opts: SchedulerOptions = {}) {
    this.pieces = pieces
    this.have = have ?? new Bitfield(pieces)
    this.availability = new Uint32Array(pieces)
    this.maxInFlight = opts.maxInFlight ?? 16
    this.endgamePieces = opts.endgamePieces ?? endgameStart(pieces - this.have.cardinality)
    this.endgameFanout = Math.max(2, opts.endgameFanout ?? 3)
    this.random = opts.random ?? Math.random
  }

  get done (): boolean { return this.have.complete }
  get missing (): number { return this.pieces - this.have.cardinality }
  peerIds (): string[] { return [...this.peers.keys()] }
  inFlight (peer: string): number { return this.peers.get(peer)?.inFlight.size ?? 0 }

  /** Counts for logs: missing pieces, those requested from someone, those no known peer holds. */
  stats (): { missing: number, requested: number, unavailable: number } {
    let requested = 0
    let unavailable = 0
    for (let i = 0; i < this.pieces; i++) {
      if (this.have.has(i)) continue
      if ((this.requested.get(i)?.size ?? 0) > 0) requested++
      if (this.availability[i] === 0) unavailable++
    }
    return { missing: this.missing, requested, unavailable }
  }

  /** A peer announced what it holds (replaces what was known). */
  setPeer (peer: string, have: Bitfield): void {
    this.removePeer(peer)
    this.peers.set(peer, { have, inFlight: new Set() })
    for (let i = 0; i < this.pieces; i++) if (have.has(i)) this.availability[i]++
  }

  /** A peer got one more piece. */
  peerHas (peer: string, index: number): void {
    const p = this.peers.get(peer)
    if (p === undefined || index < 0 || index >= this.pieces) return
    if (p.have.set(index)) this.availability[index]++
  }

  /** A peer left: its requests go back to the pool. Returns them. */
  removePeer (peer: string): number[] {
    const p = this.peers.get(peer)
    if (p === undefined) return []
    for (let i = 0; i < this.pieces; i++) if (p.have.has(i)) this.availability[i]--
    const lost = [...p.inFlight]
    for (const i of lost) this.requested.get(i)?.delete(peer)
    this.peers.delete(peer)
    return lost
  }

  /** Pieces to request from peer now (rarest first), marked as requested. */
  next (peer: string, limit = Number.POSITIVE_INFINITY): number[] {
    const p = this.peers.get(peer)
    if (p === undefined) return []
    const room = Math.min(limit, this.maxInFlight - p.inFlight.size)
    if (room <= 0) return []
    let chosen = this.pick(p, room, false)
    if (chosen.length === 0 && this.missing <= this.endgamePieces) chosen = this.pick(p, room, true)
    for (const i of chosen) {
      p.inFlight.add(i)
      let reqs = this.requested.get(i)
      if (reqs === undefined) { reqs = new Set(); this.requested.set(i, reqs) }
      reqs.add(peer)
    }
    return chosen
  }

  /**
   * The `room` rarest pieces p holds and we lack, random among equally rare ones: pieces asked of
   * nobody yet, or (endgame) pieces not yet asked of p. Walks the bitfields a byte at a time and
   * keeps only the best `room` candidates (no sort of every candidate).
   */
  private pick (p: PeerState, room: number, endgame: boolean): number[] {
    const mine = this.have.bytes
    const theirs = p.have.bytes
    const all = room === Number.POSITIVE_INFINITY
    const idx: number[] = []
    const av: number[] = []
    const rnd: number[] = []
    for (let k = 0; k < theirs.length; k++) {
      const m = theirs[k] & ~mine[k]
      if (m === 0) continue
      for (let bit = 0; bit < 8; bit++) {
        if ((m & (0x80 >> bit)) === 0) continue
        const i = k * 8 + bit
        if (endgame) {
          if (p.inFlight.has(i) || (this.requested.get(i)?.size ?? 0) >= this.endgameFanout) continue
        } else {
          const reqs = this.requested.get(i)
          if (reqs !== undefined && reqs.size > 0) continue
        }
        if (all) { idx.push(i); continue }
        const a = this.availability[i]
        if (idx.length >= room && a > av[idx.length - 1]) continue
        const r = this.random()
        if (idx.length >= room) {
          const last = idx.length - 1
          if (a === av[last] && r >= rnd[last]) continue
          idx.pop(); av.pop(); rnd.pop()
        }
        let j = idx.length
        while (j > 0 && (av[j - 1] > a || (av[j - 1] === a && rnd[j - 1] > r))) j--
        idx.splice(j, 0, i)
        av.splice(j, 0, a)
        rnd.splice(j, 0, r)
      }
    }
    return idx
  }

  /** A piece arrived (verified) from peer. Returns the other peers it is still requested from (to cancel). */
  received (peer: string, index: number): string[] {
    this.have.set(index)
    const reqs = this.requested.get(index) ?? new Set<string>()
    this.requested.delete(index)
    const others: string[] = []
    for (const other of reqs) {
      this.peers.get(other)?.inFlight.delete(index)
      if (other !== peer) others.push(other)
    }
    return others
  }

  /** A request failed (DONT_HAVE, bad block, timeout): the piece may be asked elsewhere. */
  failed (peer: string, index: number, peerLacksIt = false): void {
    const p = this.peers.get(peer)
    p?.inFlight.delete(index)
    this.requested.get(index)?.delete(peer)
    if (peerLacksIt && p !== undefined && p.have.clear(index)) this.availability[index]--
  }
}
