/**
 * Block deploy: write a block image (a version of kind 'block') to a block device or a regular
 * file. Only what differs is written, at the same offsets:
 *
 * - 'diff' mode: the target holds the version recorded as deployed there (finished, not
 *   interrupted): a data segment equal to the old one at the same offset is skipped, a changed
 *   one written; where the new image has a hole and the old had data, the range is punched
 *   (file) or zeroed (device).
 * - 'scan' mode (first deploy, repair, or after an interrupted deploy): what the target holds is
 *   unknown, so each data segment's range is read and hashed, and written only when it differs;
 *   hole ranges are punched (file) or read and zeroed where not zero (device). Ranges a regular
 *   file reports as holes, and a freshly created file, are known zeros and need no reading.
 *
 * A regular file is created or truncated to the image size and written sparse: holes are never
 * written, nor all-zero 4 KiB blocks of data chunks where the file is known to be zero. A device
 * is never truncated, must be at least the image size, and is opened with O_EXCL, which the
 * kernel refuses while the device is mounted or held. Every write is positional inside
 * [0, image size) of the one file descriptor opened on the target.
 */
import { open, realpath, lstat } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { constants } from 'node:fs'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { basename, dirname, join, resolve as resolvePath } from 'node:path'
import type { CID } from 'multiformats/cid'
import type { ImageStore, ResolvedVersion } from '../image/image-store.ts'
import type { BlockGetter } from '../store/block-store.ts'
import type { DeployProgress, DeployResult } from './deploy.ts'
import { loadTree } from '../tree/tree-loader.ts'
import { BLOCK_IMAGE_ENTRY } from '../../protocols/version.ts'
import type { TreeEntry } from '../../protocols/tree.ts'
import { cidFor } from '../store/cid.ts'
import { nativeFs } from '../native/fsx.ts'
import { blockDeviceSize, isZero, ZERO_BLOCK } from '../image/block-capture.ts'
import { readTargetState, writeTargetState, type DeployedVersion, type TargetState } from './target-state.ts'
import { ImgmeshError, isErrno, fsError } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('block-deploy')
const run = promisify(execFile)
/** Segments fetched and written at once (chunks may come from the swarm, one at a time per request). */
const CONCURRENCY = 8
const ZEROS = Buffer.alloc(1024 * 1024)

export interface BlockDeployOptions {
  target: string
  /** Where chunks come from (default: the local store). The swarm passes its fetcher. */
  blocks?: BlockGetter
  /** Work out and report what would be written; write nothing (reads the target to compare). */
  dryRun?: boolean
  onProgress?: (p: DeployProgress) => void
}

export interface BlockDeployResult extends DeployResult {
  kind: 'block'
  targetType: 'device' | 'file'
  /** Image size; a larger device keeps its bytes after it. */
  size: number
  /** Data bytes equal on the target and left alone. */
  bytesSkipped: number
  /** Bytes punched or zeroed where the image has a hole and the target had data. */
  bytesZeroed: number
  /** Bytes read from the target to compare (scan mode). */
  bytesCompared: number
  segmentsWritten: number
  segmentsSkipped: number
}

/** The `disk` entry of a block image version, validated. */
export async function loadBlockEntry (blocks: BlockGetter, resolved: ResolvedVersion): Promise<TreeEntry> {
  const { body } = resolved.version
  const label = `${body.image}@${body.number}`
  if (body.kind !== 'block') throw new ImgmeshError('EBADARG', `${label} is a directory tree, not a block image`)
  const tree = await loadTree(blocks, body.tree)
  const entry = tree.entries[0]
  if (tree.entries.length !== 1 || entry.type !== 'file' || Buffer.from(entry.name).toString('latin1') !== BLOCK_IMAGE_ENTRY || entry.size === undefined) {
    throw new ImgmeshError('EBADTREE', `${label} is marked as a block image but its tree does not hold exactly one file named ${BLOCK_IMAGE_ENTRY}`)
  }
  // a block image's chunks are whole blocks: packed runs belong to directory trees' small files
  if (entry.segments?.some(s => s.offset !== undefined) === true) throw new ImgmeshError('EBADTREE', `${label} is a block image with packed segments`)
  return entry
}

