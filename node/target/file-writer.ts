/**
 * Writing single entries into a target safely: every new file, link or node is made under a
 * temporary name in its directory (O_EXCL, O_NOFOLLOW), given its owner, mode, xattrs and
 * mtime, and only then renamed over its real name. Nothing here ever follows a symlink.
 *
 * The calls are synchronous (the functions stay async: content may come from the swarm). On the
 * 2-core test machine each round trip through the libuv thread pool cost 50-100 µs, and a small
 * file took nine of them; the same syscalls made directly take a few µs each. Each call here
 * blocks the event loop for one syscall, at most one chunk (256 KiB) written; deploy gives the
 * loop a turn between files. See docs/benchmarks.md.
 */
import { rm } from 'node:fs/promises'
import { chmodSync, closeSync, constants, fchmodSync, fchownSync, ftruncateSync, lchownSync, linkSync, lstatSync, mkdirSync, openSync, renameSync, symlinkSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { segmentContent, type Segment, type TreeEntry } from '../../protocols/tree.ts'
import type { RootAttributes } from '../../protocols/version.ts'
import type { BlockGetter } from '../store/block-store.ts'
import { nativeFs } from '../native/fsx.ts'
import type { RecentBlocks } from '../store/recent-blocks.ts'
import { readXattrs, joinPath, showPath } from '../tree/entry-metadata.ts'
import { ImgmeshError, isErrno } from '../errors.ts'

export const TMP_PREFIX = '.imgmesh-tmp-'
const UTIME_OMIT = (1 << 30) - 2
const S_IFIFO = 0o010000
const S_IFCHR = 0o020000
const S_IFBLK = 0o060000
const S_IFSOCK = 0o140000

export function isTmpName (name: Uint8Array): boolean {
  return Buffer.from(name).toString('latin1').startsWith(TMP_PREFIX)
}

export interface WriterContext {
  blocks: BlockGetter
  /** Root may set owners and make device nodes; others skip them with a warning. */
  privileged: boolean
  warn: (key: string, message: string) => void
  /** Packs read lately (a directory's packed files share them); absent: every file reads its own. */
  packs?: RecentBlocks
}

export type Attributes = Pick<TreeEntry, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'> | RootAttributes

/** Temporary names: a random prefix per process and a counter (random bytes per file cost a getpid() and the RNG each). */
const TMP_SESSION = TMP_PREFIX + randomBytes(6).toString('hex') + '-'
let tmpCounter = 0

function tmpPath (dir: Buffer): Buffer {
  return joinPath(dir, Buffer.from(TMP_SESSION + (tmpCounter++).toString(36)))
}

/** Maps an fs failure to a clear error naming the path in the image. */
export function writeError (err: unknown, rel: Buffer, action: string): ImgmeshError {
  if (err instanceof ImgmeshError) return err
  const code = (err as { code?: string }).code
  const where = `/${showPath(rel)}`
  if (code === 'ENOSPC' || code === 'EDQUOT') return new ImgmeshError('ENOSPC', `${action} ${where}: no space left on the target`, { path: where, cause: err })
  if (code === 'EROFS') return new ImgmeshError('ETARGET', `${action} ${where}: the target is read-only`, { path: where, cause: err })
  return new ImgmeshError('ETARGET', `${action} ${where}: ${(err as Error).message}`, { path: where, cause: err })
}

/** Sets owner, mode, xattrs (removing stale ones) and mtime, in that order (chown clears setuid and capabilities). */
export async function applyAttributes (ctx: WriterContext, path: Buffer, attrs: Attributes, isSymlink: boolean, fresh: boolean): Promise<void> {
  if (ctx.privileged) lchownSync(path, attrs.uid, attrs.gid)
  else if (!fresh || attrs.uid !== process.getuid?.() || attrs.gid !== process.getgid?.()) ctx.warn('owner', 'not running as root: file owners are not set')
  if (!isSymlink) chmodSync(path, attrs.mode)
  const current = fresh ? [] : readXattrs(path)
  for (const [name] of current) {
    if (!attrs.xattrs.some(([k]) => k === name)) {
      try { nativeFs.removeXattr(path, name) } catch (err) { xattrFailure(ctx, err, name) }
    }
  }
  for (const [name, value] of attrs.xattrs) {
    const had = current.find(([k]) => k === name)
    if (had !== undefined && Buffer.compare(had[1], value) === 0) continue
    try { nativeFs.setXattr(path, name, value) } catch (err) { xattrFailure(ctx, err, name) }
  }
  nativeFs.setTimes(path, 0, UTIME_OMIT, attrs.mtimeSec, attrs.mtimeNsec)
}

function xattrFailure (ctx: WriterContext, err: unknown, name: string): void {
  if (isErrno(err, 'EPERM') || isErrno(err, 'ENOTSUP') || isErrno(err, 'EACCES')) {
    ctx.warn(`xattr:${name.split('.')[0]}`, `cannot set ${name.split('.')[0]}.* extended attributes here (${(err as { code: string }).code})`)
    return
  }
  throw err
}

/** Removes whatever is at path (a directory recursively) without following symlinks. */
export async function removePath (path: Buffer): Promise<void> {
  let st
  try { st = lstatSync(path) } catch (err) { if (isErrno(err, 'ENOENT')) return; throw err }
  if (st.isDirectory()) await rm(path, { recursive: true, force: true })
  else await rm(path, { force: true })
}

async function moveIntoPlace (tmp: Buffer, final: Buffer): Promise<void> {
  try {
    renameSync(tmp, final)
  } catch (err) {
    if (isErrno(err, 'EISDIR') || isErrno(err, 'ENOTEMPTY') || isErrno(err, 'EEXIST') || isErrno(err, 'ENOTDIR')) {
      await removePath(final)
      renameSync(tmp, final)
      return
    }
    throw err
  }
}

/** Writes a regular file's content from its chunks (holes left sparse) and renames it into place. */
export async function writeRegularFile (ctx: WriterContext, dir: Buffer, final: Buffer, rel: Buffer, entry: TreeEntry): Promise<number> {
  const tmp = tmpPath(dir)
  let written = 0
  try {
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    try {
      if (entry.inline !== undefined) {
        writeAll(fd, entry.inline, 0)
        written = entry.inline.length
      } else {
        written = await writeSegments(ctx, fd, rel, entry)
      }
      // Owner first (chown clears setuid bits and capabilities), then mode, then xattrs, then
      // mtime once the content is complete: what applyAttributes does, on the open descriptor.
      if (ctx.privileged) fchownSync(fd, entry.uid, entry.gid)
      else if (entry.uid !== process.getuid?.() || entry.gid !== process.getgid?.()) ctx.warn('owner', 'not running as root: file owners are not set')
      fchmodSync(fd, entry.mode)
    } finally {
      closeSync(fd)
    }
    for (const [name, value] of entry.xattrs) {
      try { nativeFs.setXattr(tmp, name, value) } catch (err) { xattrFailure(ctx, err, name) }
    }
    nativeFs.setTimes(tmp, 0, UTIME_OMIT, entry.mtimeSec, entry.mtimeNsec)
    await moveIntoPlace(tmp, final)
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {})
    throw writeError(err, rel, 'writing')
  }
  return written
}

