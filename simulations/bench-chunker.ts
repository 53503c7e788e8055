/**
 * Chunking speed next to SHA-256 speed over the same 256 MiB of pseudo-random data, one core.
 * Capture hashes every byte it chunks, so the ratio says how much chunking adds to hashing.
 *
 *   node simulations/bench-chunker.ts [MiB]
 */
import { createHash } from 'node:crypto'
import { Chunker, DEFAULT_CHUNKING, cutPoints } from '../node/chunk/chunker.ts'

const MIB = 1024 * 1024
const RUNS = 5
const READ = MIB

/** xorshift128+ filling 32-bit words: fast and the same data on every run. */
function pseudoRandom (bytes: number): Uint8Array {
  const out = new Uint8Array(bytes)
  const words = new Uint32Array(out.buffer, 0, bytes >>> 2)
  let a = 0x9e3779b9
  let b = 0x243f6a88
  let c = 0xb7e15162
  let d = 0x5a827999
  for (let i = 0; i < words.length; i++) {
    const t = a ^ (a << 11)
    a = b
    b = c
    c = d
    d = (d ^ (d >>> 19) ^ t ^ (t >>> 8)) >>> 0
    words[i] = d
  }
  return out
}

function median (xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y)
  return s[s.length >> 1]
}

function measure (name: string, bytes: number, fn: () => number): number {
  const rates: number[] = []
  let result = 0
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint()
    result = fn()
    const s = Number(process.hrtime.bigint() - t0) / 1e9
    rates.push(bytes / 1e6 / s)
  }
  const m = median(rates)
  console.log(`${name.padEnd(28)} ${m.toFixed(0).padStart(6)} MB/s  (runs: ${rates.map(x => x.toFixed(0)).join(' ')})  [${result}]`)
  return m
}

const mib = Number(process.argv[2] ?? 256)
const size = mib * MIB
const data = pseudoRandom(size)
console.log(`node ${process.version}, ${mib} MiB pseudo-random data, median of ${RUNS} runs, chunking ${JSON.stringify(DEFAULT_CHUNKING)}`)

const oneShot = measure('cutPoints (one buffer)', size, () => cutPoints(data).length)
const streaming = measure('Chunker.push (1 MiB reads)', size, () => {
  const c = new Chunker()
  let n = 0
  for (let off = 0; off < size; off += READ) n += c.push(data.subarray(off, off + READ)).length
  return n + c.finish().length
})
measure('Chunker.push (1 MiB Buffers)', size, () => {
  const c = new Chunker()
  let n = 0
  for (let off = 0; off < size; off += READ) n += c.push(Buffer.from(data.buffer, data.byteOffset + off, Math.min(READ, size - off))).length
  return n + c.finish().length
})
const sha = measure('sha256 (1 MiB updates)', size, () => {
  const h = createHash('sha256')
  for (let off = 0; off < size; off += READ) h.update(data.subarray(off, off + READ))
  return h.digest()[0]
})
const both = measure('chunk + sha256 per chunk', size, () => {
  const c = new Chunker()
  let n = 0
  for (let off = 0; off < size; off += READ) {
    for (const chunk of c.push(data.subarray(off, off + READ))) {
      createHash('sha256').update(chunk).digest()
      n++
    }
  }
  for (const chunk of c.finish()) {
    createHash('sha256').update(chunk).digest()
    n++
  }
  return n
})

const chunks = cutPoints(data).length
console.log(`mean chunk ${(size / chunks / 1024).toFixed(1)} KiB over ${chunks} chunks`)
console.log(`chunking / sha256: one-shot ${(oneShot / sha).toFixed(2)}x, streaming ${(streaming / sha).toFixed(2)}x; chunk+hash pipeline ${both.toFixed(0)} MB/s`)