interface Placed { start: number, end: number, cid?: CID }

/** Data segments (and inline content) of an entry, with their offsets. */
function placedSegments (entry: TreeEntry): { all: Placed[], data: Placed[] } {
  const all: Placed[] = []
  let pos = 0
  for (const s of entry.segments ?? []) {
    all.push({ start: pos, end: pos + s.length, cid: s.cid })
    pos += s.length
  }
  return { all, data: all.filter(p => p.cid !== undefined) }
}

/** Where the target may hold non-zero bytes: known old segments (with CID) or unknown ranges (none). */
type Knowledge = Placed[]

type Item =
  | { kind: 'write', start: number, end: number, cid: CID, sparse: boolean }
  | { kind: 'compare', start: number, end: number, cid: CID }
  | { kind: 'zero', start: number, end: number, known: boolean }
  | { kind: 'inline', start: number, end: number, bytes: Uint8Array }

/** Compares the image's segments with what the target holds and lists the work. */
function plan (entry: TreeEntry, knowledge: Knowledge): { items: Item[], skipped: number, skippedBytes: number } {
  const items: Item[] = []
  let skipped = 0
  let skippedBytes = 0
  if (entry.inline !== undefined) {
    if (entry.inline.length > 0) items.push({ kind: 'inline', start: 0, end: entry.inline.length, bytes: entry.inline })
    return { items, skipped, skippedBytes }
  }
  let j = 0
  for (const seg of placedSegments(entry).all) {
    while (j < knowledge.length && knowledge[j].end <= seg.start) j++
    const overlaps: Placed[] = []
    for (let k = j; k < knowledge.length && knowledge[k].start < seg.end; k++) overlaps.push(knowledge[k])
    if (seg.cid === undefined) {
      for (const o of overlaps) items.push({ kind: 'zero', start: Math.max(o.start, seg.start), end: Math.min(o.end, seg.end), known: o.cid !== undefined })
      continue
    }
    if (overlaps.length === 0) { items.push({ kind: 'write', start: seg.start, end: seg.end, cid: seg.cid, sparse: true }); continue }
    const same = overlaps.length === 1 && overlaps[0].start === seg.start && overlaps[0].end === seg.end && overlaps[0].cid !== undefined && overlaps[0].cid.equals(seg.cid)
    if (same) { skipped++; skippedBytes += seg.end - seg.start; continue }
    if (overlaps.some(o => o.cid === undefined)) items.push({ kind: 'compare', start: seg.start, end: seg.end, cid: seg.cid })
    else items.push({ kind: 'write', start: seg.start, end: seg.end, cid: seg.cid, sparse: false })
  }
  return { items, skipped, skippedBytes }
}

interface ResolvedTarget { path: string, type: 'device' | 'file', exists: boolean, size: number }

async function resolveTarget (target: string): Promise<ResolvedTarget> {
  const abs = resolvePath(target)
  let real: string
  try {
    real = await realpath(abs)
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new ImgmeshError('ETARGET', `target ${target}: ${(err as Error).message}`, { path: target, cause: err })
    // A new image file: its directory must exist; the file itself is created (never through a symlink).
    let dir: string
    try { dir = await realpath(dirname(abs)) } catch (e) { throw new ImgmeshError('ETARGET', `target ${target}: its directory does not exist`, { path: target, cause: e }) }
    return { path: join(dir, basename(abs)), type: 'file', exists: false, size: 0 }
  }
  const st = await lstat(real, { bigint: true })
  if (st.isBlockDevice()) return { path: real, type: 'device', exists: true, size: await blockDeviceSize(real, st) }
  if (st.isFile()) return { path: real, type: 'file', exists: true, size: Number(st.size) }
  throw new ImgmeshError('ETARGET', `target ${target} is not a block device or a regular file; a block image is written to a disk, a partition or an image file`, { path: target })
}

