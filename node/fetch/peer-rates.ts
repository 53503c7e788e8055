/**
 * How many requests to keep in flight with each peer: enough to cover what the peer delivers in
 * `targetMs` (its measured rate), at least `min`, at most `max`. A peer that delivers fast gets
 * more requests; a slow or starved one keeps only a few, so pieces do not wait in a long queue
 * behind a slow sender while faster peers idle (and the endgame has fewer stragglers to chase).
 * Pure logic, time passed in: the fetcher and the simulator drive the same code.
 */

/**
 * Block requests in flight per peer, at most (the measured rate usually sets fewer). On
 * loopback, one peer to one, 32 left both processes idle part of the time waiting on the
 * round trip (256 MiB fetch: 31-37 MB/s against 50-64 with 128).
 */
export const DEFAULT_MAX_IN_FLIGHT = 128

export interface PeerRatesOptions {
  /** Data in flight per peer, in ms of its measured rate (default 600). */
  targetMs?: number
  /** Fewest requests in flight per peer (default 2). */
  min?: number
  /** Most requests in flight per peer (default DEFAULT_MAX_IN_FLIGHT). */
  max?: number
  /** Requests allowed before a peer delivered anything (default 4). */
  initial?: number
  /** Time constant of the rate average, ms (default 1000). */
  halfLifeMs?: number
}

interface Rate { bytesPerMs: number, last: number, started: boolean }

export class PeerRates {
  private readonly rates = new Map<string, Rate>()
  private readonly targetMs: number
  private readonly min: number
  private readonly max: number
  private readonly initial: number
  private readonly halfLifeMs: number
  /** Mean piece size, to turn a byte budget into a request count. */
  private meanPiece: number

  constructor (meanPieceBytes: number, opts: PeerRatesOptions = {}) {
    this.meanPiece = Math.max(1, meanPieceBytes)
    this.targetMs = opts.targetMs ?? 600
    this.min = opts.min ?? 2
    this.max = opts.max ?? DEFAULT_MAX_IN_FLIGHT
    this.initial = opts.initial ?? 4
    this.halfLifeMs = opts.halfLifeMs ?? 1000
  }

  /** A block of `bytes` arrived from peer at `now` (ms). */
  delivered (peer: string, bytes: number, now: number): void {
    let r = this.rates.get(peer)
    if (r === undefined) { r = { bytesPerMs: 0, last: now, started: false }; this.rates.set(peer, r) }
    if (!r.started) {
      // First delivery: no interval to measure yet; assume it came over the initial window.
      r.started = true
      r.bytesPerMs = bytes / Math.max(50, this.halfLifeMs / 4)
      r.last = now
      return
    }
    const dt = Math.max(1, now - r.last)
    const w = Math.pow(0.5, dt / this.halfLifeMs)
    // An exponentially weighted rate: the old rate decays over dt, the new bytes add their share.
    r.bytesPerMs = r.bytesPerMs * w + (bytes / this.halfLifeMs) * Math.LN2
    r.last = now
  }

  /** Measured rate in bytes per second (0 before any delivery). */
  rate (peer: string, now: number): number {
    const r = this.rates.get(peer)
    if (r === undefined || !r.started) return 0
    return r.bytesPerMs * Math.pow(0.5, Math.max(0, now - r.last) / this.halfLifeMs) * 1000
  }

  /** Requests to keep in flight with peer now. */
  allowance (peer: string, now: number): number {
    const r = this.rates.get(peer)
    if (r === undefined || !r.started) return Math.max(this.min, Math.min(this.max, this.initial))
    const want = Math.ceil(this.rate(peer, now) * this.targetMs / 1000 / this.meanPiece)
    return Math.max(this.min, Math.min(this.max, want))
  }

  forget (peer: string): void { this.rates.delete(peer) }
}
