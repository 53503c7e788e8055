/**
 * Packs over a series of updates: what a client deploying the newest version from scratch
 * fetches, next to what it would fetch if the same tree were captured afresh (the baseline: no
 * dead bytes, no small packs), and what each update adds.
 *
 *   npm run bench:packs -- [--tree DIR] [--rounds 10] [--share 0.05] [--seed 1] [--work DIR]
 *
 * The tree (default: the cached Debian root's /usr/share, built by debootstrap on first use) is
 * copied; round 0 captures it; each later round rewrites a share of its small files (512 B to
 * 64 KiB, the packed ones) with new bytes of the same size, chosen by the seed, and captures
 * again into the same store. Per round: blocks and bytes of the version's piece list, the same
 * for a fresh capture of that tree into a scratch store, their ratio, and the update's new
 * chunks (diffTrees against the round before).
 */
import { cpSync, rmSync, readdirSync, lstatSync, writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { cpus } from 'node:os'
import { randomBytes } from 'node:crypto'
import { debianRoot } from '../test/support/debian-root.ts'
import { imgmeshJson } from '../test/support/cli.ts'
import { ImageStore } from '../node/image/image-store.ts'
import { pieceList, type DirNode } from '../node/tree/tree-loader.ts'
import { diffTrees } from '../node/image/version-diff.ts'

const { values } = parseArgs({
  options: {
    tree: { type: 'string' },
    rounds: { type: 'string', default: '10' },
    share: { type: 'string', default: '0.05' },
    seed: { type: 'string', default: '1' },
    work: { type: 'string', default: '/dev/shm/imgmesh-bench-packs' }
  }
})
const rounds = Math.max(1, Math.min(50, Number(values.rounds)))
const share = Number(values.share)
if (!(share > 0 && share <= 1)) { console.error('bench-packs: --share is in (0, 1]'); process.exit(2) }
let source = values.tree
if (source === undefined) {
  const deb = debianRoot()
  if (deb === null) { console.error('bench-packs: no --tree given and no Debian root (needs root and debootstrap)'); process.exit(2) }
  source = join(deb, 'usr/share')
}

const work = values.work
rmSync(work, { recursive: true, force: true })
mkdirSync(work, { recursive: true })
const src = join(work, 'src')
cpSync(source, src, { recursive: true, verbatimSymlinks: true })

const small: string[] = []
const walk = (dir: string): void => {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name)
    const st = lstatSync(p)
    if (st.isDirectory()) walk(p)
    else if (st.isFile() && st.nlink === 1 && st.size > 512 && st.size <= 64 * 1024) small.push(p)
  }
}
walk(src)

let state = Number(values.seed) >>> 0 || 1
/** xorshift32: the same files change for the same seed. */
const random = (): number => { state ^= state << 13; state >>>= 0; state ^= state >>> 17; state ^= state << 5; state >>>= 0; return state / 2 ** 32 }

async function capture (data: string, image: string): Promise<{ tree: DirNode, blocks: number, bytes: number }> {
  await imgmeshJson(['capture', src, '--image', image, '--no-default-excludes', '--data-dir', data])
  const store = await ImageStore.open(data)
  try {
    const tree = await store.loadTree((await store.resolve(image)).version.body.tree)
    const pieces = pieceList(tree)
    return { tree, blocks: pieces.length, bytes: pieces.reduce((a, p) => a + p.length, 0) }
  } finally {
    store.blocks.close()
  }
}

console.log(`bench-packs: ${source}, ${small.length} small files, ${rounds} rounds rewriting ${(share * 100).toFixed(1)}% of them each (seed ${values.seed}); ${cpus().length} × ${cpus()[0]?.model ?? '?'}`)
console.log('round  changed  blocks  MB fetched  fresh capture: blocks  MB  fetched/fresh  update: new chunks  new MB')
let prev: DirNode | null = null
for (let round = 0; round <= rounds; round++) {
  let changed = 0
  if (round > 0) {
    for (const p of small) {
      if (random() >= share) continue
      writeFileSync(p, randomBytes(lstatSync(p).size))
      changed++
    }
  }
  const kept = await capture(join(work, 'data'), 'packs')
  const freshDir = join(work, 'fresh')
  rmSync(freshDir, { recursive: true, force: true })
  const fresh = await capture(freshDir, 'fresh')
  const d = prev === null ? null : diffTrees(prev, kept.tree)
  console.log([
    String(round).padStart(5), String(changed).padStart(8), String(kept.blocks).padStart(7), (kept.bytes / 1e6).toFixed(2).padStart(11),
    String(fresh.blocks).padStart(22), (fresh.bytes / 1e6).toFixed(2).padStart(6), (kept.bytes / fresh.bytes).toFixed(3).padStart(14),
    (d === null ? '-' : String(d.newChunks)).padStart(19), (d === null ? '-' : (d.newBytes / 1e6).toFixed(2)).padStart(7)
  ].join('  '))
  prev = kept.tree
}
rmSync(work, { recursive: true, force: true })
