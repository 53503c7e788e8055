/**
 * Measures how much the agent's wire compression shrinks the testbed image's blocks, for the
 * simulator's `--wire zstd` (simulations/sim/wire-ratios.json).
 *
 *   node simulations/sim/wire-ratios.ts [--image DIR] [--image-mb 64] [--out FILE]
 *
 * It takes the testbed's image (the same slice of the cached Debian root's /usr, or of DIR, as
 * `npm run testbed -- --image-mb N`), captures it as the agent does (chunks, small files in
 * packs) into a scratch store, and passes each piece of the version (its distinct blocks, in
 * tree order) through the agent's own `compressBlock` (zstd level 3; null when it does not save
 * 10 %, in which case the block travels plain). The file holds the wire bytes of every block as a
 * share of its size, as 256 quantiles weighted by bytes, plus the image's overall share, and
 * every block's bytes and wire bytes in the piece list's order, for `npm run sim -- --pieces
 * testbed`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { ImageStore } from '../../node/image/image-store.ts'
import { capture } from '../../node/image/capture.ts'
import { pieceList } from '../../node/tree/tree-loader.ts'
import { compressBlock } from '../../node/exchange/zblocks.ts'
import { prepareImage } from '../testbed/image.ts'
import { WIRE_RATIOS_FILE, type WireRatios } from './pieces.ts'

const QUANTILES = 256

export async function measureWireRatios (dir: string, source: string): Promise<WireRatios> {
  const blocks: Array<{ size: number, wire: number }> = []
  const data = mkdtempSync('/var/tmp/imgmesh-wire-store-')
  const store = await ImageStore.open(data)
  try {
    await capture(store, { source: dir, image: 'wire', defaultExcludes: false, compress: false })
    const tree = await store.loadTree((await store.resolve('wire')).version.body.tree)
    for (const { cid } of pieceList(tree)) {
      const block = await store.blocks.get(cid)
      const z = await compressBlock(block)
      blocks.push({ size: block.length, wire: z === null ? block.length : z.length })
    }
  } finally {
    store.blocks.close()
    rmSync(data, { recursive: true, force: true })
  }
  if (blocks.length === 0) throw new Error(`no file data in ${dir}`)
  const pieces = blocks.map(b => [b.size, b.wire] as [number, number])
  blocks.sort((a, b) => a.wire / a.size - b.wire / b.size)
  const total = blocks.reduce((s, b) => s + b.size, 0)
  const wire = blocks.reduce((s, b) => s + b.wire, 0)
  const plain = blocks.filter(b => b.wire === b.size).reduce((s, b) => s + b.size, 0)
  const quantiles: number[] = []
  let k = 0
  let upTo = 0
  for (const b of blocks) {
    upTo += b.size
    while (k < QUANTILES && (k + 0.5) / QUANTILES * total <= upTo) { quantiles.push(Math.round(b.wire / b.size * 1e4) / 1e4); k++ }
  }
  while (quantiles.length < QUANTILES) quantiles.push(1)
  return { source, imageBytes: total, blocks: blocks.length, overall: wire / total, plainShare: plain / total, quantiles, pieces }
}

async function main (): Promise<void> {
  const { values: v } = parseArgs({
    options: {
      image: { type: 'string' },
      'image-mb': { type: 'string', default: '64' },
      out: { type: 'string', default: WIRE_RATIOS_FILE },
      help: { type: 'boolean', default: false }
    }
  })
  if (v.help === true) {
    process.stdout.write('usage: node simulations/sim/wire-ratios.ts [--image DIR] [--image-mb 64] [--out FILE]\n')
    return
  }
  const mib = Number(v['image-mb'])
  if (!Number.isInteger(mib) || mib < 0) throw new Error('--image-mb is a whole number of MiB')
  const scratch = mkdtempSync('/var/tmp/imgmesh-wire-')
  try {
    const image = await prepareImage({ source: v.image ?? null, sliceMiB: mib, dest: join(scratch, 'image') })
    const what = `${v.image ?? 'the cached Debian root\'s /usr'}, ${mib > 0 ? `${mib} MiB slice` : 'all'} (as the testbed), captured as the agent does (chunks and packs), the agent's compressBlock`
    const r = await measureWireRatios(image.dir, what)
    const { quantiles, pieces, ...head } = r
    writeFileSync(v.out, JSON.stringify(head, null, 1).replace(/\n}$/, `,\n "quantiles": ${JSON.stringify(quantiles)},\n "pieces": ${JSON.stringify(pieces)}\n}\n`))
    process.stdout.write(`${r.blocks} blocks, ${r.imageBytes} bytes: wire ${(r.overall * 100).toFixed(1)} % of the block bytes, ${(r.plainShare * 100).toFixed(1)} % of them sent plain; ${v.out}\n`)
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => { process.stderr.write(`wire-ratios: ${(err as Error).message}\n`); process.exitCode = 1 })
}
