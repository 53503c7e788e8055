/**
 * The faults scenario's kill (scenarios.ts): which clients die with h0, chosen from the clients'
 * piece bitfields (one bit per piece, most significant bit first, as the agent's status gives
 * them) at the moment of the kill.
 */

/** How many of the first `pieces` bits of `b` are set. */
export function countBits (b: Uint8Array, pieces: number): number {
  let have = 0
  for (let j = 0; j < pieces; j++) if ((b[j >> 3] & (0x80 >> (j & 7))) !== 0) have++
  return have
}

/**
 * Which `count` clients to kill, given each client's piece bitfield: none (null) until the
 * clients hold every piece between them; then the clients holding the most pieces, taken one by
 * one as long as the others still hold every piece between them — the kill that hurts most while
 * one full copy survives. Null if no `count` clients can go without losing a piece.
 */
export function chooseVictims (held: Uint8Array[], pieces: number, count: number): number[] | null {
  const order = held.map((b, i) => ({ i, n: countBits(b, pieces) })).sort((a, b) => b.n - a.n || a.i - b.i).map(x => x.i)
  const complete = (skip: Set<number>): boolean => {
    for (let j = 0; j < pieces; j++) {
      const byte = j >> 3
      const bit = 0x80 >> (j & 7)
      if (!held.some((b, i) => !skip.has(i) && (b[byte] & bit) !== 0)) return false
    }
    return true
  }
  const chosen = new Set<number>()
  if (!complete(chosen)) return null
  for (const i of order) {
    if (chosen.size === count) break
    chosen.add(i)
    if (!complete(chosen)) chosen.delete(i)
  }
  return chosen.size === count ? [...chosen].sort((a, b) => a - b) : null
}