async function openTarget (t: ResolvedTarget, mode: number, dryRun: boolean): Promise<{ fh: FileHandle | null, created: boolean }> {
  const label = t.path
  if (dryRun) {
    if (!t.exists) return { fh: null, created: false }
    try { return { fh: await open(t.path, constants.O_RDONLY | constants.O_NOFOLLOW), created: false } } catch (err) { throw fsError(err, 'opening', label) }
  }
  try {
    if (t.type === 'device') {
      // O_EXCL: the kernel refuses (EBUSY) while the device is mounted or held by RAID/LVM.
      return { fh: await open(t.path, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_EXCL), created: false }
    }
    if (t.exists) return { fh: await open(t.path, constants.O_RDWR | constants.O_NOFOLLOW), created: false }
    return { fh: await open(t.path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode), created: true }
  } catch (err) {
    if (isErrno(err, 'EBUSY')) throw new ImgmeshError('ETARGET', `device ${label} is in use (mounted, or part of a RAID or LVM volume); unmount it before deploying`, { path: label, cause: err })
    if (isErrno(err, 'ELOOP')) throw new ImgmeshError('EUNSAFEPATH', `refusing to write ${label}: it became a symlink`, { path: label, cause: err })
    if (isErrno(err, 'EEXIST')) throw new ImgmeshError('ETARGET', `target ${label} appeared while the deploy started; run it again`, { path: label, cause: err })
    throw fsError(err, 'opening', label)
  }
}

async function readFully (fh: FileHandle, buf: Buffer, start: number, path: string): Promise<void> {
  let got = 0
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, start + got).catch((err: unknown) => { throw fsError(err, 'reading', path) })
    if (bytesRead === 0) { buf.fill(0, got); return }
    got += bytesRead
  }
}

async function writeFully (fh: FileHandle, bytes: Uint8Array, from: number, to: number, pos: number, path: string): Promise<void> {
  let done = from
  while (done < to) {
    const { bytesWritten } = await fh.write(bytes, done, to - done, pos + (done - from)).catch((err: unknown) => { throw fsError(err, 'writing', path) })
    done += bytesWritten
  }
}

class BlockWriter {
  readonly fh: FileHandle | null
  readonly path: string
  readonly type: 'device' | 'file'
  readonly size: number
  readonly blocks: BlockGetter
  readonly result: BlockDeployResult
  readonly dryRun: boolean
  readonly onProgress?: (p: DeployProgress) => void
  totalBytes = 0
  private punch = true

  constructor (fh: FileHandle | null, t: ResolvedTarget, size: number, blocks: BlockGetter, result: BlockDeployResult, opts: BlockDeployOptions) {
    this.fh = fh
    this.path = t.path
    this.type = t.type
    this.size = size
    this.blocks = blocks
    this.result = result
    this.dryRun = opts.dryRun === true
    this.onProgress = opts.onProgress
  }

  private check (start: number, end: number): void {
    if (!(start >= 0 && start <= end && end <= this.size)) throw new ImgmeshError('EUNSAFEPATH', `refusing to write ${this.path} at [${start}, ${end}): outside the image's ${this.size} bytes`, { path: this.path })
  }

  private async chunk (cid: CID, length: number): Promise<Uint8Array> {
    const bytes = await this.blocks.get(cid)
    if (bytes.length !== length) throw new ImgmeshError('EBADTREE', `chunk ${cid.toString()} holds ${bytes.length} bytes where the image says ${length}`)
    return bytes
  }

  private progress (): void {
    this.onProgress?.({ files: this.result.segmentsWritten, bytes: this.result.bytesWritten, totalBytes: this.totalBytes, path: this.path })
  }

