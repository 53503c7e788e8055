import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { Chunker, DEFAULT_CHUNKING, GEAR, chunkBytes, cutPoints } from '../node/chunk/chunker.ts'
import type { ChunkingOptions } from '../node/chunk/chunker.ts'
import { ImgmeshError } from '../node/errors.ts'

const SMALL: ChunkingOptions = { min: 1024, avg: 4096, max: 16384 }
const TINY: ChunkingOptions = { min: 32, avg: 128, max: 512 }

/** xorshift32 bytes: a fixed pseudo-random input that any implementation can regenerate. */
function prng (seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed >>> 0
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x >>> 24
  }
  return out
}

function streamed (data: Uint8Array, splits: number[], opts: ChunkingOptions): Uint8Array[] {
  const c = new Chunker(opts)
  const out: Uint8Array[] = []
  let prev = 0
  for (const s of [...splits, data.length]) {
    out.push(...c.push(data.subarray(prev, s)))
    prev = s
  }
  out.push(...c.finish())
  return out
}

function lengths (chunks: Uint8Array[]): number[] {
  return chunks.map(c => c.length)
}

function digest (b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex')
}

function isBadArg (err: unknown): boolean {
  return err instanceof ImgmeshError && err.code === 'EBADARG'
}

test('gear table is pinned', () => {
  assert.equal(GEAR.length, 256)
  assert.equal(GEAR[0], 0xdebe444c)
  assert.equal(GEAR[1], 0xdd3eff2b)
  assert.equal(GEAR[127], 0xf16daead)
  assert.equal(GEAR[255], 0xa497cda0)
  const bytes = Buffer.alloc(1024)
  GEAR.forEach((v, i) => bytes.writeUInt32BE(v, i * 4))
  assert.equal(digest(bytes), '848462825c2c5a31ed9237398da28d29015af4397c1d2cd77040a4381acffe09')
  assert.equal(new Set(GEAR).size, 256)
  assert.ok(Object.isFrozen(GEAR))
  assert.deepEqual(DEFAULT_CHUNKING, { min: 16384, avg: 65536, max: 262144 })
  assert.ok(Object.isFrozen(DEFAULT_CHUNKING))
})

test('cut points of a fixed pseudo-random input are pinned', () => {
  const data = prng(1, 2 << 20)
  assert.deepEqual(cutPoints(data), [
    74931, 156497, 223163, 294016, 331333, 354760, 436525, 526588, 598893, 679855, 724214,
    806944, 884282, 940228, 1014028, 1081832, 1147739, 1187140, 1262769, 1364702, 1456422,
    1524035, 1593739, 1676084, 1699345, 1744207, 1818302, 1898634, 1965176, 2045912, 2097152
  ])
  assert.deepEqual(cutPoints(data.subarray(0, 20000), { min: 256, avg: 1024, max: 4096 }), [
    1535, 3285, 4446, 5567, 6673, 7763, 9258, 10312, 11792, 13259, 14413, 15223, 15947, 17008,
    17928, 18453, 19488, 20000
  ])
})

test('empty input gives no chunks', () => {
  const empty = new Uint8Array(0)
  assert.deepEqual(cutPoints(empty), [])
  assert.deepEqual(chunkBytes(empty), [])
  const c = new Chunker()
  assert.deepEqual(c.push(empty), [])
  assert.deepEqual(c.finish(), [])
})

test('input shorter than min is one chunk', () => {
  const data = prng(7, 1000)
  assert.deepEqual(cutPoints(data, SMALL), [1000])
  assert.deepEqual(cutPoints(data.subarray(0, 1)), [1])
})

test('same bytes give the same chunks; chunks concatenate to the input; sizes within [min, max]', () => {
  fc.assert(fc.property(
    fc.uint8Array({ maxLength: 8000 }),
    fc.constantFrom(TINY, { min: 0, avg: 64, max: 65 }, { min: 100, avg: 300, max: 2000 }),
    (data, opts) => {
      const a = chunkBytes(data, opts)
      const b = chunkBytes(Uint8Array.from(data), opts)
      assert.deepEqual(lengths(a), lengths(b))
      assert.deepEqual(Buffer.concat(a), Buffer.from(data))
      a.forEach((chunk, i) => {
        assert.ok(chunk.length <= opts.max)
        assert.ok(chunk.length >= 1)
        if (i < a.length - 1) assert.ok(chunk.length >= opts.min)
      })
    }
  ), { numRuns: 200 })
})

test('low-entropy input: zeros and a two-byte alphabet still respect max', () => {
  const zeros = new Uint8Array(1 << 20)
  const cuts = cutPoints(zeros)
  assert.deepEqual(cuts, [262144, 524288, 786432, 1048576])
  fc.assert(fc.property(fc.array(fc.constantFrom(0, 255), { maxLength: 5000 }), bytes => {
    const data = Uint8Array.from(bytes)
    const chunks = chunkBytes(data, TINY)
    assert.deepEqual(Buffer.concat(chunks), Buffer.from(data))
    chunks.forEach((chunk, i) => {
      assert.ok(chunk.length <= TINY.max)
      if (i < chunks.length - 1) assert.ok(chunk.length >= TINY.min)
    })
  }), { numRuns: 100 })
})

