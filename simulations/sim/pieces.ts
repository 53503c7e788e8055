/**
 * Piece sizes of a synthetic image. imgmesh cuts files with FastCDC (min 16 KiB, average 64 KiB,
 * max 256 KiB); the unique chunks of a Debian tree average about 72 KiB. Sizes here are
 * min + an exponential tail, cut at max (the shape of a gear-hash chunker: no chunk below min,
 * a geometric spread above it), scaled so the mean is `meanKiB`; the last piece is trimmed so
 * the pieces add up to exactly the image size.
 */
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