  async run (item: Item): Promise<void> {
    this.check(item.start, item.end)
    const length = item.end - item.start
    switch (item.kind) {
      case 'inline':
        if (this.fh !== null && !this.dryRun) await writeFully(this.fh, item.bytes, 0, length, item.start, this.path)
        this.wrote(length)
        return
      case 'write':
        await this.write(item.cid, item.start, item.end, item.sparse)
        return
      case 'compare': {
        if (this.fh !== null) {
          const buf = Buffer.allocUnsafe(length)
          await readFully(this.fh, buf, item.start, this.path)
          this.result.bytesCompared += length
          if (cidFor(buf).equals(item.cid)) { this.result.segmentsSkipped++; this.result.bytesSkipped += length; return }
        }
        await this.write(item.cid, item.start, item.end, false)
        return
      }
      case 'zero':
        await this.zero(item.start, item.end, item.known)
    }
  }

  private wrote (bytes: number): void {
    this.result.bytesWritten += bytes
    this.result.segmentsWritten++
    this.progress()
  }

  private async write (cid: CID, start: number, end: number, sparse: boolean): Promise<void> {
    const length = end - start
    if (this.dryRun || this.fh === null) { this.wrote(length); return }
    const bytes = await this.chunk(cid, length)
    if (!sparse) {
      await writeFully(this.fh, bytes, 0, length, start, this.path)
      this.wrote(length)
      return
    }
    // The target is known to be zero here: leave its all-zero aligned blocks unwritten (sparse).
    let written = 0
    let runStart = -1
    const firstBlock = Math.floor(start / ZERO_BLOCK) * ZERO_BLOCK
    for (let b = firstBlock; b < end; b += ZERO_BLOCK) {
      const from = Math.max(b, start) - start
      const to = Math.min(b + ZERO_BLOCK, end) - start
      if (isZero(bytes, from, to)) {
        if (runStart >= 0) { await writeFully(this.fh, bytes, runStart, from, start + runStart, this.path); written += from - runStart; runStart = -1 }
      } else if (runStart < 0) {
        runStart = from
      }
    }
    if (runStart >= 0) { await writeFully(this.fh, bytes, runStart, length, start + runStart, this.path); written += length - runStart }
    this.wrote(written)
  }

  /** Makes [start, end) read as zeros. known: the target had data there (old version); else look first. */
  private async zero (start: number, end: number, known: boolean): Promise<void> {
    if (this.type === 'file') {
      // A regular file: punch the range (cheap even where it is zero already).
      if (this.dryRun || this.fh === null) { this.result.bytesZeroed += end - start; return }
      if (this.punch && await this.punchHole(start, end)) { this.result.bytesZeroed += end - start; return }
      await this.writeZeros(start, end)
      return
    }
    if (known) {
      if (!this.dryRun) await this.writeZeros(start, end)
      else this.result.bytesZeroed += end - start
      return
    }
    // A device of unknown content: read, and write zeros only over blocks that are not zero.
    if (this.fh === null) return
    for (let pos = start; pos < end;) {
      const n = Math.min(ZEROS.length, end - pos)
      const buf = Buffer.allocUnsafe(n)
      await readFully(this.fh, buf, pos, this.path)
      this.result.bytesCompared += n
      let runStart = -1
      for (let i = 0; i < n; i += ZERO_BLOCK) {
        const to = Math.min(n, i + ZERO_BLOCK)
        if (isZero(buf, i, to)) {
          if (runStart >= 0) { await this.zeroOrCount(pos + runStart, pos + i); runStart = -1 }
        } else if (runStart < 0) {
          runStart = i
        }
      }
      if (runStart >= 0) await this.zeroOrCount(pos + runStart, pos + n)
      pos += n
    }
  }

  private async zeroOrCount (start: number, end: number): Promise<void> {
    if (this.dryRun) this.result.bytesZeroed += end - start
    else await this.writeZeros(start, end)
  }

