/**
 * Deploy: make a target directory equal to an image version. Only what differs is written:
 * against a target deployed before, the two trees are diffed (equal subtrees skipped); otherwise
 * every path is compared by metadata. Paths the image lacks are removed (unless excluded or
 * --no-delete). The deployed version is recorded only when everything is in place.
 */
import { lstat, readdir, mkdir, realpath } from 'node:fs/promises'
import { lstatSync, readlinkSync } from 'node:fs'
import type { BigIntStats, Stats } from 'node:fs'
import type { CID } from 'multiformats/cid'
import type { ImageStore, ResolvedVersion } from '../image/image-store.ts'
import type { BlockGetter } from '../store/block-store.ts'
import { loadTree, nameKey, walkTree, entryAt, type DirNode } from '../tree/tree-loader.ts'
import { ExcludeList } from '../tree/exclude.ts'
import { entriesEqual, sameContent, type TreeEntry } from '../../protocols/tree.ts'
import { entryTypeOf, mtimeOf, readXattrs, splitDev, xattrsEqual, joinPath, showPath } from '../tree/entry-metadata.ts'
import { RecentBlocks } from '../store/recent-blocks.ts'
import { readTargetState, writeTargetState, type DeployedVersion, type TargetState } from './target-state.ts'
import { applyAttributes, ensureDirectory, isTmpName, removePath, writeError, writeHardlink, writeRegularFile, writeSpecial, type WriterContext } from './file-writer.ts'
import { runFileTasks, type FileTask } from './file-queue.ts'
import { deployBlock } from './block-deploy.ts'
import { ImgmeshError, isErrno } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('deploy')
/**
 * Files written at once in tree order. Fed by a fetch, a file whose chunks have not all arrived
 * holds its place while the pieces come in rarest-first order, that is in no order the tree
 * knows: with 8 places the writer fell more than the block cache (16 MiB) behind what had
 * arrived, and a third to three quarters of the chunks were read back from the store and hashed
 * again (testbed, N=10, block cache misses 270–748 per client); with 32 it writes most chunks as
 * they arrive (0–52 misses) or from the cache. One more writer takes files completed out of
 * order (file-queue.ts).
 */
const FILE_CONCURRENCY = 32
/**
 * The walk makes its metadata calls (lstat, readlink) synchronously, as file-writer.ts makes its
 * writes: a round trip through the libuv thread pool cost more than the call itself on the
 * 2-core test machine (docs/benchmarks.md). It gives the event loop a turn at least this often
 * (ms), so an agent deploying still serves its peers.
 */
const YIELD_EVERY_MS = 10

/** The chunks a regular file's content is made of (none for inline content or holes). */
function chunksOf (entry: TreeEntry): CID[] {
  const out: CID[] = []
  for (const s of entry.segments ?? []) if (s.cid !== undefined) out.push(s.cid)
  return out
}

function lstatOrNull (path: Buffer): Stats | null {
  try { return lstatSync(path) } catch { return null }
}

function lstatBigOrNull (path: Buffer): BigIntStats | null {
  try { return lstatSync(path, { bigint: true }) } catch { return null }
}

export type ChangeKind = 'create' | 'update' | 'attributes' | 'delete' | 'link'
export interface Change { kind: ChangeKind, path: string, type: string, bytes: number }

export interface DeployOptions {
  target: string
  excludes?: string[]
  dryRun?: boolean
  /** Remove paths the image does not have (default true). */
  delete?: boolean
  /** Where chunks come from (default: the local store). The swarm passes its fetcher. */
  blocks?: BlockGetter
  /**
   * The version's tree, already loaded and checked (the swarm's fetch loaded it to list the
   * pieces): used when it is the version's tree, instead of decoding every tree block again.
   */
  tree?: DirNode
  /**
   * Other trees in memory (an agent keeps the trees of the versions it fetched): the tree of the
   * version deployed before is taken from them, or its directories are, instead of decoding it.
   */
  trees?: readonly DirNode[]
  onProgress?: (p: DeployProgress) => void
}

export interface DeployProgress { files: number, bytes: number, totalBytes: number, path: string }

export interface DeployResult {
  image: string
  version: number
  cid: string
  target: string
  /** 'diff': compared with the version deployed before; 'scan': compared with what is on disk. */
  mode: 'diff' | 'scan'
  dryRun: boolean
  created: number
  updated: number
  attributes: number
  deleted: number
  linked: number
  bytesWritten: number
  changes: Change[]
  warnings: string[]
}

interface PendingLink { entry: TreeEntry, rel: Buffer, abs: Buffer, dir: Buffer, changed: boolean, check: boolean }

