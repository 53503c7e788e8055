/**
 * Verify: compare a target, attribute by attribute and byte by byte, with the version recorded
 * as deployed there. Content is checked against the chunk hashes of the tree itself, so no
 * block needs to be in the store, except the packs small files are kept in (a pack's hash covers
 * every file in it): those are compared with the pack's bytes.
 */
import { lstat, open, readdir, readlink } from 'node:fs/promises'
import { constants, type BigIntStats } from 'node:fs'
import { ImageStore } from '../image/image-store.ts'
import type { BlockGetter } from '../store/block-store.ts'
import { loadTree, nameKey, type DirNode } from '../tree/tree-loader.ts'
import { ExcludeList } from '../tree/exclude.ts'
import { segmentContent, type TreeEntry } from '../../protocols/tree.ts'
import { RecentBlocks } from '../store/recent-blocks.ts'
import type { RootAttributes } from '../../protocols/version.ts'
import { matchesCid } from '../store/cid.ts'
import { entryTypeOf, mtimeOf, readXattrs, splitDev, xattrsEqual, joinPath, showPath } from '../tree/entry-metadata.ts'
import { readTargetState } from './target-state.ts'
import { prepareTarget } from './deploy.ts'
import { ImgmeshError } from '../errors.ts'

export interface Difference { path: string, what: string, detail?: string }

export interface VerifyResult {
  image: string
  version: number
  cid: string
  target: string
  checked: number
  differences: Difference[]
  warnings: string[]
}

const READ_SIZE = 1024 * 1024

export async function verifyTarget (store: ImageStore, target: string, blocks: BlockGetter = store.blocks): Promise<VerifyResult> {
  const realTarget = await prepareTarget(target, false)
  const state = await readTargetState(store.targetsDir, realTarget)
  if (state.deployed === undefined) {
    throw new ImgmeshError('ENOTDEPLOYED', state.inProgress !== undefined
      ? `${target}: the deploy of ${state.inProgress.image}@${state.inProgress.number} did not finish; run the deploy again`
      : `${target}: nothing has been deployed here`)
  }
  const d = state.deployed
  const version = await store.getVersion(d.cid)
  const tree = await loadTree(blocks, d.tree)
  const result: VerifyResult = { image: d.image, version: d.number, cid: d.cid.toString(), target: realTarget, checked: 0, differences: [], warnings: [] }
  const privileged = process.getuid?.() === 0
  if (!privileged) result.warnings.push('not running as root: owners and device nodes are not compared')
  if (state.inProgress !== undefined) result.differences.push({ path: '/', what: 'interrupted', detail: `a deploy of ${state.inProgress.image}@${state.inProgress.number} did not finish` })
  const v = new Verifier(Buffer.from(realTarget), new ExcludeList(d.excludes), privileged, result, blocks)
  const rootStat = await lstat(realTarget, { bigint: true })
  v.compareAttributes(Buffer.alloc(0), version.body.root, rootStat, Buffer.from(realTarget), false)
  await v.dir(tree, Buffer.from(realTarget), Buffer.alloc(0))
  await v.links()
  return result
}

class Verifier {
  readonly root: Buffer
  readonly excludes: ExcludeList
  readonly privileged: boolean
  readonly result: VerifyResult
  readonly hardlinks: Array<{ rel: Buffer, st: BigIntStats, link: Uint8Array }> = []
  readonly blocks: BlockGetter
  /** The files of one directory share their packs. */
  private readonly packs = new RecentBlocks()

  constructor (root: Buffer, excludes: ExcludeList, privileged: boolean, result: VerifyResult, blocks: BlockGetter) {
    this.root = root
    this.excludes = excludes
    this.privileged = privileged
    this.result = result
    this.blocks = blocks
  }


  diff (rel: Buffer, what: string, detail?: string): void {
    this.result.differences.push(detail === undefined ? { path: '/' + showPath(rel), what } : { path: '/' + showPath(rel), what, detail })
  }

  excluded (rel: Buffer, isDir: boolean): boolean {
    return !this.excludes.empty && this.excludes.excludes('/' + rel.toString('latin1'), isDir)
  }

  compareAttributes (rel: Buffer, want: TreeEntry | RootAttributes, st: BigIntStats, abs: Buffer, isSymlink: boolean): void {
    if (!isSymlink && Number(st.mode & 0o7777n) !== want.mode) this.diff(rel, 'mode', `${Number(st.mode & 0o7777n).toString(8)} != ${want.mode.toString(8)}`)
    if (this.privileged && (Number(st.uid) !== want.uid || Number(st.gid) !== want.gid)) this.diff(rel, 'owner', `${st.uid}:${st.gid} != ${want.uid}:${want.gid}`)
    const m = mtimeOf(st)
    if (m.mtimeSec !== want.mtimeSec || m.mtimeNsec !== want.mtimeNsec) this.diff(rel, 'mtime', `${m.mtimeSec}.${m.mtimeNsec} != ${want.mtimeSec}.${want.mtimeNsec}`)
    if (!xattrsEqual(readXattrs(abs), want.xattrs)) this.diff(rel, 'xattrs')
  }

