/**
 * The faults scenario's kill (scenarios.ts): which clients die with h0, chosen from the clients'
 * piece bitfields (one bit per piece, most significant bit first, as a deploy's progress events
 * give them) at the moment of the kill.
 */

/** Whether bitfield `b` holds piece j. */
function has (b: Uint8Array, j: number): boolean {
  return (b[j >> 3] & (0x80 >> (j & 7))) !== 0
}

/** How many of the first `pieces` bits of `b` are set. */
export function countBits (b: Uint8Array, pieces: number): number {
  let have = 0
  for (let j = 0; j < pieces; j++) if (has(b, j)) have++
  return have
}

/**
 * Which `count` clients to kill, given each client's piece bitfield: none (null) until the
 * clients hold every piece between them; then the clients holding the most pieces, taken one by
 * one as long as the others still hold every piece between them — the kill that hurts most while
 * one full copy survives. Null if no `count` clients can go without losing a piece. Linear in
 * clients × pieces: the scenario asks at every progress event, on the testbed's busy cores.
 */
export function chooseVictims (held: Uint8Array[], pieces: number, count: number): number[] | null {
  // Per piece: how many of the clients still standing hold it.
  const holders = new Uint32Array(pieces)
  for (const b of held) for (let j = 0; j < pieces; j++) if (has(b, j)) holders[j]++
  for (let j = 0; j < pieces; j++) if (holders[j] === 0) return null
  const order = held.map((b, i) => ({ i, n: countBits(b, pieces) })).sort((a, b) => b.n - a.n || a.i - b.i).map(x => x.i)
  const chosen: number[] = []
  for (const i of order) {
    if (chosen.length === count) break
    const b = held[i]
    let alone = false
    for (let j = 0; j < pieces && !alone; j++) alone = has(b, j) && holders[j] === 1
    if (alone) continue
    chosen.push(i)
    for (let j = 0; j < pieces; j++) if (has(b, j)) holders[j]--
  }
  return chosen.length === count ? chosen.sort((a, b) => a - b) : null
}
