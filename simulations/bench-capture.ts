/**
 * npm run bench:capture — capture and deploy throughput on real trees, next to baselines run in
 * the same process on the same data: `casync make` (capture and dedup), `tar -c | sha256sum`
 * (the I/O + hash floor), and `tar -x` / `rsync -aHAX` into an empty target (deploy).
 *
 *   npm run bench:capture -- [--runs 3] [--big-mb 1024] [--trees debian,big] [--inline 0,512,2048,4096]
 *                            [--work /var/tmp/imgmesh-bench] [--settle 0] [--keep] [--compare DIR,...]
 *                            [--out results/bench-capture.json]
 *
 * Trees: the debootstrap Debian root, and a ≥1 GiB tree (the Debian root plus large files of
 * pseudo-random and repetitive data), both built once and cached under /var/cache/imgmesh-test.
 * Page cache is warm for every tool (each reads the tree once before timing). Medians of --runs
 * runs; every run's figures are kept in the JSON output.
 *
 * Why the work directory is not /tmp and nothing is deleted until the end: the test machines'
 * ext4 has no journal, and without a journal ext4 will not reuse an inode freed in the last 60 s
 * (360 s while its inode table block is dirty, which any file created next to it makes it);
 * every file created scans past those inodes (`recently_deleted` in ext4_new_inode). Right
 * after a big tree was deleted, creating a file cost 0.5-0.9 ms instead of 25 µs here, and all
 * the tools measured create thousands of files. So every output is kept until all timings are
 * done (about 7 GB per run of the 1 GiB tree, 1.2 GB per run of the Debian tree); with
 * --settle S each tree's outputs are deleted after its runs, then the next waits S seconds
 * (370 to be safe). /tmp is where other test suites create and delete trees all the time; the
 * work root gets the ext4 top-directory flag (chattr +T), so each tree's outputs start in a
 * block group of their own.
 *
 * --compare DIR,...: other checkouts of imgmesh (e.g. `git archive COMMIT | tar -x -C DIR`, with
 * node_modules and node/native/build in place) whose capture and deploy are timed in the same
 * runs, alternating with this one's, for before/after figures under the same conditions.
 *
 * --inline N,N,...: extra capture-only runs of the Debian tree with other inline thresholds
 * (files up to N bytes kept in their tree block): store bytes, blocks and capture time.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, mkdir, writeFile, readdir, readFile, appendFile, stat } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join, dirname, resolve, basename } from 'node:path'
import { parseArgs } from 'node:util'
import { CID } from 'multiformats/cid'
import { ImageStore } from '../node/image/image-store.ts'
import { capture, INLINE_MAX } from '../node/image/capture.ts'
import { deploy } from '../node/target/deploy.ts'
import { debianRoot, ensureTool } from '../test/support/debian-root.ts'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    'big-mb': { type: 'string', default: '1024' },
    trees: { type: 'string', default: 'debian,big' },
    inline: { type: 'string', default: '' },
    work: { type: 'string', default: '/var/tmp/imgmesh-bench' },
    settle: { type: 'string', default: '0' },
    keep: { type: 'boolean', default: false },
    compare: { type: 'string', default: '' },
    out: { type: 'string', default: 'results/bench-capture.json' }
  }
})
const RUNS = Number(values.runs)
const BIG_MB = Number(values['big-mb'])
const SETTLE_S = Number(values.settle)
const INLINE_SIZES = String(values.inline).split(',').filter(s => s !== '').map(Number)
if (!(RUNS >= 1) || !(BIG_MB >= 1) || !(SETTLE_S >= 0) || INLINE_SIZES.some(n => !Number.isInteger(n) || n < 0)) {
  console.error('usage: bench-capture.ts [--runs N] [--big-mb MB] [--trees debian,big,DIR] [--inline N,N] [--work DIR] [--settle S] [--out FILE]')
  process.exit(2)
}

function sh (cmd: string, cwd?: string): number {
  const t0 = process.hrtime.bigint()
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { cwd, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr.toString()}`)
  return Number(process.hrtime.bigint() - t0) / 1e9
}

/** Apparent size in bytes of everything under path (du -sb: files and directories). */
function du (path: string): number {
  const r = spawnSync('du', ['-sb', path], { encoding: 'utf8' })
  return Number(r.stdout.split('\t')[0])
}