class Deployment {
  readonly root: Buffer
  readonly excludes: ExcludeList
  readonly dryRun: boolean
  readonly deleting: boolean
  readonly ctx: WriterContext
  readonly result: DeployResult
  readonly tasks: FileTask[] = []
  readonly links: PendingLink[] = []
  readonly dirs: Array<{ abs: Buffer, rel: Buffer, entry: TreeEntry }> = []
  readonly written = new Set<string>()
  readonly fileEntries = new Map<string, TreeEntry>()
  readonly warned = new Set<string>()
  readonly onProgress?: (p: DeployProgress) => void
  filesDone = 0
  totalBytes = 0
  lastYield = performance.now()

  constructor (root: Buffer, opts: DeployOptions, blocks: BlockGetter, result: DeployResult) {
    this.root = root
    this.excludes = new ExcludeList(opts.excludes ?? [])
    this.dryRun = opts.dryRun === true
    this.deleting = opts.delete !== false
    this.result = result
    this.onProgress = opts.onProgress
    this.ctx = {
      blocks,
      packs: new RecentBlocks(),
      privileged: process.getuid?.() === 0,
      warn: (key, message) => {
        if (this.warned.has(key)) return
        this.warned.add(key)
        result.warnings.push(message)
        log.warn(message)
      }
    }
  }

  /** Lets timers and I/O callbacks run when the deploy has held the event loop for a while. */
  async pace (): Promise<void> {
    if (performance.now() - this.lastYield < YIELD_EVERY_MS) return
    await new Promise<void>(resolve => setImmediate(resolve))
    this.lastYield = performance.now()
  }

  excluded (rel: Buffer, isDir: boolean): boolean {
    return !this.excludes.empty && this.excludes.excludes('/' + rel.toString('latin1'), isDir)
  }

  record (kind: ChangeKind, rel: Buffer, type: string, bytes = 0): void {
    this.result.changes.push({ kind, path: '/' + showPath(rel), type, bytes })
    if (kind === 'create') this.result.created++
    else if (kind === 'update') this.result.updated++
    else if (kind === 'attributes') this.result.attributes++
    else if (kind === 'delete') this.result.deleted++
    else this.result.linked++
  }

  async remove (abs: Buffer, rel: Buffer, type: string): Promise<void> {
    this.record('delete', rel, type)
    if (this.dryRun) return
    try { await removePath(abs) } catch (err) { throw writeError(err, rel, 'removing') }
  }

  /** Syncs one directory. old is the previously deployed tree's node (diff mode) or undefined (scan mode). */
  async syncDir (node: DirNode, old: DirNode | null | undefined, abs: Buffer, rel: Buffer, exists: boolean): Promise<void> {
    const wanted = new Map<string, TreeEntry>()
    for (const e of node.entries) wanted.set(nameKey(e.name), e)
    const oldEntries = new Map<string, TreeEntry>()
    if (old !== undefined && old !== null) for (const e of old.entries) oldEntries.set(nameKey(e.name), e)
    const scan = old === undefined

    // Removals first, so type swaps and renames have room.
    if (exists) {
      const present: Buffer[] = scan ? await this.listDir(abs, rel) : [...oldEntries.values()].map(e => Buffer.from(e.name))
      for (const name of present) {
        const key = nameKey(name)
        if (wanted.has(key)) continue
        const childRel = childPath(rel, name)
        const childAbs = joinPath(abs, name)
        if (isTmpName(name)) { if (!this.dryRun) await removePath(childAbs); continue }
        if (!this.deleting) continue
        const oldType = oldEntries.get(key)?.type
        let isDir = oldType === 'dir'
        if (scan) {
          const st = lstatOrNull(childAbs)
          if (st === null) continue
          isDir = st.isDirectory()
        }
        if (this.excluded(childRel, isDir)) continue
        await this.remove(childAbs, childRel, isDir ? 'dir' : oldType ?? 'entry')
      }
    }

    for (const entry of node.entries) {
      await this.pace()
      const childRel = childPath(rel, entry.name)
      const childAbs = joinPath(abs, entry.name)
      if (this.excluded(childRel, entry.type === 'dir')) continue
      if (entry.type === 'file') this.fileEntries.set(childRel.toString('latin1'), entry)
      const oldEntry = oldEntries.get(nameKey(entry.name))
      if (!scan && oldEntry !== undefined && entriesEqual(oldEntry, entry)) {
        if (entry.type === 'hardlink') this.links.push({ entry, rel: childRel, abs: childAbs, dir: abs, changed: false, check: false })
        continue
      }
      const st = scan && exists ? lstatBigOrNull(childAbs) : null
      if (entry.type === 'dir') {
        await this.syncSubdir(node, entry, old, oldEntry, st, childAbs, childRel, exists, scan)
        continue
      }
      if (entry.type === 'hardlink') {
        this.links.push({ entry, rel: childRel, abs: childAbs, dir: abs, changed: !scan, check: scan })
        continue
      }
      const verdict = scan ? await this.compareOnDisk(entry, st, childAbs) : compareEntries(oldEntry, entry)
      if (verdict === 'same') continue
      if (verdict === 'attributes') {
        this.record('attributes', childRel, entry.type)
        if (!this.dryRun) {
          try { await applyAttributes(this.ctx, childAbs, entry, entry.type === 'symlink', false) } catch (err) { throw writeError(err, childRel, 'setting attributes of') }
        }
        continue
      }
      const kind: ChangeKind = verdict === 'create' ? 'create' : 'update'
      if (entry.type === 'file') {
        this.written.add(childRel.toString('latin1'))
        this.record(kind, childRel, 'file', entry.size ?? 0)
        this.totalBytes += entry.size ?? 0
        if (!this.dryRun) this.tasks.push({ run: async () => { await this.writeFile(abs, childAbs, childRel, entry) }, chunks: chunksOf(entry) })
      } else {
        this.record(kind, childRel, entry.type)
        if (!this.dryRun) await writeSpecial(this.ctx, abs, childAbs, childRel, entry)
      }
    }
  }

