/**
 * npm run bench:update — what an update of a real Debian root costs on the wire, next to rsync,
 * measured in the same run:
 *
 *   npm run bench:update -- [--runs 3] [--packages "curl less nano"] [--change auto|apt|deb|synthetic]
 *                           [--block] [--work /var/tmp/imgmesh-bench-update] [--out results/bench-update.json]
 *
 * 1. v1 = a copy of the cached debootstrap root; v2 = a copy of v1 where a few packages were
 *    installed: `apt-get install` in a chroot (network to the Debian mirror), else .debs fetched
 *    on the host with `apt-get download` and installed with `dpkg -i` in the chroot, else a
 *    synthetic change of 5% of the bytes. The change used is printed and recorded.
 * 2. Node A (an agent process) captures v1 and v2. Each run starts two fresh nodes B and C
 *    (agent processes on 127.0.0.1), deploys v1 on both through their agents, then deploys v2 on
 *    both at once and records, per node: the block payload received (`status` traffic.received)
 *    and the TCP stream bytes its sockets received (`ss -ti` bytes_received, summed over the
 *    agent's connections: noise, yamux, HAVE bitmaps, gossip and DHT included). The reference is
 *    the changed-chunk bytes, `imgmesh diff v1 v2` newBytes: the least any chunk-based update moves.
 * 3. rsync: an rsync daemon on 127.0.0.1 serves v2; a fresh copy of v1 is updated with
 *    `rsync -aH --delete --stats rsync://...`. Over a daemon rsync uses its delta algorithm (a
 *    local copy would send whole files): "Total bytes received" on the client is what the server
 *    sent, file list and checksums included. Both tools' figures are stream bytes (no TCP/IP headers).
 * 4. Store size: A's block files (apparent and allocated) against the sum of the two versions'
 *    sizes, and against the unique chunk bytes of the two.
 * 5. --block (default when mkfs.ext4 and losetup work): the same update as disk images — v1 as an
 *    ext4 image (mkfs.ext4 -d), v2 = that image loop-mounted and rsynced to the v2 tree in place —
 *    captured as block images, deployed to image files on B and C; rsync --inplace of the image
 *    file as the baseline.
 *
 * Medians of --runs runs. Agents are separate processes, stopped by their own pids; the proc
 * mount of the chroot and every loop device are removed on every exit path.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { mkdir, rm, writeFile, readdir, lstat, copyFile } from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { parseArgs } from 'node:util'
import { cpus, loadavg, totalmem } from 'node:os'
import { createServer } from 'node:net'
import { randomBytes } from 'node:crypto'
import { debianRoot, ensureTool, haveTool, isRoot } from '../test/support/debian-root.ts'
import { AgentSet } from '../test/support/agents.ts'
import { imgmeshJson } from '../test/support/cli.ts'
import { ControlClient } from '../node/control/control-api.ts'
import { ImageStore } from '../node/image/image-store.ts'
import { treeBlocks } from '../node/tree/tree-loader.ts'
import type { CID } from 'multiformats/cid'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    packages: { type: 'string', default: 'curl less nano' },
    change: { type: 'string', default: 'auto' },
    block: { type: 'boolean' },
    'no-block': { type: 'boolean', default: false },
    work: { type: 'string', default: '/var/tmp/imgmesh-bench-update' },
    out: { type: 'string', default: 'results/bench-update.json' }
  }
})
const RUNS = Number(values.runs)
const PACKAGES = String(values.packages).split(/[\s,]+/).filter(p => /^[a-z0-9][a-z0-9+.-]*$/.test(p))
const CHANGE = String(values.change)
const WORK = String(values.work)
if (!(RUNS >= 1) || PACKAGES.length === 0 || !['auto', 'apt', 'deb', 'synthetic'].includes(CHANGE)) {
  console.error('usage: bench-update.ts [--runs N] [--packages "P1 P2"] [--change auto|apt|deb|synthetic] [--block|--no-block] [--work DIR] [--out FILE]')
  process.exit(2)
}

const MiB = 1024 * 1024
const log = (s: string): void => { process.stderr.write(`[bench:update] ${s}\n`) }

function run (cmd: string, args: string[], opts: { cwd?: string, timeout?: number, env?: Record<string, string> } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd, timeout: opts.timeout ?? 600_000, env: opts.env ?? process.env, maxBuffer: 1 << 26 })
}

function must (cmd: string, args: string[], opts: { cwd?: string, timeout?: number, env?: Record<string, string> } = {}): string {
  const r = run(cmd, args, opts)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${String(r.status ?? r.signal)}): ${(r.stderr ?? '').slice(-2000)}`)
  return r.stdout
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function duBytes (path: string, apparent: boolean): number {
  return Number(must('du', ['-s', '--block-size=1', ...(apparent ? ['--apparent-size'] : []), path]).split('\t')[0])
}

function fmt (n: number): string {
  if (n >= 10 * MiB) return `${(n / MiB).toFixed(1)} MiB`
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      s.close(() => { resolve(port) })
    })
  })
}

// ------------------------------------------------------------------------------ v2: the change

const CHROOT_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive', LANG: 'C', HOME: '/root' }

/**
 * Runs fn with the chroot prepared: /proc mounted, the host's resolv.conf, a policy-rc.d that
 * keeps services from starting. Everything is put back (and unmounted) on every path out.
 */
