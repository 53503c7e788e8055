/**
 * Piece sizes of a synthetic image. imgmesh cuts files with FastCDC (min 16 KiB, average 64 KiB,
 * max 256 KiB); the unique chunks of a Debian tree average about 72 KiB. Sizes here are
 * min + an exponential tail, cut at max (the shape of a gear-hash chunker: no chunk below min,
 * a geometric spread above it), scaled so the mean is `meanKiB`; the last piece is trimmed so
 * the pieces add up to exactly the image size.
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { rng } from './rng.ts'

export interface PieceSpec {
  imageBytes: number
  minKiB?: number
  meanKiB?: number
  maxKiB?: number
  seed: number
}

export function pieceSizes (spec: PieceSpec): number[] {
  const min = (spec.minKiB ?? 16) * 1024
  const max = (spec.maxKiB ?? 256) * 1024
  const mean = (spec.meanKiB ?? 72) * 1024
  if (!(min < mean && mean < max)) throw new Error('piece sizes need min < mean < max')
  const r = rng(spec.seed, 0x9ec5)
  // Tail scale so that E[min(min + Exp(s), max)] = mean: min + s(1 - e^{-(max-min)/s}) = mean.
  let lo = 1
  let hi = max
  for (let k = 0; k < 60; k++) {
    const s = (lo + hi) / 2
    if (min + s * (1 - Math.exp(-(max - min) / s)) < mean) lo = s
    else hi = s
  }
  const scale = (lo + hi) / 2
  const out: number[] = []
  let total = 0
  while (total < spec.imageBytes) {
    const x = Math.min(max, Math.round(min - scale * Math.log(1 - r())))
    const size = Math.min(x, spec.imageBytes - total)
    out.push(size)
    total += size
  }
  return out
}

/**
 * Bytes each piece takes on the wire: its size times a share drawn from `shares` (quantiles of
 * the wire share by bytes, as wire-ratios.json holds them), with a random stream of its own so the
 * pieces, graph and schedulers draw the same numbers with or without compression. Without shares
 * every piece travels plain.
 */
export function wireSizes (sizes: readonly number[], shares: readonly number[] | undefined, seed: number): number[] {
  if (shares === undefined || shares.length === 0) return sizes.slice()
  for (const s of shares) if (!(s > 0 && s <= 1)) throw new Error(`a wire share is in (0, 1], not ${s}`)
  const r = rng(seed, 0x3171)
  return sizes.map(size => Math.max(1, Math.round(size * shares[Math.min(shares.length - 1, Math.floor(r() * shares.length))])))
}

/** What wire-ratios.json holds (written by wire-ratios.ts). */
export interface WireRatios {
  /** How it was measured. */
  source: string
  imageBytes: number
  blocks: number
  /** Wire bytes over block bytes for the whole image. */
  overall: number
  /** Share of the bytes in blocks sent plain (compression saved less than 10 %). */
  plainShare: number
  /** quantiles[k]: the wire share of the block holding byte (k + 0.5)/n of the image, blocks sorted by share. */
  quantiles: number[]
  /** Every block of the image in the order a deploy lists its pieces: [bytes, wire bytes]. */
  pieces?: Array<[number, number]>
}

/** The wire shares measured on the testbed image (the agent's compression). */
export const WIRE_RATIOS_FILE = join(dirname(fileURLToPath(import.meta.url)), 'wire-ratios.json')

/** Reads a wire-ratios file; throws if it holds no quantiles in (0, 1]. */
export function readWireRatios (file: string = WIRE_RATIOS_FILE): WireRatios {
  const r = JSON.parse(readFileSync(file, 'utf8')) as Partial<WireRatios>
  const q = r.quantiles
  if (!Array.isArray(q) || q.length === 0 || !q.every(x => typeof x === 'number' && x > 0 && x <= 1)) throw new Error(`${file} has no quantiles in (0, 1]`)
  const overall = typeof r.overall === 'number' && r.overall > 0 ? r.overall : q.reduce((a, b) => a + b, 0) / q.length
  const pieces = r.pieces
  if (pieces !== undefined && !(Array.isArray(pieces) && pieces.every(x => Array.isArray(x) && x.length === 2 && Number.isInteger(x[0]) && x[0] > 0 && Number.isInteger(x[1]) && x[1] > 0 && x[1] <= x[0]))) {
    throw new Error(`${file}: pieces must be [bytes, wire bytes] pairs, wire bytes in [1, bytes]`)
  }
  return { source: r.source ?? file, imageBytes: r.imageBytes ?? 0, blocks: r.blocks ?? 0, overall, plainShare: r.plainShare ?? 0, quantiles: q, pieces }
}
