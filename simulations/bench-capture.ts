/**
 * npm run bench:capture — capture and deploy throughput on real trees, next to baselines run in
 * the same process on the same data: `casync make` (capture and dedup), `tar -c | sha256sum`
 * (the I/O + hash floor), and `tar -x` / `rsync -a` into an empty target (deploy).
 *
 *   npm run bench:capture -- [--runs 3] [--big-mb 1024] [--trees debian,big] [--out results/bench-capture.json]
 *
 * Trees: the debootstrap Debian root, and a ≥1 GiB tree (the Debian root plus large files of
 * pseudo-random data), both built once and cached under /var/cache/imgmesh-test. Page cache is
 * warm for every tool (each reads the tree once before timing). Medians of --runs runs.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, mkdir, writeFile, readdir, readFile, appendFile, stat } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join, dirname } from 'node:path'
import { tmpdir } from 'node:os'
import { parseArgs } from 'node:util'
import { ImageStore } from '../node/image/image-store.ts'
import { capture } from '../node/image/capture.ts'
import { deploy } from '../node/target/deploy.ts'
import { debianRoot, ensureTool } from '../test/support/debian-root.ts'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    'big-mb': { type: 'string', default: '1024' },
    trees: { type: 'string', default: 'debian,big' },
    out: { type: 'string', default: 'results/bench-capture.json' }
  }
})
const RUNS = Number(values.runs)
const BIG_MB = Number(values['big-mb'])

function sh (cmd: string, cwd?: string): number {
  const t0 = process.hrtime.bigint()
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { cwd, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr.toString()}`)
  return Number(process.hrtime.bigint() - t0) / 1e9
}

function du (path: string): number {
  const r = spawnSync('du', ['-sb', path], { encoding: 'utf8' })
  return Number(r.stdout.split('\t')[0])
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function timed<T> (fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint()
  const v = await fn()
  return [Number(process.hrtime.bigint() - t0) / 1e9, v]
}

function pseudoRandom (seed: string, length: number): Buffer {
  const out = Buffer.alloc(length)
  let pos = 0
  let i = 0
  while (pos < length) pos += createHash('sha512').update(`${seed}:${i++}`).digest().copy(out, pos)
  return out
}

async function bigTree (deb: string): Promise<string> {
  const dir = `/var/cache/imgmesh-test/big-tree-${BIG_MB}`
  if (existsSync(join(dir, '.complete'))) return dir
  await rm(dir, { recursive: true, force: true })
  await mkdir(dirname(dir), { recursive: true })
  sh(`cp -a ${deb} ${dir}`)
  let have = du(dir)
  const target = BIG_MB * 1024 * 1024
  await mkdir(join(dir, 'srv/data'), { recursive: true })
  for (let i = 0; have < target && i < 10_000; i++) {
    const size = Math.min(target - have, (8 + (i % 5) * 12) * 1024 * 1024)
    // Half random, half text-like repeated content: some dedup and compression, like real data.
    const part = i % 2 === 0 ? pseudoRandom(`big${i}`, size) : Buffer.from(pseudoRandom(`big${i}`, size >> 4).toString('base64').repeat(12).slice(0, size))
    await writeFile(join(dir, `srv/data/blob-${i}.bin`), part)
    have += size
  }
  await writeFile(join(dir, '.complete'), '')
  return dir
}

/** Changes about 5% of the files of a copy: appended lines to small ones, edits in the middle of big ones. */
async function changeFivePercent (dir: string): Promise<number> {
  const files: string[] = []
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.isFile()) files.push(p)
    }
  }
  await walk(dir)
  files.sort()
  let changed = 0
  for (let i = 0; i < files.length; i += 20) {
    const st = await stat(files[i])
    if (st.size > 1024 * 1024) {
      const buf = await readFile(files[i])
      buf.write('edited in the middle', Math.floor(buf.length / 2))
      await writeFile(files[i], buf)
    } else {
      await appendFile(files[i], `\n# changed by the benchmark ${i}\n`)
    }
    changed++
  }
  return changed
}

interface Row { tree: string, bytes: number, files: number, [k: string]: number | string }

