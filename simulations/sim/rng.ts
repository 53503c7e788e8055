/** Seeded pseudo-random numbers (splitmix32 seeding, mulberry32 stream): deterministic runs for a given seed. */

export type Random = () => number

/** Mixes a seed and a salt into a 32-bit state (so each node's stream is independent). */
export function mix (seed: number, salt: number): number {
  let h = (seed ^ Math.imul(salt + 0x9e3779b9, 0x85ebca6b)) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0
  return (h ^ (h >>> 16)) >>> 0
}

/** mulberry32 from a seed and a salt mixed together: a uniform number in [0, 1) per call. */
export function rng (seed: number, salt = 0): Random {
  return mulberry32(mix(seed, salt))
}

/** mulberry32 from a 32-bit state as given: a uniform number in [0, 1) per call. */
export function mulberry32 (state: number): Random {
  let a = state >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** An integer in [0, n). */
export function randInt (r: Random, n: number): number {
  return Math.floor(r() * n)
}