  async syncSubdir (_node: DirNode, entry: TreeEntry, old: DirNode | null | undefined, oldEntry: TreeEntry | undefined, st: BigIntStats | null, abs: Buffer, rel: Buffer, parentExists: boolean, scan: boolean): Promise<void> {
    const child = _node.children.get(nameKey(entry.name))
    if (child === undefined) throw new ImgmeshError('EBADTREE', `tree of /${showPath(rel)} is missing`)
    let exists: boolean
    if (scan) {
      exists = st !== null && st.isDirectory()
      if (!exists) this.record(st === null ? 'create' : 'update', rel, 'dir')
    } else {
      exists = oldEntry?.type === 'dir'
      if (!exists) this.record(oldEntry === undefined ? 'create' : 'update', rel, 'dir')
      else if (oldEntry !== undefined && !sameAttributes(oldEntry, entry)) this.record('attributes', rel, 'dir')
    }
    let oldChild: DirNode | null | undefined = scan ? undefined : (oldEntry?.type === 'dir' ? old?.children.get(nameKey(entry.name)) ?? null : null)
    if (!this.dryRun) {
      if (await ensureDirectory(abs, rel)) {
        exists = false
        if (!scan) oldChild = null
      } else if (!scan) {
        exists = true
      }
    } else if (!parentExists) {
      exists = false
    }
    await this.syncDir(child, oldChild, abs, rel, exists)
    this.dirs.push({ abs, rel, entry })
  }

  async listDir (abs: Buffer, rel: Buffer): Promise<Buffer[]> {
    try {
      return await readdir(abs, { encoding: 'buffer' })
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return []
      throw writeError(err, rel, 'reading')
    }
  }

  async compareOnDisk (entry: TreeEntry, st: BigIntStats | null, abs: Buffer): Promise<'same' | 'attributes' | 'create' | 'replace'> {
    if (st === null) return 'create'
    if (entryTypeOf(st) !== entry.type) return 'replace'
    switch (entry.type) {
      case 'file': {
        const m = mtimeOf(st)
        if (Number(st.size) !== entry.size || m.mtimeSec !== entry.mtimeSec || m.mtimeNsec !== entry.mtimeNsec) return 'replace'
        break
      }
      case 'symlink':
        if (Buffer.compare(readlinkSync(abs, { encoding: 'buffer' }), entry.link ?? new Uint8Array()) !== 0) return 'replace'
        break
      case 'char':
      case 'block': {
        const { major, minor } = splitDev(st.rdev)
        if (major !== entry.major || minor !== entry.minor) return 'replace'
        break
      }
      default:
        break
    }
    return attributesMatch(entry, st, abs, this.ctx.privileged) ? 'same' : 'attributes'
  }

  async writeFile (dir: Buffer, abs: Buffer, rel: Buffer, entry: TreeEntry): Promise<void> {
    const bytes = await writeRegularFile(this.ctx, dir, abs, rel, entry)
    this.result.bytesWritten += bytes
    this.filesDone++
    this.onProgress?.({ files: this.filesDone, bytes: this.result.bytesWritten, totalBytes: this.totalBytes, path: '/' + showPath(rel) })
    await this.pace()
  }