test('streaming gives the same chunks as one-shot for any split', () => {
  fc.assert(fc.property(
    fc.uint8Array({ maxLength: 6000 }),
    fc.array(fc.nat(), { maxLength: 40 }),
    (data, raw) => {
      const splits = [...new Set(raw.map(s => s % (data.length + 1)))].sort((x, y) => x - y)
      const got = streamed(data, splits, TINY)
      const want = chunkBytes(data, TINY)
      assert.deepEqual(lengths(got), lengths(want))
      got.forEach((chunk, i) => assert.deepEqual(Buffer.from(chunk), Buffer.from(want[i])))
    }
  ), { numRuns: 300 })
})

test('streaming with default options over 1 MiB buffers and odd splits', () => {
  const data = prng(99, 3 << 20)
  const want = lengths(chunkBytes(data))
  const mib = []
  for (let i = 1 << 20; i < data.length; i += 1 << 20) mib.push(i)
  assert.deepEqual(lengths(streamed(data, mib, DEFAULT_CHUNKING)), want)
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 300_000 }), { minLength: 1, maxLength: 30 }), sizes => {
    const splits: number[] = []
    let at = 0
    for (let i = 0; at < data.length; i++) {
      at += sizes[i % sizes.length]
      if (at < data.length) splits.push(at)
    }
    assert.deepEqual(lengths(streamed(data, splits, DEFAULT_CHUNKING)), want)
  }), { numRuns: 20 })
})

test('streaming keeps no reference to a pushed buffer (the caller may reuse it)', () => {
  const data = prng(5, 300_000)
  const want = chunkBytes(data, SMALL).map(digest)
  const c = new Chunker(SMALL)
  const buf = new Uint8Array(777)
  const got: string[] = []
  for (let off = 0; off < data.length; off += buf.length) {
    const piece = data.subarray(off, off + buf.length)
    buf.set(piece)
    for (const chunk of c.push(buf.subarray(0, piece.length))) got.push(digest(chunk))
    buf.fill(0xaa)
  }
  for (const chunk of c.finish()) got.push(digest(chunk))
  assert.deepEqual(got, want)
})

test('boundaries do not depend on where the bytes sit in memory', () => {
  const big = prng(21, 600_000)
  for (let k = 0; k < 8; k++) {
    const view = big.subarray(k)
    const copy = Uint8Array.from(view)
    assert.deepEqual(cutPoints(view, SMALL), cutPoints(copy, SMALL), `offset ${k}`)
    assert.deepEqual(cutPoints(view), cutPoints(copy), `offset ${k}`)
    const buf = Buffer.from(big.buffer, big.byteOffset + k, big.length - k)
    assert.deepEqual(cutPoints(buf, SMALL), cutPoints(copy, SMALL), `Buffer offset ${k}`)
  }
})

test('a chunker is reusable after finish', () => {
  const data = prng(11, 100_000)
  const c = new Chunker(SMALL)
  const first = [...c.push(data), ...c.finish()]
  const second = [...c.push(data.subarray(0, 5000)), ...c.push(data.subarray(5000)), ...c.finish()]
  assert.deepEqual(lengths(first), lengths(second))
  assert.deepEqual(lengths(first), lengths(chunkBytes(data, SMALL)))
})

test('boundaries resynchronise after an insertion or deletion near the start', () => {
  const size = 4 << 20
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 0x7fffffff }),
    fc.integer({ min: 0, max: 65536 }),
    fc.boolean(),
    fc.uint8Array({ minLength: 1, maxLength: 64 }),
    (seed, at, insert, bytes) => {
      const data = prng(seed, size)
      const edited = insert
        ? Buffer.concat([data.subarray(0, at), bytes, data.subarray(at)])
        : Buffer.concat([data.subarray(0, at), data.subarray(at + bytes.length)])
      const before = chunkBytes(data, SMALL)
      const after = chunkBytes(edited, SMALL)
      const known = new Set(before.map(digest))
      let start = 0
      let later = 0
      let shared = 0
      for (const chunk of after) {
        const end = start + chunk.length
        if (end <= at) {
          assert.ok(known.has(digest(chunk)), 'a chunk before the edit changed')
        } else {
          later++
          if (known.has(digest(chunk))) shared++
        }
        start = end
      }
      assert.ok(later > 500)
      assert.ok(shared / later >= 0.8, `only ${shared} of ${later} chunks after the edit are shared`)
      assert.ok(later - shared <= 12, `${later - shared} chunks changed after the edit`)
    }
  ), { numRuns: 12 })
})

test('mean chunk size with the defaults is near avg', () => {
  const data = prng(3, 16 << 20)
  const n = cutPoints(data).length
  const mean = data.length / n
  assert.ok(mean > 56 * 1024 && mean < 96 * 1024, `mean chunk ${mean}`)
})

test('bad options are EBADARG', () => {
  const bad: ChunkingOptions[] = [
    { min: 4096, avg: 4096, max: 16384 },
    { min: 1024, avg: 16384, max: 16384 },
    { min: 8, avg: 32, max: 128 },
    { min: 1.5, avg: 4096, max: 16384 },
    { min: -1, avg: 4096, max: 16384 },
    { min: 1024, avg: Number.NaN, max: 16384 },
    { min: 1024, avg: 4096, max: 2 ** 31 }
  ]
  for (const opts of bad) {
    assert.throws(() => new Chunker(opts), isBadArg, JSON.stringify(opts))
    assert.throws(() => cutPoints(new Uint8Array(10), opts), isBadArg, JSON.stringify(opts))
  }
})