/**
 * Writes a file's chunks at their offsets. Chunks that are here are read and written one after
 * another; chunks a fetch is still bringing are all asked for at once and each written the moment
 * it arrives, in whatever order the swarm delivers them: the fetch hands them over directly,
 * instead of the deploy reading them back from the store (and hashing them again) later.
 * Returns the bytes written; nothing is written after this has returned or thrown, so the
 * descriptor may then be closed and its number reused.
 */
async function writeSegments (ctx: WriterContext, fd: number, rel: Buffer, entry: TreeEntry): Promise<number> {
  const segments = entry.segments ?? []
  if (segments.some(s => s.cid === undefined)) ftruncateSync(fd, entry.size ?? 0)
  let written = 0
  let open = true
  let failure: unknown = null
  let coming = 0
  let asked = false
  let allHere = (): void => {}
  const here = new Promise<void>((resolve) => { allHere = resolve })
  const put = (segment: Segment, offset: number, bytes: Uint8Array): void => {
    if (!open) return
    const content = segmentContent(segment, bytes)
    if (content === null) {
      const says = segment.offset === undefined ? `${segment.length}` : `at least ${segment.offset + segment.length}`
      throw new ImgmeshError('EBADBLOCK', `chunk ${String(segment.cid)} of /${showPath(rel)} has ${bytes.length} bytes, the tree says ${says}`)
    }
    writeAll(fd, content, offset)
    written += content.length
  }
  const settled = (): void => {
    coming--
    // a failed chunk fails the file at once, without waiting for the others
    if (asked && (coming === 0 || failure !== null)) allHere()
  }
  try {
    let offset = 0
    for (const segment of segments) {
      const { cid } = segment
      const at = offset
      offset += segment.length
      if (cid === undefined) continue
      if (ctx.blocks.lend?.(cid, (bytes) => { put(segment, at, bytes) }) === true) continue
      const later = ctx.blocks.whenArrived?.(cid,
        (bytes) => { try { put(segment, at, bytes) } catch (err) { failure ??= err } settled() },
        (err) => { failure ??= err; settled() }) ?? false
      if (later) coming++
      else put(segment, at, segment.offset !== undefined && ctx.packs !== undefined ? await ctx.packs.get(ctx.blocks, cid) : await ctx.blocks.get(cid))
      if (failure !== null) throw failure
    }
    asked = true
    if (coming === 0 || failure !== null) allHere()
    await here
    if (failure !== null) throw failure
    return written
  } finally {
    open = false
  }
}