  /**
   * Diff mode skips equal subtrees whole; a hard link in one of them must still follow its first
   * path when that was rewritten elsewhere (and its directory then gets its mtime back).
   */
  addSkippedLinks (tree: DirNode): void {
    const queued = new Set(this.links.map(l => l.rel.toString('latin1')))
    const dirs = new Set(this.dirs.map(d => d.rel.toString('latin1')))
    for (const { path, entry } of walkTree(tree)) {
      if (entry.type !== 'hardlink' || queued.has(path.toString('latin1'))) continue
      if (!this.written.has(Buffer.from(entry.link ?? new Uint8Array()).toString('latin1'))) continue
      if (this.excluded(path, false)) continue
      const slash = path.lastIndexOf(0x2f)
      const dirRel = slash < 0 ? Buffer.alloc(0) : path.subarray(0, slash)
      const dir = dirRel.length === 0 ? this.root : joinPath(this.root, dirRel)
      this.links.push({ entry, rel: path, abs: joinPath(this.root, path), dir, changed: false, check: false })
      const dirEntry = dirRel.length === 0 ? undefined : entryAt(tree, dirRel)
      if (dirEntry !== undefined && !dirs.has(dirRel.toString('latin1'))) {
        dirs.add(dirRel.toString('latin1'))
        this.dirs.push({ abs: dir, rel: dirRel, entry: dirEntry })
      }
    }
  }

  /** Hard links last: their first path is complete by now. */
  async finishLinks (): Promise<void> {
    for (const l of this.links) {
      const targetRel = Buffer.from(l.entry.link ?? new Uint8Array())
      const key = targetRel.toString('latin1')
      const targetAbs = joinPath(this.root, targetRel)
      let needed = l.changed || this.written.has(key)
      if (!needed && l.check) {
        const a = lstatOrNull(l.abs)
        const b = lstatOrNull(targetAbs)
        needed = a === null || b === null || a.ino !== b.ino || a.dev !== b.dev
      }
      if (!needed) continue
      const firstEntry = this.fileEntries.get(key)
      if (firstEntry === undefined || this.excluded(targetRel, false)) {
        throw new ImgmeshError('EBADTREE', `hard link /${showPath(l.rel)} points at /${showPath(targetRel)}, which the deploy does not write`)
      }
      this.record('link', l.rel, 'hardlink')
      if (this.dryRun) continue
      await assertRealPath(this.root, targetRel)
      await writeHardlink(l.dir, l.abs, l.rel, targetAbs)
    }
  }

  async finishDirs (): Promise<void> {
    if (this.dryRun) return
    for (const d of this.dirs) {
      await this.pace()
      try { await applyAttributes(this.ctx, d.abs, d.entry, false, false) } catch (err) { throw writeError(err, d.rel, 'setting attributes of') }
    }
  }
}

function childPath (rel: Buffer, name: Uint8Array): Buffer {
  return rel.length === 0 ? Buffer.from(name) : joinPath(rel, name)
}

function sameAttributes (a: TreeEntry, b: TreeEntry): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtimeSec === b.mtimeSec && a.mtimeNsec === b.mtimeNsec && xattrsEqual(a.xattrs, b.xattrs)
}

function compareEntries (old: TreeEntry | undefined, entry: TreeEntry): 'same' | 'attributes' | 'create' | 'replace' {
  if (old === undefined) return 'create'
  if (old.type !== entry.type) return 'replace'
  if (!sameContent(old, entry)) return 'replace'
  return sameAttributes(old, entry) ? 'same' : 'attributes'
}

function attributesMatch (entry: TreeEntry, st: BigIntStats, abs: Buffer, privileged: boolean): boolean {
  const m = mtimeOf(st)
  if (m.mtimeSec !== entry.mtimeSec || m.mtimeNsec !== entry.mtimeNsec) return false
  if (entry.type !== 'symlink' && Number(st.mode & 0o7777n) !== entry.mode) return false
  if (privileged && (Number(st.uid) !== entry.uid || Number(st.gid) !== entry.gid)) return false
  return xattrsEqual(readXattrs(abs), entry.xattrs)
}

/** Checks that every component of rel under root is a real directory (the last a regular file). */
async function assertRealPath (root: Buffer, rel: Buffer): Promise<void> {
  const parts = rel.toString('latin1').split('/')
  let cur = root
  for (let i = 0; i < parts.length; i++) {
    cur = joinPath(cur, Buffer.from(parts[i], 'latin1'))
    const st = lstatOrNull(cur)
    const last = i === parts.length - 1
    if (st === null || (last ? !st.isFile() : !st.isDirectory())) {
      throw new ImgmeshError('EUNSAFEPATH', `refusing to link through /${showPath(rel)}: not a plain path inside the target`)
    }
  }
}