/** Regular files under path and the sum of their sizes (a store's blocks, without its directories). */
function filesIn (path: string): { count: number, bytes: number } {
  const r = spawnSync('bash', ['-c', `find ${path} -type f -printf '%s\\n' | awk '{ n++; s += $1 } END { printf "%d %d", n, s }'`], { encoding: 'utf8' })
  const [count, bytes] = r.stdout.trim().split(' ').map(Number)
  return { count: count ?? 0, bytes: bytes ?? 0 }
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

async function sleep (s: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, s * 1000))
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

type Runs = Record<string, number[]>

/** A capture + deploy implementation: this checkout's, or another's for --compare. */
interface Impl {
  label: string
  ImageStore: typeof ImageStore
  capture: typeof capture
  deploy: typeof deploy
}

async function loadImpl (dir: string): Promise<Impl> {
  const root = resolve(dir)
  const s = await import(join(root, 'node/image/image-store.ts')) as typeof import('../node/image/image-store.ts')
  const c = await import(join(root, 'node/image/capture.ts')) as typeof import('../node/image/capture.ts')
  const d = await import(join(root, 'node/target/deploy.ts')) as typeof import('../node/target/deploy.ts')
  return { label: basename(root), ImageStore: s.ImageStore, capture: c.capture, deploy: d.deploy }
}
interface Row { tree: string, bytes: number, files: number, changedFiles: number, medians: Record<string, number>, mins: Record<string, number>, runs: Runs }

const leftovers: string[] = []

/**
 * Removes a tree's outputs: at once, then a wait of --settle seconds, when --settle is given;
 * otherwise at the very end of the benchmark. Files created in a block group after a delete
 * make the inode table dirty again, and ext4 then counts a freed inode as recent for 360 s,
 * so a short wait is not enough: by default nothing is deleted until every timing is done.
 */
async function cleanUp (work: string): Promise<void> {
  if (SETTLE_S === 0) { leftovers.push(work); return }
  await rm(work, { recursive: true, force: true })
  sh('sync')
  console.error(`(waiting ${SETTLE_S} s for freed inodes to age: ext4 without a journal skips them on create)`)
  await sleep(SETTLE_S)
}