async function benchTree (name: string, tree: string): Promise<Row> {
  const bytes = du(tree)
  const work = await mkdtemp(join(tmpdir(), 'imgmesh-bench-'))
  const m: Record<string, number[]> = {}
  const add = (k: string, v: number): void => { (m[k] ??= []).push(v) }
  let files = 0
  try {
    sh(`tar -C ${tree} -cf - . > /dev/null`) // warm the page cache
    for (let run = 0; run < RUNS; run++) {
      // imgmesh capture into an empty store
      const data = join(work, `data${run}`)
      const store = await ImageStore.open(data)
      const [tCap, cap] = await timed(async () => await capture(store, { source: tree, image: 'bench', defaultExcludes: false }))
      files = cap.files
      add('imgmeshCaptureS', tCap)
      add('imgmeshStore', du(join(data, 'blocks')))
      const v1 = await store.getVersion((await store.refs.head('bench'))!.cid)
      add('imgmeshChunks', v1.body.stats.chunks)
      // casync make into an empty store
      const cstore = join(work, `castr${run}`)
      add('casyncMakeS', sh(`casync make --store=${cstore} ${join(work, `idx${run}.caidx`)} ${tree}`))
      add('casyncStore', du(cstore))
      // floor: read everything and hash it once
      add('tarSha256S', sh(`tar -C ${tree} -cf - . | sha256sum`))
      // deploy into an empty target
      const tgt = join(work, `tgt${run}`)
      const [tDep] = await timed(async () => await deploy(store, await store.resolve('bench'), { target: tgt }))
      add('imgmeshDeployS', tDep)
      const tarFile = join(work, 'tree.tar')
      if (run === 0) sh(`tar -C ${tree} -cf ${tarFile} .`)
      const tx = join(work, `tarx${run}`)
      await mkdir(tx)
      add('tarExtractS', sh(`tar -C ${tx} -xpf ${tarFile}`))
      add('rsyncS', sh(`rsync -aHAX ${tree}/ ${join(work, `rs${run}`)}/`))
      await rm(tx, { recursive: true, force: true })
      await rm(join(work, `rs${run}`), { recursive: true, force: true })
      await rm(tgt, { recursive: true, force: true })
      // second version with ~5% of files changed: what each tool stores anew
      if (run === 0) {
        const copy = join(work, 'copy')
        sh(`cp -a ${tree} ${copy}`)
        await changeFivePercent(copy)
        const s2 = await ImageStore.open(join(work, 'data-v2'))
        await capture(s2, { source: tree, image: 'bench', defaultExcludes: false })
        const before = du(join(work, 'data-v2', 'blocks'))
        const v2 = await capture(s2, { source: copy, image: 'bench', defaultExcludes: false })
        add('imgmeshV2NewBytes', v2.newBytes)
        add('imgmeshV2StoreGrowth', du(join(work, 'data-v2', 'blocks')) - before)
        const c2 = join(work, 'castr-v2')
        sh(`casync make --store=${c2} ${join(work, 'v1.caidx')} ${tree}`)
        const cb = du(c2)
        sh(`casync make --store=${c2} ${join(work, 'v2.caidx')} ${copy}`)
        add('casyncV2StoreGrowth', du(c2) - cb)
        await rm(copy, { recursive: true, force: true })
      }
      await rm(data, { recursive: true, force: true })
      await rm(cstore, { recursive: true, force: true })
    }
  } finally {
    await rm(work, { recursive: true, force: true })
  }
  const row: Row = { tree: name, bytes, files }
  for (const [k, xs] of Object.entries(m)) row[k] = median(xs)
  return row
}

const deb = debianRoot()
if (deb === null) { console.error('needs root and debootstrap to build the Debian tree'); process.exit(2) }
if (!ensureTool('casync')) { console.error('casync is missing (apt-get install casync)'); process.exit(2) }
const rows: Row[] = []
for (const t of String(values.trees).split(',')) {
  const path = t === 'debian' ? deb : t === 'big' ? await bigTree(deb) : t
  rows.push(await benchTree(t, path))
}
const mbps = (bytes: number, s: number): string => (bytes / s / 1e6).toFixed(0)
const MB = (b: number): string => (b / 1e6).toFixed(1)
console.log(`runs: ${RUNS} (medians), ${new Date().toISOString()}`)
for (const r of rows) {
  const n = (k: string): number => Number(r[k])
  console.log(`\n== ${r.tree}: ${MB(r.bytes)} MB, ${r.files} files`)
  console.log(`capture   imgmesh ${n('imgmeshCaptureS').toFixed(2)}s (${mbps(r.bytes, n('imgmeshCaptureS'))} MB/s)  casync make ${n('casyncMakeS').toFixed(2)}s (${mbps(r.bytes, n('casyncMakeS'))} MB/s)  tar|sha256 ${n('tarSha256S').toFixed(2)}s  → imgmesh/casync time ${(n('imgmeshCaptureS') / n('casyncMakeS')).toFixed(2)}x, imgmesh/floor ${(n('imgmeshCaptureS') / n('tarSha256S')).toFixed(2)}x`)
  console.log(`store     imgmesh ${MB(n('imgmeshStore'))} MB in ${n('imgmeshChunks')} chunks  casync ${MB(n('casyncStore'))} MB (compressed)`)
  console.log(`v2 (5%)   imgmesh new ${MB(n('imgmeshV2NewBytes'))} MB (store +${MB(n('imgmeshV2StoreGrowth'))} MB)  casync store +${MB(n('casyncV2StoreGrowth'))} MB`)
  console.log(`deploy    imgmesh ${n('imgmeshDeployS').toFixed(2)}s  tar -x ${n('tarExtractS').toFixed(2)}s  rsync -aHAX ${n('rsyncS').toFixed(2)}s  → imgmesh/rsync ${(n('imgmeshDeployS') / n('rsyncS')).toFixed(2)}x, imgmesh/tar ${(n('imgmeshDeployS') / n('tarExtractS')).toFixed(2)}x`)
}
await mkdir(dirname(String(values.out)), { recursive: true })
await writeFile(String(values.out), JSON.stringify({ date: new Date().toISOString(), runs: RUNS, rows }, null, 2))