async function inChroot<T> (root: string, fn: () => T): Promise<T> {
  const resolv = join(root, 'etc/resolv.conf')
  const saved = join(WORK, 'resolv.conf.saved')
  const hadResolv = await lstat(resolv).then(() => true, () => false)
  if (hadResolv) must('cp', ['-a', resolv, saved])
  await rm(resolv, { force: true })
  await copyFile('/etc/resolv.conf', resolv)
  const policy = join(root, 'usr/sbin/policy-rc.d')
  await writeFile(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 })
  must('mount', ['-t', 'proc', 'proc', join(root, 'proc')])
  try {
    return fn()
  } finally {
    if (run('umount', [join(root, 'proc')]).status !== 0) run('umount', ['-l', join(root, 'proc')])
    await rm(policy, { force: true })
    await rm(resolv, { force: true })
    if (hadResolv) must('mv', [saved, resolv])
  }
}

function installedPackages (root: string): Set<string> {
  const out = new Set<string>()
  for (const para of readFileSync(join(root, 'var/lib/dpkg/status'), 'utf8').split('\n\n')) {
    const name = /^Package: (.+)$/m.exec(para)?.[1]
    if (name !== undefined && /^Status: install ok installed$/m.test(para)) out.add(name)
  }
  return out
}

async function changeWithApt (root: string): Promise<boolean> {
  return await inChroot(root, () => {
    const r = run('chroot', [root, '/bin/sh', '-c', `apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES.join(' ')} && apt-get clean`], { env: CHROOT_ENV, timeout: 900_000 })
    if (r.status !== 0) log(`apt-get in the chroot failed: ${(r.stderr ?? '').slice(-500)}`)
    return r.status === 0
  })
}

async function changeWithDebs (root: string): Promise<boolean> {
  const have = installedPackages(root)
  const deps = run('apt-cache', ['depends', '--recurse', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', ...PACKAGES])
  if (deps.status !== 0) return false
  const names = [...new Set(deps.stdout.split('\n').filter(l => /^[a-z0-9]/.test(l)).map(l => l.trim().replace(/:amd64$/, '')))].filter(n => !have.has(n))
  const debs = join(WORK, 'debs')
  await rm(debs, { recursive: true, force: true })
  await mkdir(debs, { recursive: true })
  if (run('apt-get', ['download', ...names], { cwd: debs, timeout: 600_000 }).status !== 0) return false
  const inside = join(root, 'var/cache/apt/archives/imgmesh-bench')
  must('cp', ['-r', debs, inside])
  try {
    return await inChroot(root, () => {
      const r = run('chroot', [root, '/bin/sh', '-c', 'dpkg -i /var/cache/apt/archives/imgmesh-bench/*.deb'], { env: CHROOT_ENV })
      if (r.status !== 0) log(`dpkg -i in the chroot failed: ${(r.stderr ?? '').slice(-500)}`)
      return r.status === 0
    })
  } finally {
    await rm(inside, { recursive: true, force: true })
  }
}

/** Rewrites whole files, every 20th in path order, until 5% of the bytes are new. */
async function changeSynthetic (root: string): Promise<void> {
  const files: Array<{ path: string, size: number }> = []
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.isFile()) { const st = await lstat(p); if (st.nlink === 1 && st.size > 0) files.push({ path: p, size: st.size }) }
    }
  }
  await walk(root)
  files.sort((a, b) => a.path < b.path ? -1 : 1)
  const total = files.reduce((s, f) => s + f.size, 0)
  let changed = 0
  for (let i = 0; changed < total * 0.05; i = (i + 20) % files.length) {
    await writeFile(files[i].path, randomBytes(files[i].size))
    changed += files[i].size
  }
}