async function benchTree (name: string, tree: string, workRoot: string, others: Impl[]): Promise<Row> {
  const bytes = du(tree)
  const work = await mkdtemp(join(workRoot, `${name}-`))
  const m: Runs = {}
  const add = (k: string, v: number): void => { (m[k] ??= []).push(v) }
  let files = 0
  let changedFiles = 0
  try {
    sh(`tar -C ${tree} -cf - . > /dev/null`) // warm the page cache
    const tarFile = join(work, 'tree.tar')
    sh(`tar -C ${tree} -cf ${tarFile} .`)
    // Other implementations (--compare), each into its own empty store and target; before this
    // checkout's capture on odd runs, after it on even ones.
    const runOthers = async (run: number): Promise<void> => {
      for (const impl of others) {
        const d = join(work, `data-${impl.label}-${run}`)
        const st = await impl.ImageStore.open(d)
        const [tc] = await timed(async () => await impl.capture(st, { source: tree, image: 'bench', defaultExcludes: false }))
        add(`${impl.label}:captureS`, tc)
        const [td] = await timed(async () => await impl.deploy(st, await st.resolve('bench'), { target: join(work, `tgt-${impl.label}-${run}`) }))
        add(`${impl.label}:deployS`, td)
      }
    }
    for (let run = 0; run < RUNS; run++) {
      console.error(`${name}: run ${run + 1}/${RUNS}`)
      if (run % 2 === 1) await runOthers(run)
      // imgmesh capture into an empty store
      const data = join(work, `data${run}`)
      const store = await ImageStore.open(data)
      const [tCap, cap] = await timed(async () => await capture(store, { source: tree, image: 'bench', defaultExcludes: false }))
      files = cap.files
      add('imgmeshCaptureS', tCap)
      const blocks = filesIn(join(data, 'blocks'))
      add('imgmeshStoreBytes', blocks.bytes)
      add('imgmeshBlocks', blocks.count)
      const v1 = await store.getVersion((await store.refs.head('bench'))!.cid)
      add('imgmeshChunks', v1.body.stats.chunks)
      if (run % 2 === 0) await runOthers(run)
      // casync make into an empty store
      const cstore = join(work, `castr${run}`)
      add('casyncMakeS', sh(`casync make --store=${cstore} ${join(work, `idx${run}.caidx`)} ${tree}`))
      const cblocks = filesIn(cstore)
      add('casyncStoreBytes', cblocks.bytes)
      add('casyncChunks', cblocks.count)
      // floor: read everything and hash it once
      add('tarSha256S', sh(`tar -C ${tree} -cf - . | sha256sum`))
      // deploy into an empty target
      const tgt = join(work, `tgt${run}`)
      const [tDep] = await timed(async () => await deploy(store, await store.resolve('bench'), { target: tgt }))
      add('imgmeshDeployS', tDep)
      const tx = join(work, `tarx${run}`)
      await mkdir(tx)
      add('tarExtractS', sh(`tar -C ${tx} -xpf ${tarFile}`))
      add('rsyncS', sh(`rsync -aHAX ${tree}/ ${join(work, `rs${run}`)}/`))
      // second version with ~5% of files changed: what each tool stores anew
      if (run === 0) {
        const copy = join(work, 'copy')
        sh(`cp -a ${tree} ${copy}`)
        changedFiles = await changeFivePercent(copy)
        const s2 = await ImageStore.open(join(work, 'data-v2'))
        await capture(s2, { source: tree, image: 'bench', defaultExcludes: false })
        const before = filesIn(join(work, 'data-v2', 'blocks'))
        const v2 = await capture(s2, { source: copy, image: 'bench', defaultExcludes: false })
        const after = filesIn(join(work, 'data-v2', 'blocks'))
        add('imgmeshV2NewBytes', v2.newBytes)
        add('imgmeshV2StoreGrowth', after.bytes - before.bytes)
        add('imgmeshV2NewBlocks', after.count - before.count)
        const c2 = join(work, 'castr-v2')
        sh(`casync make --store=${c2} ${join(work, 'v1.caidx')} ${tree}`)
        const cb = filesIn(c2)
        sh(`casync make --store=${c2} ${join(work, 'v2.caidx')} ${copy}`)
        const ca = filesIn(c2)
        add('casyncV2StoreGrowth', ca.bytes - cb.bytes)
        add('casyncV2NewChunks', ca.count - cb.count)
      }
    }
  } finally {
    await cleanUp(work)
  }
  const medians: Record<string, number> = {}
  const mins: Record<string, number> = {}
  for (const [k, xs] of Object.entries(m)) { medians[k] = median(xs); mins[k] = Math.min(...xs) }
  return { tree: name, bytes, files, changedFiles, medians, mins, runs: m }
}

interface InlineRow { inlineMax: number, captureS: number, storeBytes: number, blocks: number, treeBlockBytes: number, v2Growth: number, v2NewBlocks: number, runs: number[] }

