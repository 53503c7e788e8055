/**
 * Content-defined chunking of file contents: FastCDC with a gear rolling hash and normalized
 * chunking (level 2). Boundaries depend only on the bytes, so an insertion or deletion moves
 * only the chunks around the edit, and later chunks keep their content address.
 *
 * The gear table and the cut rule are part of the image format: changing either changes the
 * chunk boundaries, hence the CIDs, of every file. They are pinned by test/chunker.test.ts.
 *
 * Cut rule for one chunk starting at offset 0 of the remaining data:
 * - the first `min` bytes are not hashed and never end a chunk;
 * - from byte `min` on, h = (h << 1) + GEAR[byte] (32 bits, h = 0 at byte `min`);
 *   after hashing byte i the chunk ends at i + 1 when (h & mask) === 0, with the strict mask
 *   (bits + 2 high bits set, bits = round(log2(avg))) while i < avg and the loose mask
 *   (bits - 2 high bits set) from avg on;
 * - a chunk never exceeds `max` bytes; the data's end closes the last chunk whatever its size.
 * The masks use the high bits of h because bit k of a gear hash depends on the last k + 1
 * bytes only: the high bits see the widest window (up to 32 bytes).
 */
import { ImgmeshError } from '../errors.ts'

export interface ChunkingOptions { min: number, avg: number, max: number }

/** The casync defaults: 16 KiB / 64 KiB / 256 KiB (measured mean on random data: about 73 KiB). */
export const DEFAULT_CHUNKING: ChunkingOptions = Object.freeze({ min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 })

const MAX_CHUNK = 1 << 30

/**
 * splitmix64 from a fixed seed; each table entry is the high 32 bits of one output.
 * Computed with BigInt once at load time; the values must never change.
 */
function makeGear (): Int32Array {
  const M64 = 0xffffffffffffffffn
  let state = 0x696d676d65736801n
  const table = new Int32Array(256)
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & M64
    let z = state
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64
    z = z ^ (z >> 31n)
    table[i] = Number(z >> 32n) | 0
  }
  return table
}

const GEAR_I32 = makeGear()

/** The gear table as unsigned 32-bit values (a frozen copy, for inspection and tests). */
export const GEAR: readonly number[] = Object.freeze(Array.from(GEAR_I32, v => v >>> 0))

interface Params {
  min: number
  avg: number
  max: number
  maskS: number
  maskL: number
}

function highBits (n: number): number {
  return n >= 32 ? -1 : ~((1 << (32 - n)) - 1)
}