async function makeVersions (): Promise<{ v1: string, v2: string, change: string }> {
  const base = debianRoot()
  if (base === null) throw new Error('no Debian root: needs root and debootstrap')
  const v1 = join(WORK, 'v1')
  const v2 = join(WORK, 'v2')
  must('cp', ['-a', base, v1])
  must('cp', ['-a', v1, v2])
  let change = ''
  if ((CHANGE === 'auto' || CHANGE === 'apt') && await changeWithApt(v2)) change = `apt-get install ${PACKAGES.join(' ')} in a chroot (apt-get update, --no-install-recommends, apt-get clean)`
  else if ((CHANGE === 'auto' || CHANGE === 'deb') && await changeWithDebs(v2)) change = `dpkg -i in a chroot of ${PACKAGES.join(' ')} and dependencies fetched with apt-get download`
  else if (CHANGE === 'auto' || CHANGE === 'synthetic') {
    if (CHANGE !== 'synthetic') {
      // A failed package install may have left half a change: start again from v1.
      await rm(v2, { recursive: true, force: true })
      must('cp', ['-a', v1, v2])
    }
    await changeSynthetic(v2)
    change = 'synthetic: whole files rewritten with random bytes, every 20th file, until 5% of the bytes'
  } else {
    throw new Error(`the ${CHANGE} change failed`)
  }
  return { v1, v2, change }
}

// ------------------------------------------------------------------------------ measurements

/** TCP stream bytes received by every socket of a process (ss -ti). */
function tcpReceived (pid: number): number {
  const lines = must('ss', ['-tinpH']).split('\n')
  let total = 0
  for (let i = 0; i < lines.length - 1; i++) {
    if (!lines[i].includes(`pid=${pid},`)) continue
    const m = /bytes_received:(\d+)/.exec(lines[i + 1])
    if (m !== null) total += Number(m[1])
  }
  return total
}

interface NodeFigures { payload: number, tcp: number, written: number, seconds: number }

async function traffic (agents: AgentSet, name: string): Promise<number> {
  const c = await ControlClient.require(agents.dataDir(name))
  return (await c.call<{ traffic: { received: number } }>('status')).traffic.received
}

async function deployOn (agents: AgentSet, name: string, spec: string, target: string): Promise<{ bytesWritten: number, mode: string }> {
  return await imgmeshJson<{ bytesWritten: number, mode: string }>(['deploy', spec, target, '--data-dir', agents.dataDir(name)])
}

/** Fresh nodes B and C: v1 deployed through their agents, then v2 on both at once, measured. */
async function swarmRun (agents: AgentSet, runNo: number, image: string, v1: SeedVersion, originAddr: string, clusterKey: string, trust: string, targetName: string): Promise<Record<string, NodeFigures>> {
  const keys = ['b', 'c']
  const names = keys.map(k => `${k}${runNo}-${image}`)
  for (const n of names) {
    await agents.init(n, { clusterKey, trust: [trust] })
    // The heads exchange tells a new node only the newest version of each image, and an agent
    // cannot yet ask its peers for an older one by number: hand it v1's signed version block and
    // tree blocks (its chunks still come through the swarm). The tree blocks too because loading
    // a tree from peers fetches identical directories (every empty one) concurrently, and
    // BlockExchange.fetchOne keeps one waiter per CID: the first request waits out its 10 s
    // timeout and then asks the next peer, which here does not have the block yet.
    const store = await ImageStore.open(agents.dataDir(n))
    await store.importVersion(v1.version)
    for (const [cid, bytes] of v1.trees) await store.blocks.putVerified(cid, bytes)
    await agents.start(n, { bootstrap: [originAddr] })
  }
  const target = (n: string): string => join(WORK, 'targets', n, targetName)
  for (const n of names) await mkdir(dirname(target(n)), { recursive: true })
  for (const n of names) await deployOn(agents, n, `${image}@1`, target(n))
  const before = new Map<string, { payload: number, tcp: number }>()
  for (const n of names) before.set(n, { payload: await traffic(agents, n), tcp: tcpReceived(agents.agents.get(n)!.child.pid!) })
  const out: Record<string, NodeFigures> = {}
  await Promise.all(names.map(async (n, i) => {
    const t0 = performance.now()
    const r = await deployOn(agents, n, `${image}@2`, target(n))
    if (r.mode !== 'diff') throw new Error(`${n} deployed ${image}@2 in ${r.mode} mode, not diff`)
    out[keys[i]] = { payload: 0, tcp: 0, written: r.bytesWritten, seconds: (performance.now() - t0) / 1000 }
  }))
  for (const [i, n] of names.entries()) {
    out[keys[i]].payload = await traffic(agents, n) - before.get(n)!.payload
    out[keys[i]].tcp = tcpReceived(agents.agents.get(n)!.child.pid!) - before.get(n)!.tcp
  }
  for (const n of names) await agents.stop(n)
  return out
}