  private async writeZeros (start: number, end: number): Promise<void> {
    if (this.fh === null) return
    this.check(start, end)
    for (let pos = start; pos < end;) {
      const n = Math.min(ZEROS.length, end - pos)
      await writeFully(this.fh, ZEROS, 0, n, pos, this.path)
      pos += n
    }
    this.result.bytesZeroed += end - start
  }

  /**
   * fallocate(PUNCH_HOLE | KEEP_SIZE) through util-linux fallocate(1) on this process's own
   * descriptor (/proc/PID/fd/N: the very file opened, whatever happened to its path since).
   * Node has no fallocate; when the tool or the filesystem cannot punch, zeros are written.
   */
  private async punchHole (start: number, end: number): Promise<boolean> {
    if (this.fh === null) return false
    try {
      await run('fallocate', ['--punch-hole', '--keep-size', '--offset', String(start), '--length', String(end - start), `/proc/${process.pid}/fd/${this.fh.fd}`])
      return true
    } catch (err) {
      this.punch = false
      this.result.warnings.push(`cannot punch holes in ${this.path} (${(err as Error).message.split('\n')[0]}): writing zeros instead`)
      return false
    }
  }
}

/** Work items run CONCURRENCY at a time, in offset order. */
async function runItems (items: Item[], writer: BlockWriter): Promise<void> {
  let next = 0
  let failure: unknown = null
  const worker = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const item = items[next++]
      try { await writer.run(item) } catch (err) { failure ??= err }
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker))
  if (failure !== null) throw failure
}

/** Where the version deployed before on this target had data, when it can be trusted (diff mode). */
async function previousKnowledge (store: ImageStore, state: TargetState, resolved: ResolvedVersion, t: ResolvedTarget): Promise<{ knowledge: Knowledge, size: number } | null> {
  const d = state.deployed
  if (d === undefined || state.inProgress !== undefined || d.cid.equals(resolved.cid) || !t.exists) return null
  let entry: TreeEntry
  try {
    entry = await loadBlockEntry(store.blocks, { cid: d.cid, version: await store.getVersion(d.cid) })
  } catch {
    return null
  }
  const size = entry.size ?? 0
  // A file of another size was changed behind imgmesh's back: compare by reading instead.
  if (t.type === 'file' && t.size !== size) return null
  if (entry.inline !== undefined) return { knowledge: [{ start: 0, end: entry.inline.length }], size }
  return { knowledge: placedSegments(entry).data, size }
}

/** Data ranges of an existing regular file, clipped to size (unknown content). */
function fileDataRanges (fh: FileHandle, size: number, fileSize: number): Knowledge {
  const out: Knowledge = []
  for (const [offset, length] of nativeFs.dataRanges(fh.fd, Math.min(size, fileSize))) out.push({ start: offset, end: offset + length })
  return out
}

