/**
 * Bandwidth sharing. Every active transfer (one served stream, server → client) crosses two
 * links: the server's uplink and the client's downlink. Rates are max-min fair over those links
 * (what many TCP flows sharing access links converge to, roughly): no flow can get faster
 * without slowing one that is no faster than it.
 *
 * `allocate` approximates max-min by a few rounds of water-filling per link: a link's fair share
 * is what is left of its capacity after the flows held below that share by their other link,
 * split evenly among the rest. Then a feasibility pass scales down any link still over its
 * capacity, so the error is always on the slow side (capacity left unused, never invented).
 * `exactMaxMin` (progressive filling) is the reference it is checked against.
 */

export interface FlowSet {
  /** Number of active flows. */
  count: number
  /** Server (uplink) and client (downlink) of flow f. */
  src: Int32Array
  dst: Int32Array
}

export class Allocator {
  readonly nodes: number
  readonly capUp: Float64Array
  readonly capDown: Float64Array
  private readonly nUp: Int32Array
  private readonly nDown: Int32Array
  private readonly shareUp: Float64Array
  private readonly shareDown: Float64Array
  private readonly limSum: Float64Array
  private readonly limCnt: Int32Array
  /** Sum of the allocated rates per uplink / downlink after `allocate`. */
  readonly usedUp: Float64Array
  readonly usedDown: Float64Array
  rounds: number
  inner: number

  constructor (capUp: Float64Array, capDown: Float64Array, rounds = 3, inner = 3) {
    this.nodes = capUp.length
    this.capUp = capUp
    this.capDown = capDown
    const n = this.nodes
    this.nUp = new Int32Array(n)
    this.nDown = new Int32Array(n)
    this.shareUp = new Float64Array(n)
    this.shareDown = new Float64Array(n)
    this.limSum = new Float64Array(n)
    this.limCnt = new Int32Array(n)
    this.usedUp = new Float64Array(n)
    this.usedDown = new Float64Array(n)
    this.rounds = rounds
    this.inner = inner
  }

  /** Fills rate[0..count) (bytes/s). */
  allocate (flows: FlowSet, rate: Float64Array): void {
    const { count, src, dst } = flows
    const { nUp, nDown, shareUp, shareDown, capUp, capDown, usedUp, usedDown } = this
    const n = this.nodes
    nUp.fill(0)
    nDown.fill(0)
    for (let f = 0; f < count; f++) { nUp[src[f]]++; nDown[dst[f]]++ }
    // Start from the uplinks' even split, as if no downlink limited anything.
    for (let v = 0; v < n; v++) shareDown[v] = Number.POSITIVE_INFINITY
    for (let round = 0; round < this.rounds; round++) {
      this.level(count, src, dst, nUp, capUp, shareUp, shareDown)
      this.level(count, dst, src, nDown, capDown, shareDown, shareUp)
    }
    usedUp.fill(0)
    for (let f = 0; f < count; f++) {
      const r = Math.min(shareUp[src[f]], shareDown[dst[f]], capUp[src[f]], capDown[dst[f]])
      rate[f] = r
      usedUp[src[f]] += r
    }
    // Feasibility: scale down uplinks over capacity, then downlinks (which only lowers uplinks).
    for (let v = 0; v < n; v++) shareUp[v] = usedUp[v] > capUp[v] ? capUp[v] / usedUp[v] : 1
    usedDown.fill(0)
    for (let f = 0; f < count; f++) { rate[f] *= shareUp[src[f]]; usedDown[dst[f]] += rate[f] }
    for (let v = 0; v < n; v++) shareDown[v] = usedDown[v] > capDown[v] ? capDown[v] / usedDown[v] : 1
    usedUp.fill(0)
    usedDown.fill(0)
    for (let f = 0; f < count; f++) {
      rate[f] *= shareDown[dst[f]]
      usedUp[src[f]] += rate[f]
      usedDown[dst[f]] += rate[f]
    }
  }

  /**
   * Water level of each link on one side: the x with sum over its flows of min(other_f, x) = cap,
   * found by the fixed point x <- (cap - sum of others below x) / (flows not below x), which
   * climbs monotonically from the even split to the level (`inner` steps, usually enough).
   */
  private level (count: number, mine: Int32Array, theirs: Int32Array, nFlows: Int32Array, cap: Float64Array, share: Float64Array, other: Float64Array): void {
    const { limSum, limCnt } = this
    const n = this.nodes
    for (let v = 0; v < n; v++) share[v] = nFlows[v] > 0 ? cap[v] / nFlows[v] : 0
    for (let step = 0; step < this.inner; step++) {
      limSum.fill(0)
      limCnt.fill(0)
      for (let f = 0; f < count; f++) {
        const s = mine[f]
        const o = other[theirs[f]]
        if (o < share[s]) { limSum[s] += o; limCnt[s]++ }
      }
      for (let v = 0; v < n; v++) {
        if (nFlows[v] === 0) continue
        const free = nFlows[v] - limCnt[v]
        share[v] = free > 0 ? (cap[v] - limSum[v]) / free : Number.POSITIVE_INFINITY
      }
    }
  }
}

/** Exact max-min fair rates by progressive filling (slow: for checking `Allocator`). */
export function exactMaxMin (capUp: ArrayLike<number>, capDown: ArrayLike<number>, flows: FlowSet): Float64Array {
  const { count, src, dst } = flows
  const rate = new Float64Array(count)
  const frozen = new Uint8Array(count)
  const n = capUp.length
  let left = count
  while (left > 0) {
    // The tightest link: smallest even split of what is left among its unfrozen flows.
    let best = Number.POSITIVE_INFINITY
    let bestLink = -1
    for (let link = 0; link < 2 * n; link++) {
      const up = link < n
      const v = up ? link : link - n
      let used = 0
      let free = 0
      for (let f = 0; f < count; f++) {
        if ((up ? src[f] : dst[f]) !== v) continue
        if (frozen[f] === 1) used += rate[f]
        else free++
      }
      if (free === 0) continue
      const level = ((up ? capUp[v] : capDown[v]) - used) / free
      if (level < best) { best = level; bestLink = link }
    }
    const up = bestLink < n
    const v = up ? bestLink : bestLink - n
    for (let f = 0; f < count; f++) {
      if (frozen[f] === 1 || (up ? src[f] : dst[f]) !== v) continue
      rate[f] = best
      frozen[f] = 1
      left--
    }
  }
  return rate
}