interface SeedVersion { version: Uint8Array, trees: Array<[CID, Uint8Array]> }

/** The signed version block of spec in a data dir, and its tree blocks. */
async function versionBlock (dataDir: string, spec: string): Promise<SeedVersion> {
  const store = await ImageStore.open(dataDir)
  const resolved = await store.resolve(spec)
  const trees: Array<[CID, Uint8Array]> = []
  for (const cid of treeBlocks(await store.loadTree(resolved.version.body.tree))) trees.push([cid, await store.blocks.get(cid)])
  return { version: await store.blocks.get(resolved.cid), trees }
}

/** An rsync daemon on 127.0.0.1 serving modules (name → path), read as root. */
async function rsyncDaemon (modules: Record<string, string>): Promise<{ port: number, stop: () => void }> {
  const port = await freePort()
  const conf = join(WORK, 'rsyncd.conf')
  const pid = join(WORK, 'rsyncd.pid')
  const logFile = join(WORK, 'rsyncd.log')
  await writeFile(conf, [`port = ${port}`, 'address = 127.0.0.1', `pid file = ${pid}`, `log file = ${logFile}`, 'use chroot = no', 'uid = root', 'gid = root', 'read only = yes',
    ...Object.entries(modules).flatMap(([m, p]) => [`[${m}]`, `  path = ${p}`])].join('\n') + '\n')
  // stdin from /dev/null: Node's pipes are socketpairs, and rsync --daemon with a socket on stdin
  // believes inetd started it and serves that socket instead of listening.
  const r = spawnSync('rsync', ['--daemon', `--config=${conf}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  if (r.status !== 0) throw new Error(`rsync --daemon failed (${String(r.status)}): ${r.stderr} ${existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''}`)
  for (let i = 0; i < 50 && !existsSync(pid); i++) await new Promise(resolve => setTimeout(resolve, 100))
  const stop = (): void => {
    try { process.kill(Number(readFileSync(pid, 'utf8').trim()), 'SIGTERM') } catch {}
  }
  return { port, stop }
}

interface RsyncFigures { received: number, sent: number, literal: number, matched: number, seconds: number }

function rsyncStats (out: string): RsyncFigures {
  const num = (label: string): number => Number((new RegExp(`${label}: ([\\d,]+)`).exec(out)?.[1] ?? '0').replace(/,/g, ''))
  return { received: num('Total bytes received'), sent: num('Total bytes sent'), literal: num('Literal data'), matched: num('Matched data'), seconds: 0 }
}

function rsyncRun (args: string[]): RsyncFigures {
  const t0 = performance.now()
  const stdout = must('rsync', ['--stats', ...args])
  return { ...rsyncStats(stdout), seconds: (performance.now() - t0) / 1000 }
}

// ------------------------------------------------------------------------------ block images

const loops: string[] = []
const mounts: string[] = []

function cleanupBlock (): void {
  for (const m of mounts.splice(0)) if (run('umount', [m]).status !== 0) run('umount', ['-l', m])
  for (const l of loops.splice(0)) run('losetup', ['-d', l])
}

/** v1.img: ext4 made from the v1 tree; v2.img: a copy, loop-mounted and rsynced to v2 in place. */
function makeImages (v1: string, v2: string): { img1: string, img2: string, size: number, trimmed: boolean } {
  const size = Math.ceil(duBytes(v2, false) * 2.5 / (64 * MiB)) * 64 * MiB
  const img1 = join(WORK, 'v1.img')
  const img2 = join(WORK, 'v2.img')
  must('truncate', ['-s', String(size), img1])
  must('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=0,nodiscard', '-d', v1, img1])
  must('cp', ['--sparse=always', img1, img2])
  const loop = must('losetup', ['--find', '--show', img2]).trim()
  loops.push(loop)
  const mnt = join(WORK, 'mnt')
  must('mkdir', ['-p', mnt])
  must('mount', [loop, mnt])
  mounts.push(mnt)
  must('rsync', ['-aHAX', '--delete', `${v2}/`, `${mnt}/`])
  // What a careful admin does before imaging: discard the blocks the update freed (the loop
  // device punches them out of the file), so they read as zeros and are holes, not stale data.
  const trimmed = run('fstrim', [mnt]).status === 0
  cleanupBlock()
  return { img1, img2, size, trimmed }
}

// ------------------------------------------------------------------------------ main

interface Report {
  date: string
  machine: { cpus: number, model: string, memGiB: number, kernel: string, load: number[] }
  command: string
  change: string
  runs: number
  tree: {
    v1Bytes: number, v2Bytes: number, diff: { added: number, removed: number, changed: number, newChunks: number, newBytes: number }
    nodes: Record<string, NodeFigures[]>, rsync: RsyncFigures[]
    store: { apparent: number, allocated: number, blocks: number, v1: number, v2: number, v1Chunks: number, uniqueChunkBytes: number, treesOnDisk: number }
  }
  block?: {
    size: number, trimmed: boolean, v1Data: number, v2Data: number, newBytes: number, nodes: Record<string, NodeFigures[]>, rsync: RsyncFigures[]
    store: { apparent: number, allocated: number }
  }
}

async function main (): Promise<void> {
  if (!isRoot()) throw new Error('bench:update needs root (chroot, mounts, owners)')
  for (const [tool, pkg] of [['rsync', 'rsync'], ['ss', 'iproute2']] as const) if (!ensureTool(tool, pkg)) throw new Error(`${tool} is missing`)
  const doBlock = values['no-block'] !== true && (values.block === true || (haveTool('mkfs.ext4') && haveTool('losetup')))
  await rm(WORK, { recursive: true, force: true })
  await mkdir(WORK, { recursive: true })
  const agents = new AgentSet(join(WORK, 'nodes'))
  let rsyncd: { stop: () => void } | null = null
  const stopAll = async (): Promise<void> => { rsyncd?.stop(); await agents.stopAll(); cleanupBlock() }
  const onSignal = (): void => { void stopAll().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    log('making v1 and v2')
    const { v1, v2, change } = await makeVersions()
    log(`change: ${change}`)

    const clusterKey = await agents.init('a')
    const trust = agents.publishers.get('a')!
    const a = await agents.start('a')
    const A = agents.dataDir('a')
    // --no-publish: followers learn the versions through the heads exchange. See the report on
    // super-seeding in docs/benchmarks.md: a published v2 stalls followers that hold v1.
    for (const v of [v1, v2]) await imgmeshJson(['capture', v, '--image', 'deb', '--no-default-excludes', '--no-publish', '--data-dir', A])
    const diff = await imgmeshJson<{ added: unknown[], removed: unknown[], changed: unknown[], newChunks: number, newBytes: number }>(['diff', 'deb@1', 'deb@2', '--data-dir', A])
    const show = async (spec: string): Promise<{ stats: { bytes: number, chunkBytes: number } }> => await imgmeshJson(['show', spec, '--data-dir', A])
    const [s1, s2] = [await show('deb@1'), await show('deb@2')]
    const store = { apparent: duBytes(join(A, 'blocks'), true), allocated: duBytes(join(A, 'blocks'), false), blocks: Number(must('sh', ['-c', `find ${join(A, 'blocks')} -type f | wc -l`]).trim()), v1: s1.stats.bytes, v2: s2.stats.bytes, v1Chunks: s1.stats.chunkBytes, uniqueChunkBytes: s1.stats.chunkBytes + diff.newBytes, treesOnDisk: duBytes(v1, false) + duBytes(v2, false) }
    log(`diff v1→v2: ${diff.added.length} added, ${diff.removed.length} removed, ${diff.changed.length} changed, ${diff.newChunks} new chunks, ${fmt(diff.newBytes)}`)

    const port = await rsyncDaemon({ v2, img: WORK })
    rsyncd = port
    const nodes: Record<string, NodeFigures[]> = { b: [], c: [] }
    const rsyncs: RsyncFigures[] = []
    for (let r = 1; r <= RUNS; r++) {
      log(`run ${r}/${RUNS}: imgmesh`)
      const f = await swarmRun(agents, r, 'deb', await versionBlock(A, 'deb@1'), a.addr, clusterKey, trust, 'root')
      for (const k of Object.keys(nodes)) nodes[k].push(f[k])
      log(`run ${r}/${RUNS}: rsync`)
      const dst = join(WORK, `rsync-${r}`)
      must('cp', ['-a', v1, dst])
      rsyncs.push(rsyncRun(['-aH', '--delete', `rsync://127.0.0.1:${port.port}/v2/`, `${dst}/`]))
      log(`  B ${fmt(f.b.payload)} payload, ${fmt(f.b.tcp)} tcp; C ${fmt(f.c.payload)}, ${fmt(f.c.tcp)}; rsync ${fmt(rsyncs[rsyncs.length - 1].received)}`)
    }
    const report: Report = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model ?? '', memGiB: Math.round(totalmem() / 2 ** 30), kernel: must('uname', ['-r']).trim(), load: loadavg() },
      command: `npm run bench:update -- ${process.argv.slice(2).join(' ')}`.trim(),
      change,
      runs: RUNS,
      tree: { v1Bytes: s1.stats.bytes, v2Bytes: s2.stats.bytes, diff: { added: diff.added.length, removed: diff.removed.length, changed: diff.changed.length, newChunks: diff.newChunks, newBytes: diff.newBytes }, nodes, rsync: rsyncs, store }
    }

    if (doBlock) {
      log('block images: mkfs.ext4 -d v1, then v2 rsynced into a loop mount of a copy')
      const { img1, img2, size, trimmed } = makeImages(v1, v2)
      const c1 = await imgmeshJson<{ newBytes: number }>(['capture', '--block', img1, '--image', 'debdisk', '--no-publish', '--data-dir', A])
      const c2 = await imgmeshJson<{ newBytes: number }>(['capture', '--block', img2, '--image', 'debdisk', '--no-publish', '--data-dir', A])
      const bdiff = await imgmeshJson<{ newBytes: number }>(['diff', 'debdisk@1', 'debdisk@2', '--data-dir', A])
      const [b1, b2] = [await show('debdisk@1'), await show('debdisk@2')]
      log(`block v1 ${fmt(b1.stats.chunkBytes)} data, v2 capture stored ${fmt(c2.newBytes)} (v1 stored ${fmt(c1.newBytes)}), diff ${fmt(bdiff.newBytes)}`)
      const bnodes: Record<string, NodeFigures[]> = { b: [], c: [] }
      const brsync: RsyncFigures[] = []
      for (let r = 1; r <= RUNS; r++) {
        log(`block run ${r}/${RUNS}`)
        const f = await swarmRun(agents, r, 'debdisk', await versionBlock(A, 'debdisk@1'), a.addr, clusterKey, trust, 'disk.img')
        for (const k of Object.keys(bnodes)) bnodes[k].push(f[k])
        const dst = join(WORK, `rsync-img-${r}.img`)
        must('cp', ['--sparse=always', img1, dst])
        brsync.push(rsyncRun(['-a', '--inplace', '--no-whole-file', `rsync://127.0.0.1:${port.port}/img/v2.img`, dst]))
        log(`  B ${fmt(f.b.payload)} payload, ${fmt(f.b.tcp)} tcp, wrote ${fmt(f.b.written)}; rsync --inplace ${fmt(brsync[brsync.length - 1].received)}`)
      }
      report.block = { size, trimmed, v1Data: b1.stats.chunkBytes, v2Data: b2.stats.chunkBytes, newBytes: bdiff.newBytes, nodes: bnodes, rsync: brsync, store: { apparent: duBytes(join(A, 'blocks'), true) - store.apparent, allocated: duBytes(join(A, 'blocks'), false) - store.allocated } }
    }
    printReport(report)
    await mkdir(dirname(String(values.out)), { recursive: true })
    await writeFile(String(values.out), JSON.stringify(report, null, 2) + '\n')
    log(`figures written to ${String(values.out)}`)
  } finally {
    await stopAll()
    await rm(WORK, { recursive: true, force: true }).catch(() => {})
  }
}