function writeAll (fd: number, bytes: Uint8Array, position: number): void {
  let done = 0
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done)
}

/** Creates a symlink, device node, fifo or socket under a temporary name and renames it into place. */
export async function writeSpecial (ctx: WriterContext, dir: Buffer, final: Buffer, rel: Buffer, entry: TreeEntry): Promise<boolean> {
  if ((entry.type === 'char' || entry.type === 'block') && !ctx.privileged) {
    ctx.warn('devices', 'not running as root: device nodes are skipped')
    return false
  }
  const tmp = tmpPath(dir)
  try {
    switch (entry.type) {
      case 'symlink': symlinkSync(Buffer.from(entry.link ?? new Uint8Array()), tmp); break
      case 'fifo': nativeFs.makeNode(tmp, S_IFIFO | entry.mode, 0, 0); break
      case 'socket': nativeFs.makeNode(tmp, S_IFSOCK | entry.mode, 0, 0); break
      case 'char': nativeFs.makeNode(tmp, S_IFCHR | entry.mode, entry.major ?? 0, entry.minor ?? 0); break
      case 'block': nativeFs.makeNode(tmp, S_IFBLK | entry.mode, entry.major ?? 0, entry.minor ?? 0); break
      default: throw new ImgmeshError('EBADTREE', `cannot create ${entry.type} /${showPath(rel)} as a special file`)
    }
    await applyAttributes(ctx, tmp, entry, entry.type === 'symlink', true)
    await moveIntoPlace(tmp, final)
    return true
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {})
    throw writeError(err, rel, 'creating')
  }
}

/** Makes final a hard link of existing (both inside the target, checked by the caller). */
export async function writeHardlink (dir: Buffer, final: Buffer, rel: Buffer, existing: Buffer): Promise<void> {
  const tmp = tmpPath(dir)
  try {
    linkSync(existing, tmp)
    await moveIntoPlace(tmp, final)
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {})
    throw writeError(err, rel, 'linking')
  }
}

/** Makes sure path is a real directory (replacing anything else there); returns whether it was created. */
export async function ensureDirectory (path: Buffer, rel: Buffer): Promise<boolean> {
  try {
    const st = lstatSync(path)
    if (st.isDirectory()) return false
    await removePath(path)
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw writeError(err, rel, 'checking')
  }
  try {
    mkdirSync(path, { mode: 0o700 })
  } catch (err) {
    throw writeError(err, rel, 'creating directory')
  }
  return true
}