  async dir (node: DirNode, abs: Buffer, rel: Buffer): Promise<void> {
    const wanted = new Set(node.entries.map(e => nameKey(e.name)))
    for (const name of await readdir(abs, { encoding: 'buffer' })) {
      if (wanted.has(nameKey(name))) continue
      const childRel = rel.length === 0 ? Buffer.from(name) : joinPath(rel, name)
      const st = await lstat(joinPath(abs, name)).catch(() => null)
      if (this.excluded(childRel, st?.isDirectory() === true)) continue
      this.diff(childRel, 'extra')
    }
    for (const entry of node.entries) {
      const childRel = rel.length === 0 ? Buffer.from(entry.name) : joinPath(rel, entry.name)
      const childAbs = joinPath(abs, entry.name)
      if (this.excluded(childRel, entry.type === 'dir')) continue
      this.result.checked++
      const st = await lstat(childAbs, { bigint: true }).catch(() => null)
      if (st === null) {
        if ((entry.type === 'char' || entry.type === 'block') && !this.privileged) continue
        this.diff(childRel, 'missing')
        continue
      }
      const actual = entryTypeOf(st)
      const expected = entry.type === 'hardlink' ? 'file' : entry.type
      if (actual !== expected) { this.diff(childRel, 'type', `${actual ?? 'unknown'} != ${expected}`); continue }
      if (entry.type === 'hardlink') { this.hardlinks.push({ rel: childRel, st, link: entry.link ?? new Uint8Array() }); continue }
      this.compareAttributes(childRel, entry, st, childAbs, entry.type === 'symlink')
      switch (entry.type) {
        case 'dir': {
          const child = node.children.get(nameKey(entry.name))
          if (child !== undefined) await this.dir(child, childAbs, childRel)
          break
        }
        case 'file':
          if (Number(st.size) !== entry.size) this.diff(childRel, 'size', `${st.size} != ${entry.size ?? 0}`)
          else if (!(await this.contentMatches(childAbs, entry))) this.diff(childRel, 'content')
          break
        case 'symlink':
          if (Buffer.compare(await readlink(childAbs, { encoding: 'buffer' }), entry.link ?? new Uint8Array()) !== 0) this.diff(childRel, 'symlink target')
          break
        case 'char':
        case 'block': {
          const { major, minor } = splitDev(st.rdev)
          if (major !== entry.major || minor !== entry.minor) this.diff(childRel, 'device', `${major}:${minor} != ${entry.major ?? 0}:${entry.minor ?? 0}`)
          break
        }
        default:
          break
      }
    }
  }

  async contentMatches (abs: Buffer, entry: TreeEntry): Promise<boolean> {
    const fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW)
    try {
      if (entry.inline !== undefined) {
        const buf = Buffer.alloc(entry.inline.length)
        await fh.read(buf, 0, buf.length, 0)
        return Buffer.compare(buf, entry.inline) === 0
      }
      let offset = 0
      for (const seg of entry.segments ?? []) {
        if (seg.cid !== undefined) {
          const buf = Buffer.allocUnsafe(seg.length)
          const { bytesRead } = await fh.read(buf, 0, seg.length, offset)
          if (bytesRead !== seg.length) return false
          const matches = seg.offset === undefined
            ? matchesCid(seg.cid, buf)
            : Buffer.compare(buf, segmentContent(seg, await this.packs.get(this.blocks, seg.cid)) ?? new Uint8Array()) === 0
          if (!matches) return false
        } else {
          for (let pos = 0; pos < seg.length; pos += READ_SIZE) {
            const n = Math.min(READ_SIZE, seg.length - pos)
            const buf = Buffer.alloc(n)
            await fh.read(buf, 0, n, offset + pos)
            if (buf.some(b => b !== 0)) return false
          }
        }
        offset += seg.length
      }
      return true
    } finally {
      await fh.close()
    }
  }

  async links (): Promise<void> {
    for (const h of this.hardlinks) {
      const first = await lstat(joinPath(this.root, h.link), { bigint: true }).catch(() => null)
      if (first === null || first.ino !== h.st.ino || first.dev !== h.st.dev) this.diff(h.rel, 'hardlink', `not linked to /${showPath(h.link)}`)
    }
  }
}