function params (opts: ChunkingOptions): Params {
  if (typeof opts !== 'object' || opts === null) throw new ImgmeshError('EBADARG', 'chunking options must be an object { min, avg, max }')
  const { min, avg, max } = opts
  for (const [name, v] of [['min', min], ['avg', avg], ['max', max]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new ImgmeshError('EBADARG', `chunking option ${name} must be a non-negative integer, got ${String(v)}`)
  }
  if (avg < 64) throw new ImgmeshError('EBADARG', `chunking option avg must be at least 64, got ${avg}`)
  if (!(min < avg && avg < max)) throw new ImgmeshError('EBADARG', `chunking options need min < avg < max, got min ${min}, avg ${avg}, max ${max}`)
  if (max > MAX_CHUNK) throw new ImgmeshError('EBADARG', `chunking option max must be at most ${MAX_CHUNK}, got ${max}`)
  const bits = Math.round(Math.log2(avg))
  return { min, avg, max, maskS: highBits(bits + 2), maskL: highBits(bits - 2) }
}

/**
 * The rolling hash carried between calls. An Int32Array slot keeps it an untagged int32: a
 * plain variable boxes values outside the small-integer range and the hot loop deoptimizes.
 */
const HASH = new Int32Array(1)

/** Whole 32-bit words are read in little-endian order; other machines take the byte loop. */
const WORD_READS = new Uint8Array(new Uint32Array([0x01020304]).buffer)[0] === 0x04

/**
 * Rolls the hash (HASH[0]) over data[i, e) and returns the index after the first position
 * where (h & mask) === 0, or -1 with the hash stored back. Aligned stretches are read a 32-bit
 * word at a time, which measured about 1.5x faster than one typed-array load per byte.
 */
function roll (data: Uint8Array, i: number, e: number, mask: number): number {
  const gear = GEAR_I32
  let h = HASH[0]
  const off = data.byteOffset
  for (; i < e && ((off + i) & 3) !== 0; i++) {
    h = ((h << 1) + gear[data[i]]) | 0
    if ((h & mask) === 0) return i + 1
  }
  const wordEnd = i + ((e - i) & ~3)
  if (WORD_READS && wordEnd > i) {
    const words = new Uint32Array(data.buffer, off + i, (wordEnd - i) >> 2)
    for (let w = 0; i < wordEnd; i += 4, w++) {
      const x = words[w]
      h = ((h << 1) + gear[x & 255]) | 0
      if ((h & mask) === 0) return i + 1
      h = ((h << 1) + gear[(x >>> 8) & 255]) | 0
      if ((h & mask) === 0) return i + 2
      h = ((h << 1) + gear[(x >>> 16) & 255]) | 0
      if ((h & mask) === 0) return i + 3
      h = ((h << 1) + gear[x >>> 24]) | 0
      if ((h & mask) === 0) return i + 4
    }
  }
  for (; i < e; i++) {
    h = ((h << 1) + gear[data[i]]) | 0
    if ((h & mask) === 0) return i + 1
  }
  HASH[0] = h
  return -1
}

/**
 * Looks for the end of the chunk that starts at index `base` of `data` (base may be negative
 * when the chunk began in earlier buffers). Bytes before `from` were already rolled into
 * HASH[0] (0 at the start of a chunk). Returns the index just after the cut, or -1 when `data`
 * ends first, the hash then being left in HASH[0].
 */
function scan (data: Uint8Array, from: number, end: number, base: number, p: Params): number {
  const minEnd = base + p.min
  const normEnd = base + p.avg
  const maxEnd = base + p.max
  let i = from > minEnd ? from : minEnd
  const e1 = normEnd < end ? normEnd : end
  if (i < e1) {
    const cut = roll(data, i, e1, p.maskS)
    if (cut >= 0) return cut
    i = e1
  }
  const e2 = maxEnd < end ? maxEnd : end
  if (i < e2) {
    const cut = roll(data, i, e2, p.maskL)
    if (cut >= 0) return cut
    i = e2
  }
  return i === maxEnd ? maxEnd : -1
}

/** End offsets of the chunks of `data` (the last one is data.length); none for empty data. */
export function cutPoints (data: Uint8Array, opts: ChunkingOptions = DEFAULT_CHUNKING): number[] {
  const p = params(opts)
  const n = data.length
  const cuts: number[] = []
  let base = 0
  while (base < n) {
    HASH[0] = 0
    let cut = scan(data, base, n, base, p)
    if (cut < 0) cut = n
    cuts.push(cut)
    base = cut
  }
  return cuts
}

/** The chunks of `data`, as views into it (no copy). */
export function chunkBytes (data: Uint8Array, opts: ChunkingOptions = DEFAULT_CHUNKING): Uint8Array[] {
  const chunks: Uint8Array[] = []
  let start = 0
  for (const cut of cutPoints(data, opts)) {
    chunks.push(data.subarray(start, cut))
    start = cut
  }
  return chunks
}

function concat (parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total)
  let off = 0
  for (const part of parts) {
    out.set(part, off)
    off += part.length
  }
  return out
}

/**
 * Streaming chunker for data that arrives in pieces (a file read in 1 MiB buffers). Gives the
 * same boundaries as `cutPoints` over the concatenation, whatever the split.
 *
 * The chunker keeps no reference to a buffer after `push` returns: the unfinished tail is
 * copied. A chunk that lies within one pushed buffer is returned as a view into that buffer
 * (no copy), so the caller must copy or consume such chunks before overwriting its buffer;
 * a chunk that spans buffers is a new array.
 */
export class Chunker {
  private readonly p: Params
  private pending: Uint8Array[] = []
  private pendingLen = 0
  private hash = 0

  constructor (opts: ChunkingOptions = DEFAULT_CHUNKING) {
    this.p = params(opts)
  }

  /** Feeds the next bytes; returns the chunks completed by them, in order. */
  push (data: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = []
    const n = data.length
    if (n === 0) return out
    let base = 0 - this.pendingLen // never -0, which would turn the index arithmetic into doubles
    let from = 0
    HASH[0] = this.hash
    for (;;) {
      const cut = scan(data, from, n, base, this.p)
      if (cut < 0) break
      if (base < 0) {
        this.pending.push(data.subarray(0, cut))
        out.push(concat(this.pending, cut - base))
        this.pending = []
      } else {
        out.push(data.subarray(base, cut))
      }
      base = cut
      from = cut
      HASH[0] = 0
    }
    if (base < 0) {
      this.pending.push(data.slice())
    } else if (base < n) {
      this.pending = [data.slice(base)]
    }
    this.pendingLen = n - base
    this.hash = HASH[0]
    return out
  }

  /** Ends the stream: returns the last chunk (if any bytes remain) and resets the chunker for reuse. */
  finish (): Uint8Array[] {
    const out = this.pendingLen > 0
      ? [this.pending.length === 1 ? this.pending[0] : concat(this.pending, this.pendingLen)]
      : []
    this.pending = []
    this.pendingLen = 0
    this.hash = 0
    return out
  }
}