/** Capture only, with other inline thresholds: what the threshold does to the store, the time, and a second version's growth. */
async function benchInline (tree: string, workRoot: string): Promise<InlineRow[]> {
  const work = await mkdtemp(join(workRoot, 'inline-'))
  const rows: InlineRow[] = []
  try {
    const copy = join(work, 'copy')
    sh(`cp -a ${tree} ${copy}`)
    await changeFivePercent(copy)
    sh(`tar -C ${tree} -cf - . > /dev/null`)
    for (const inlineMax of INLINE_SIZES) {
      const times: number[] = []
      let storeBytes = 0
      let blocks = 0
      let treeBlockBytes = 0
      let v2Growth = 0
      let v2NewBlocks = 0
      for (let run = 0; run < RUNS; run++) {
        console.error(`inline ${inlineMax}: run ${run + 1}/${RUNS}`)
        const data = join(work, `data-${inlineMax}-${run}`)
        const store = await ImageStore.open(data)
        const [t, cap] = await timed(async () => await capture(store, { source: tree, image: 'bench', defaultExcludes: false, inlineMax }))
        times.push(t)
        const f = filesIn(join(data, 'blocks'))
        storeBytes = f.bytes
        blocks = f.count
        const v = await store.getVersion((await store.refs.head('bench'))!.cid)
        treeBlockBytes = f.bytes - v.body.stats.chunkBytes - (await store.blocks.get(CID.parse(cap.cid))).length
        if (run === 0) {
          await capture(store, { source: copy, image: 'bench', defaultExcludes: false, inlineMax })
          const g = filesIn(join(data, 'blocks'))
          v2Growth = g.bytes - f.bytes
          v2NewBlocks = g.count - f.count
        }
      }
      rows.push({ inlineMax, captureS: median(times), storeBytes, blocks, treeBlockBytes, v2Growth, v2NewBlocks, runs: times })
    }
  } finally {
    await cleanUp(work)
  }
  return rows
}

const deb = debianRoot()
if (deb === null) { console.error('needs root and debootstrap to build the Debian tree'); process.exit(2) }
if (!ensureTool('casync')) { console.error('casync is missing (apt-get install casync)'); process.exit(2) }
for (const tool of ['rsync', 'tar', 'sha256sum', 'du', 'find', 'awk']) {
  if (!ensureTool(tool)) { console.error(`${tool} is missing`); process.exit(2) }
}
await mkdir(String(values.work), { recursive: true })
// Orlov's top-directory spreading for the work root's subdirectories (chattr +T): each tree's
// outputs start in a block group of their own, away from what others create and delete.
spawnSync('chattr', ['+T', String(values.work)], { stdio: 'ignore' })
const treePaths = await Promise.all(String(values.trees).split(',').filter(t => t !== '').map(async (t): Promise<[string, string]> => [t, t === 'debian' ? deb : t === 'big' ? await bigTree(deb) : t]))
if (SETTLE_S === 0) {
  // Every output is kept until the end: per run a store, a casync store and three targets (and a
  // store and a target per --compare), plus the tar file and the second-version stores and copy;
  // the inline runs keep a store each.
  const compares = String(values.compare).split(',').filter(d => d !== '').length
  const need = treePaths.reduce((n, [, p]) => n + du(p) * ((5 + 2 * compares) * RUNS + 5), 0) + (INLINE_SIZES.length > 0 ? du(deb) * (INLINE_SIZES.length * RUNS + 2) : 0)
  const avail = Number(spawnSync('df', ['-B1', '--output=avail', String(values.work)], { encoding: 'utf8' }).stdout.split('\n')[1])
  if (avail < need * 1.1) {
    console.error(`needs about ${(need / 1e9).toFixed(1)} GB free in ${String(values.work)} (has ${(avail / 1e9).toFixed(1)} GB): use fewer --runs, or --settle 370 to delete each tree's outputs before the next`)
    process.exit(2)
  }
}
const started = new Date().toISOString()
const rows: Row[] = []
let inline: InlineRow[] = []
try {
  const others = await Promise.all(String(values.compare).split(',').filter(d => d !== '').map(loadImpl))
  for (const [name, path] of treePaths) rows.push(await benchTree(name, path, String(values.work), others))
  if (INLINE_SIZES.length > 0) inline = await benchInline(deb, String(values.work))
} finally {
  // --keep leaves them for the caller to delete after back-to-back runs (e.g. before/after a change).
  if (values.keep === true) console.error(`kept: ${leftovers.join(' ')}`)
  else for (const dir of leftovers) await rm(dir, { recursive: true, force: true })
}

