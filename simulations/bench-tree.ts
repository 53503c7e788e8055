/**
 * Decoding and encoding a whole image tree, next to the general DAG-CBOR decoder over the same
 * blocks. A deploy decodes (and checks) every tree block before its first piece moves, in a
 * process that has not run that code yet, so the first pass counts as much as the warm ones.
 *
 *   node simulations/bench-tree.ts [DIR]     (default: the cached Debian root's /usr)
 *
 * Captures DIR into a scratch store, then in fresh processes: the first pass (cold) and the
 * median of five more (warm) of `dagCbor.decode` (the baseline), `decodeTree` (validation and
 * the canonical-encoding check included), and the tree encoders: the direct one the agent uses
 * and the general DAG-CBOR encoder, over the decoded entries. The encoders' processes decode the
 * tree first, and decoding runs the direct encoder once per block: its "first pass" is not cold.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { ImageStore } from '../node/image/image-store.ts'
import { capture } from '../node/image/capture.ts'
import { loadTree, type DirNode } from '../node/tree/tree-loader.ts'
import { decodeTree, encodeTree, encodeTreeGeneric, type TreeEntry } from '../protocols/tree.ts'

const DEFAULT_DIR = '/var/cache/imgmesh-test/bookworm-minbase/usr'
const WARM_RUNS = 5
const MODES = ['dagCbor.decode', 'decodeTree', 'encodeTree (direct)', 'encodeTree (general)'] as const
type Mode = typeof MODES[number]

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]
}

function cpuMs (fn: () => void): number {
  const c0 = process.cpuUsage()
  fn()
  const c = process.cpuUsage(c0)
  return (c.user + c.system) / 1000
}

async function treeBlocks (store: ImageStore, root: CID): Promise<Uint8Array[]> {
  const node = await loadTree(store.blocks, root)
  const out: Uint8Array[] = []
  const walk = async (n: DirNode): Promise<void> => {
    out.push(await store.blocks.get(n.cid))
    for (const c of n.children.values()) await walk(c)
  }
  await walk(node)
  return out
}

/** In a fresh process: one mode, first pass and warm passes, as JSON on stdout. */
async function measure (storeDir: string, root: string, mode: Mode): Promise<void> {
  const store = await ImageStore.open(storeDir)
  const blocks = await treeBlocks(store, CID.parse(root))
  let entries: TreeEntry[][] = []
  if (mode.startsWith('encodeTree')) entries = blocks.map(b => decodeTree(b))
  const run = (): void => {
    switch (mode) {
      case 'dagCbor.decode': for (const b of blocks) dagCbor.decode(b); break
      case 'decodeTree': for (const b of blocks) decodeTree(b); break
      case 'encodeTree (direct)': for (const e of entries) encodeTree(e); break
      case 'encodeTree (general)': for (const e of entries) encodeTreeGeneric(e); break
    }
  }
  const first = cpuMs(run)
  const warm = Array.from({ length: WARM_RUNS }, () => cpuMs(run))
  process.stdout.write(JSON.stringify({ first, warm: median(warm), blocks: blocks.length, bytes: blocks.reduce((s, b) => s + b.length, 0) }) + '\n')
}

async function main (): Promise<void> {
  if (process.argv[2] === '--measure') { await measure(process.argv[3], process.argv[4], process.argv[5] as Mode); return }
  const dir = process.argv[2] ?? DEFAULT_DIR
  if (!existsSync(dir)) throw new Error(`${dir} does not exist (give a directory, or build the cached Debian root with bench:capture)`)
  const scratch = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'imgmesh-bench-tree-'))
  try {
    const store = await ImageStore.open(scratch)
    const r = await capture(store, { source: dir, image: 'bench' })
    const self = fileURLToPath(import.meta.url)
    const results = new Map<Mode, { first: number, warm: number, blocks: number, bytes: number }>()
    for (const mode of MODES) {
      const p = spawnSync(process.execPath, [self, '--measure', scratch, r.tree, mode], { encoding: 'utf8', timeout: 120_000 })
      if (p.status !== 0) throw new Error(`${mode}: ${p.stderr}`)
      results.set(mode, JSON.parse(p.stdout))
    }
    const base = results.get('dagCbor.decode')!
    process.stdout.write(`${dir}: ${r.entries} entries in ${base.blocks} tree blocks, ${base.bytes} bytes; CPU ms per whole tree (fresh process)\n\n`)
    process.stdout.write('| | first pass | × baseline | warm (median of 5) | × baseline |\n|---|---:|---:|---:|---:|\n')
    for (const [mode, m] of results) {
      process.stdout.write(`| ${mode}${mode === 'dagCbor.decode' ? ' (baseline)' : ''} | ${m.first.toFixed(1)} | ${(m.first / base.first).toFixed(2)} | ${m.warm.toFixed(1)} | ${(m.warm / base.warm).toFixed(2)} |\n`)
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
}

await main()