/** Writes a block image version to a block device or a regular file (created if missing). */
export async function deployBlock (store: ImageStore, resolved: ResolvedVersion, opts: BlockDeployOptions): Promise<BlockDeployResult> {
  const blocks = opts.blocks ?? store.blocks
  const { body } = resolved.version
  const entry = await loadBlockEntry(blocks, resolved)
  const size = entry.size ?? 0
  const t = await resolveTarget(opts.target)
  const dryRun = opts.dryRun === true
  if (t.type === 'device' && t.size < size) {
    throw new ImgmeshError('ETARGET', `device ${t.path} holds ${t.size} bytes, less than the ${size} bytes of ${body.image}@${body.number}; nothing was written`, { path: t.path })
  }
  const state = await readTargetState(store.targetsDir, t.path)
  const previous = await previousKnowledge(store, state, resolved, t)
  const result: BlockDeployResult = {
    image: body.image, version: body.number, cid: resolved.cid.toString(), target: t.path, mode: previous === null ? 'scan' : 'diff', dryRun,
    created: 0, updated: 0, attributes: 0, deleted: 0, linked: 0, bytesWritten: 0, changes: [], warnings: [],
    kind: 'block', targetType: t.type, size, bytesSkipped: 0, bytesZeroed: 0, bytesCompared: 0, segmentsWritten: 0, segmentsSkipped: 0
  }
  if (t.type === 'device' && t.size > size) result.warnings.push(`${t.path} is larger than the image (${t.size} > ${size} bytes): the bytes after ${size} are left as they were`)

  const record: DeployedVersion = { image: body.image, number: body.number, cid: resolved.cid, tree: body.tree, at: new Date().toISOString(), excludes: [] }
  const { fh, created } = await openTarget(t, entry.mode & 0o777, dryRun)
  try {
    if (fh !== null) {
      // The descriptor must be the thing inspected: a device stays that device, a file a plain file.
      const st = await fh.stat({ bigint: true })
      if (t.type === 'device' ? !st.isBlockDevice() : !st.isFile()) throw new ImgmeshError('EUNSAFEPATH', `refusing to write ${t.path}: it changed type while the deploy started`, { path: t.path })
    }
    if (!dryRun) await writeTargetState(store.targetsDir, { ...state, inProgress: record })

    // What the target may hold where: old segments (diff), unknown ranges (scan), zeros elsewhere.
    let knowledge: Knowledge
    if (previous !== null) {
      knowledge = previous.knowledge.filter(k => k.start < size).map(k => ({ ...k, end: Math.min(k.end, size) }))
      if (t.type === 'device' && previous.size < size) knowledge.push({ start: previous.size, end: size })
    } else if (t.type === 'device') {
      knowledge = size > 0 ? [{ start: 0, end: size }] : []
    } else if (fh === null || created) {
      knowledge = []
    } else {
      knowledge = fileDataRanges(fh, size, t.size)
    }
    if (t.type === 'file' && fh !== null && !dryRun) {
      try { await fh.truncate(size) } catch (err) { throw fsError(err, 'resizing', t.path) }
      if (created && process.getuid?.() === 0) {
        try { await fh.chown(entry.uid, entry.gid) } catch (err) { result.warnings.push(`cannot set the owner of ${t.path}: ${(err as Error).message}`) }
      }
      if (created) await fh.chmod(entry.mode & 0o7777).catch(() => {})
    }
    const p = plan(entry, knowledge)
    result.segmentsSkipped += p.skipped
    result.bytesSkipped += p.skippedBytes
    const writer = new BlockWriter(fh, t, size, blocks, result, opts)
    writer.totalBytes = p.items.reduce((s, i) => s + (i.kind === 'zero' ? 0 : i.end - i.start), 0)
    await runItems(p.items, writer)
    if (fh !== null && !dryRun) {
      try { await fh.sync() } catch (err) { throw fsError(err, 'flushing', t.path) }
    }
  } finally {
    await fh?.close()
  }

  const changed = created || result.bytesWritten > 0 || result.bytesZeroed > 0 || (t.type === 'file' && t.size !== size)
  if (created || !t.exists) result.created = 1
  else if (changed) result.updated = 1
  if (changed) result.changes.push({ kind: result.created === 1 ? 'create' : 'update', path: t.path, type: t.type === 'device' ? 'block' : 'file', bytes: result.bytesWritten })
  if (!dryRun) {
    const next: TargetState = { target: t.path, deployed: { ...record, at: new Date().toISOString() } }
    if (state.deployed !== undefined && !state.deployed.cid.equals(resolved.cid)) next.previous = state.deployed
    else if (state.previous !== undefined) next.previous = state.previous
    await writeTargetState(store.targetsDir, next)
  }
  log.info('deployed block image', { image: body.image, number: body.number, target: t.path, mode: result.mode, written: result.bytesWritten, skipped: result.bytesSkipped, zeroed: result.bytesZeroed })
  return result
}