function printReport (r: Report): void {
  const t = r.tree
  const ref = t.diff.newBytes
  const row = (label: string, bytes: number, base = ref): string => `${label.padEnd(52)} ${fmt(bytes).padStart(12)} ${(bytes / base).toFixed(3).padStart(8)}×`
  const lines: string[] = []
  lines.push(`bench:update  ${r.date}  ${r.machine.cpus} × ${r.machine.model}, ${r.machine.memGiB} GiB, Linux ${r.machine.kernel}, load ${r.machine.load.map(l => l.toFixed(2)).join(' ')}`)
  lines.push(`change: ${r.change}`)
  lines.push(`v1 ${fmt(t.v1Bytes)}, v2 ${fmt(t.v2Bytes)}; diff: ${t.diff.added} added, ${t.diff.removed} removed, ${t.diff.changed} changed paths; ${t.diff.newChunks} new chunks`)
  lines.push(`medians of ${r.runs} run(s); ratio to the changed-chunk bytes`)
  lines.push(row('changed-chunk bytes (imgmesh diff newBytes)', ref))
  for (const n of ['b', 'c']) {
    lines.push(row(`imgmesh node ${n.toUpperCase()}: block payload received`, median(t.nodes[n].map(x => x.payload))))
    lines.push(row(`imgmesh node ${n.toUpperCase()}: TCP bytes received`, median(t.nodes[n].map(x => x.tcp))))
  }
  lines.push(row('rsync -aH --delete: bytes received by the client', median(t.rsync.map(x => x.received))))
  lines.push(row('rsync: bytes sent by the client (file checksums)', median(t.rsync.map(x => x.sent))))
  lines.push(`deploy v2 seconds: B ${median(t.nodes.b.map(x => x.seconds)).toFixed(1)}, C ${median(t.nodes.c.map(x => x.seconds)).toFixed(1)} (both at once); rsync ${median(t.rsync.map(x => x.seconds)).toFixed(1)}`)
  const s = t.store
  lines.push(`store of A (v1+v2): ${fmt(s.apparent)} apparent, ${fmt(s.allocated)} allocated in ${s.blocks} blocks; sum of versions ${fmt(s.v1 + s.v2)} → ${(s.apparent / (s.v1 + s.v2)).toFixed(3)}× (allocated ${(s.allocated / (s.v1 + s.v2)).toFixed(3)}×); unique chunks ${fmt(s.uniqueChunkBytes)}; the two trees on disk ${fmt(s.treesOnDisk)}`)
  if (r.block !== undefined) {
    const b = r.block
    const brow = (label: string, bytes: number): string => `${label.padEnd(52)} ${fmt(bytes).padStart(12)} ${(bytes / b.newBytes).toFixed(3).padStart(8)}×`
    lines.push(`block images: ${fmt(b.size)} ext4, data v1 ${fmt(b.v1Data)}, v2 ${fmt(b.v2Data)}${b.trimmed ? ' (v2 fstrimmed before unmount)' : ' (no fstrim: freed blocks keep stale data)'}`)
    lines.push(brow('changed-chunk bytes (block)', b.newBytes))
    for (const n of ['b', 'c']) {
      lines.push(brow(`imgmesh node ${n.toUpperCase()}: block payload received`, median(b.nodes[n].map(x => x.payload))))
      lines.push(brow(`imgmesh node ${n.toUpperCase()}: TCP bytes received`, median(b.nodes[n].map(x => x.tcp))))
      lines.push(brow(`imgmesh node ${n.toUpperCase()}: bytes written to the image`, median(b.nodes[n].map(x => x.written))))
    }
    lines.push(brow('rsync --inplace of the image: bytes received', median(b.rsync.map(x => x.received))))
    lines.push(brow('rsync --inplace of the image: bytes sent (checksums)', median(b.rsync.map(x => x.sent))))
    lines.push(`block store growth: ${fmt(b.store.apparent)} apparent for ${fmt(b.size * 2)} of images`)
  }
  console.log(lines.join('\n'))
}

main().then(() => { process.exit(0) }, (err: unknown) => { console.error(err instanceof Error ? err.stack : String(err)); process.exit(1) })
