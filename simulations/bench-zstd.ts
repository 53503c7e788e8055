/**
 * Blocks compressed for the wire, alone: CPU per block to compress and decompress 64 KiB chunks
 * of real files with the agent's kept zstd contexts (node/exchange/zblocks.ts through
 * node/native/zstd.c) next to node:zlib's one-shot calls (a new context each), on the calling
 * thread and in the thread pool; same blocks, same level, rounds interleaved. Decompression has
 * no thread-pool variant (the agent never used one).
 *
 *   node simulations/bench-zstd.ts [--dir /usr/lib] [--blocks 1000] [--runs 5]
 */
import { parseArgs } from 'node:util'
import { readdirSync, readFileSync, lstatSync } from 'node:fs'
import { join } from 'node:path'
import { cpus } from 'node:os'
import { zstdCompress, zstdCompressSync, zstdDecompressSync, constants as zc } from 'node:zlib'
import { compressBlock, decompressBlock } from '../node/exchange/zblocks.ts'
import { median } from './bench-transfer.ts'

const { values: v } = parseArgs({ options: { dir: { type: 'string', default: '/usr/lib' }, blocks: { type: 'string', default: '1000' }, runs: { type: 'string', default: '5' } } })
const want = Math.max(1, Number(v.blocks))
const runs = Math.max(1, Number(v.runs))
const BLOCK = 64 * 1024

/** 64 KiB slices of the regular files under dir (depth first, sorted), until there are enough. */
function collect (dir: string, out: Buffer[]): void {
  let names: string[]
  try { names = readdirSync(dir).sort() } catch { return }
  for (const name of names) {
    if (out.length >= want) return
    const p = join(dir, name)
    const st = lstatSync(p, { throwIfNoEntry: false })
    if (st === undefined) continue
    if (st.isDirectory()) collect(p, out)
    else if (st.isFile() && st.size >= BLOCK) {
      const b = readFileSync(p)
      for (let o = 0; o + BLOCK <= b.length && out.length < want; o += BLOCK) out.push(b.subarray(o, o + BLOCK))
    }
  }
}

const blocks: Buffer[] = []
collect(v.dir, blocks)
if (blocks.length === 0) { process.stderr.write(`no file of ${BLOCK} bytes or more under ${v.dir}\n`); process.exit(1) }

/** CPU ms of the whole process (thread pool included) while fn runs. */
async function cpuMs (fn: () => void | Promise<void>): Promise<number> {
  const t0 = process.cpuUsage()
  await fn()
  const u = process.cpuUsage(t0)
  return (u.user + u.system) / 1000
}

/** node:zlib's asynchronous call: a new context on a thread-pool thread for every block. */
async function zlibInPool (b: Buffer): Promise<void> {
  await new Promise<void>((resolve, reject) => { zstdCompress(b, zlibOpts(b), (err) => { if (err !== null) reject(err); else resolve() }) })
}

const frames = await Promise.all(blocks.map(async b => await compressBlock(b) ?? zstdCompressSync(b, { pledgedSrcSize: b.length })))
const zlibOpts = (b: Buffer): { pledgedSrcSize: number, params: Record<number, number> } => ({ pledgedSrcSize: b.length, params: { [zc.ZSTD_c_compressionLevel]: 3 } })
const zlibDecompress = (): void => { for (const z of frames) zstdDecompressSync(z) }
const methods: Array<[string, () => void | Promise<void>, () => void]> = [
  ['node:zlib, a context per call', () => { for (const b of blocks) zstdCompressSync(b, zlibOpts(b)) }, zlibDecompress],
  ['node:zlib in the thread pool', async () => { for (const b of blocks) await zlibInPool(b) }, zlibDecompress],
  ['imgmesh, contexts kept', async () => { for (const b of blocks) await compressBlock(b) }, () => { for (const z of frames) decompressBlock(z) }]
]
const samples = methods.map(() => ({ c: [] as number[], d: [] as number[] }))
for (let r = 0; r < runs + 1; r++) {
  for (const [i, [, c, d]] of methods.entries()) {
    const cm = await cpuMs(c)
    const dm = await cpuMs(d)
    if (r > 0) { samples[i].c.push(cm / blocks.length); samples[i].d.push(dm / blocks.length) } // round 0 warms up
  }
}
const raw = blocks.length * BLOCK
const zbytes = frames.reduce((a, z) => a + z.length, 0)
process.stdout.write(`zstd level 3: ${blocks.length} blocks of 64 KiB from ${v.dir} (compressed to ${(zbytes / raw).toFixed(3)} of their size), ${runs} runs, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Node ${process.version}\n\n`)
process.stdout.write('CPU ms per block, median              compress                       decompress\n')
const base = { c: median(samples[0].c), d: median(samples[0].d) }
methods.forEach(([name], i) => {
  const c = median(samples[i].c)
  const d = median(samples[i].d)
  process.stdout.write(`  ${name.padEnd(30)} ${c.toFixed(3)} (ratio ${(c / base.c).toFixed(2)})            ${d.toFixed(3)} (ratio ${(d / base.d).toFixed(2)})\n`)
})