export async function prepareTarget (target: string, create: boolean): Promise<string> {
  if (create) {
    try { await mkdir(target, { recursive: true }) } catch (err) { throw new ImgmeshError('ETARGET', `cannot create target ${target}: ${(err as Error).message}`, { path: target, cause: err }) }
  }
  let real: string
  try { real = await realpath(target) } catch (err) {
    if (isErrno(err, 'ENOENT')) return target
    throw new ImgmeshError('ETARGET', `target ${target}: ${(err as Error).message}`, { path: target, cause: err })
  }
  const st = await lstat(real)
  if (!st.isDirectory()) throw new ImgmeshError('ETARGET', `target ${target} is not a directory`, { path: target })
  return real
}

/** Deploys a resolved version into opts.target. */
export async function deploy (store: ImageStore, resolved: ResolvedVersion, opts: DeployOptions): Promise<DeployResult> {
  // A block image goes to a device or image file, not a directory tree.
  if (resolved.version.body.kind === 'block') return await deployBlock(store, resolved, { target: opts.target, blocks: opts.blocks, dryRun: opts.dryRun, onProgress: opts.onProgress })
  // Without a getter from the swarm, content comes from the local store: a batch job, which
  // reads it synchronously (BlockStore.getSync) like it writes the files.
  const blocks: BlockGetter = opts.blocks ?? { get: async (cid) => store.blocks.getSync(cid) }
  const realTarget = await prepareTarget(opts.target, opts.dryRun !== true)
  const { body } = resolved.version
  const tree = opts.tree !== undefined && opts.tree.cid.equals(body.tree) ? opts.tree : await loadTree(blocks, body.tree)
  const state = await readTargetState(store.targetsDir, realTarget)

  // Diff against the version deployed before only when its deploy finished, removed what its
  // version lacked, and is another version (deploying the same version again is a repair: scan).
  let oldTree: DirNode | undefined
  if (state.deployed !== undefined && state.inProgress === undefined && state.deployed.kept !== true && !state.deployed.cid.equals(resolved.cid)) {
    // Taken from the trees in memory (the new one, and those the caller holds) where it can be,
    // whole or the directories it shares with them; only the rest is read and decoded.
    try { oldTree = await loadTree(store.blocks, state.deployed.tree, { reuse: [tree, ...opts.trees ?? []] }) } catch { oldTree = undefined }
  }
  const result: DeployResult = {
    image: body.image, version: body.number, cid: resolved.cid.toString(), target: realTarget, mode: oldTree === undefined ? 'scan' : 'diff',
    dryRun: opts.dryRun === true, created: 0, updated: 0, attributes: 0, deleted: 0, linked: 0, bytesWritten: 0, changes: [], warnings: []
  }
  const run = new Deployment(Buffer.from(realTarget), opts, blocks, result)
  if (!run.ctx.privileged) run.ctx.warn('owner', 'not running as root: file owners are not set and device nodes are skipped')

  const record: DeployedVersion = { image: body.image, number: body.number, cid: resolved.cid, tree: body.tree, at: new Date().toISOString(), excludes: opts.excludes ?? [] }
  if (opts.delete === false) record.kept = true
  if (!result.dryRun) await writeTargetState(store.targetsDir, { ...state, inProgress: record })

  const targetExists = result.dryRun ? (await lstat(realTarget).catch(() => null)) !== null : true
  await run.syncDir(tree, oldTree ?? undefined, Buffer.from(realTarget), Buffer.alloc(0), targetExists)
  await runFileTasks(run.tasks, FILE_CONCURRENCY, blocks)
  if (oldTree !== undefined) run.addSkippedLinks(tree)
  await run.finishLinks()
  await run.finishDirs()
  if (!result.dryRun) {
    try { await applyAttributes(run.ctx, Buffer.from(realTarget), body.root, false, false) } catch (err) { throw writeError(err, Buffer.alloc(0), 'setting attributes of') }
    const next: TargetState = { target: realTarget, deployed: { ...record, at: new Date().toISOString() } }
    if (state.deployed !== undefined && !state.deployed.cid.equals(resolved.cid)) next.previous = state.deployed
    else if (state.previous !== undefined) next.previous = state.previous
    await writeTargetState(store.targetsDir, next)
  }
  log.info('deployed', { image: body.image, number: body.number, target: realTarget, created: result.created, updated: result.updated, deleted: result.deleted })
  return result
}

export type { CID }