const mbps = (bytes: number, s: number): string => (bytes / s / 1e6).toFixed(0)
const MB = (b: number): string => (b / 1e6).toFixed(1)
console.log(`runs: ${RUNS} (medians), ${started}, node ${process.version}`)
for (const r of rows) {
  const n = (k: string): number => r.medians[k]
  const lo = (k: string): number => r.mins[k]
  /** "median s (min)": on a shared machine the minimum shows the cost without others' load. */
  const t = (k: string): string => `${n(k).toFixed(2)}s (min ${lo(k).toFixed(2)})`
  console.log(`\n== ${r.tree}: ${MB(r.bytes)} MB, ${r.files} files`)
  console.log(`capture   imgmesh ${t('imgmeshCaptureS')} ${mbps(r.bytes, n('imgmeshCaptureS'))} MB/s  casync make ${t('casyncMakeS')} ${mbps(r.bytes, n('casyncMakeS'))} MB/s  tar|sha256 ${t('tarSha256S')} ${mbps(r.bytes, n('tarSha256S'))} MB/s  → imgmesh/casync ${(n('imgmeshCaptureS') / n('casyncMakeS')).toFixed(2)}x (mins ${(lo('imgmeshCaptureS') / lo('casyncMakeS')).toFixed(2)}x), imgmesh/floor ${(n('imgmeshCaptureS') / n('tarSha256S')).toFixed(2)}x`)
  console.log(`store     imgmesh ${MB(n('imgmeshStoreBytes'))} MB in ${n('imgmeshBlocks')} blocks (${n('imgmeshChunks')} content chunks)  casync ${MB(n('casyncStoreBytes'))} MB in ${n('casyncChunks')} chunks (compressed)`)
  console.log(`v2 (${r.changedFiles} files changed)  imgmesh new ${MB(n('imgmeshV2NewBytes'))} MB (store +${MB(n('imgmeshV2StoreGrowth'))} MB, +${n('imgmeshV2NewBlocks')} blocks)  casync store +${MB(n('casyncV2StoreGrowth'))} MB (+${n('casyncV2NewChunks')} chunks, compressed)`)
  console.log(`deploy    imgmesh ${t('imgmeshDeployS')}  tar -x ${t('tarExtractS')}  rsync -aHAX ${t('rsyncS')}  → imgmesh/rsync ${(n('imgmeshDeployS') / n('rsyncS')).toFixed(2)}x (mins ${(lo('imgmeshDeployS') / lo('rsyncS')).toFixed(2)}x), imgmesh/tar ${(n('imgmeshDeployS') / n('tarExtractS')).toFixed(2)}x`)
  for (const k of Object.keys(r.medians).filter(k => k.endsWith(':captureS'))) {
    const label = k.slice(0, -':captureS'.length)
    const c = n(k)
    const d = n(`${label}:deployS`)
    console.log(`compare   ${label}: capture ${t(k)} (/casync ${(c / n('casyncMakeS')).toFixed(2)}x, this/it ${(n('imgmeshCaptureS') / c).toFixed(2)}x)  deploy ${t(`${label}:deployS`)} (/rsync ${(d / n('rsyncS')).toFixed(2)}x, this/it ${(n('imgmeshDeployS') / d).toFixed(2)}x)`)
  }
}
if (inline.length > 0) {
  console.log(`\n== inline threshold (debian, capture only; default ${INLINE_MAX})`)
  for (const r of inline) console.log(`inline ≤ ${String(r.inlineMax).padStart(5)} B: capture ${r.captureS.toFixed(2)}s (min ${Math.min(...r.runs).toFixed(2)})  store ${MB(r.storeBytes)} MB in ${r.blocks} blocks (tree and version blocks ${MB(r.treeBlockBytes)} MB)  v2 store +${MB(r.v2Growth)} MB, +${r.v2NewBlocks} blocks`)
}
await mkdir(dirname(String(values.out)), { recursive: true })
await writeFile(String(values.out), JSON.stringify({ date: started, node: process.version, runs: RUNS, rows, inline }, null, 2))
