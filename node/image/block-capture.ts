/**
 * Block capture: a raw disk, partition or disk-image file as the next version of an image
 * (SystemImager's "block device migration"). The version has `kind: 'block'` and its tree holds
 * one file entry, `disk`, whose content is the device's bytes:
 *
 * - The bytes are read in order and classified per aligned 4 KiB block. A run of all-zero blocks
 *   of at least HOLE_MIN bytes is a hole (not stored, not sent, written sparse); the data between
 *   holes is cut with the content-defined chunker, which restarts after every hole. A chunk that
 *   happens to be all zeros is a hole too. The rule depends on the bytes only, so a device and an
 *   image file of the same bytes give the same segments, whatever the file's allocation.
 * - Holes a regular file reports (SEEK_DATA/SEEK_HOLE) are known zeros and are not read.
 * - Chunks equal to the previous version's keep their CIDs, so they are neither stored nor
 *   fetched again: that is content addressing, nothing block-specific.
 */
import { open, realpath, readFile, lstat } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { constants } from 'node:fs'
import type { BigIntStats } from 'node:fs'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { CID } from 'multiformats/cid'
import type { ImageStore } from './image-store.ts'
import type { CaptureResult } from './capture.ts'
import { Chunker, DEFAULT_CHUNKING, type ChunkingOptions } from '../chunk/chunker.ts'
import { encodeTree, MAX_TREE_BLOCK, type Segment, type TreeEntry } from '../../protocols/tree.ts'
import { BLOCK_IMAGE_ENTRY, type RootAttributes } from '../../protocols/version.ts'
import { DAG_CBOR_CODE } from '../store/cid.ts'
import { nativeFs } from '../native/fsx.ts'
import { mtimeOf, splitDev } from '../tree/entry-metadata.ts'
import { ImgmeshError, isErrno } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('block-capture')
const run = promisify(execFile)

/** Zero detection and sparse writing work on aligned blocks of this size. */
export const ZERO_BLOCK = 4096
/**
 * A run of all-zero blocks at least this long is a hole. Shorter runs stay inside data chunks:
 * cutting the data at every free 4 KiB block of a filesystem image gave chunks far below the
 * chunker's minimum (more blocks, more per-block overhead) for little sparseness.
 */
export const HOLE_MIN = 64 * 1024
const READ_SIZE = 4 * 1024 * 1024
const ZEROS = Buffer.alloc(READ_SIZE)
const ZERO_BYTES = new Uint8Array(ZEROS.buffer, ZEROS.byteOffset, ZEROS.length)

export interface BlockCaptureOptions {
  /** A block device (/dev/sdb1, /dev/loop3) or a regular file holding a disk image. */
  device: string
  image: string
  message?: string
  /** Create a version even when the bytes equal the newest version's. */
  allowEmpty?: boolean
  chunking?: ChunkingOptions
  /** Keep new chunks as zstd frames where that saves a tenth (default true; see CaptureOptions.compress). */
  compress?: boolean
  onProgress?: (p: BlockProgress) => void
}

export interface BlockProgress { bytes: number, totalBytes: number, path: string }

export interface BlockCaptureResult extends CaptureResult {
  /** Real path of what was read. */
  device: string
  source: 'device' | 'file'
  size: number
  /** Bytes in data segments (stored or already in the store), and in holes. */
  dataBytes: number
  holeBytes: number
  segments: number
  chunks: number
}

/** What a path is, for block capture and deploy: a block device (with its size) or a regular file. */
export interface BlockTarget { path: string, type: 'device' | 'file', size: number, st: BigIntStats }

/** True when bytes[start, end) are all zero. */
export function isZero (bytes: Uint8Array, start = 0, end = bytes.length): boolean {
  let i = start
  while (i < end) {
    const n = Math.min(end - i, ZEROS.length)
    if (ZEROS.compare(bytes, i, i + n, 0, n) !== 0) return false
    i += n
  }
  return true
}

/**
 * Size of a block device in bytes: /sys/dev/block/MAJ:MIN/size (512-byte sectors, no ioctl, no
 * process), else `blockdev --getsize64`.
 */
export async function blockDeviceSize (path: string, st: BigIntStats): Promise<number> {
  const { major, minor } = splitDev(st.rdev)
  try {
    const sectors = (await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim()
    if (/^[0-9]+$/.test(sectors)) return Number(sectors) * 512
  } catch {}
  try {
    const { stdout } = await run('blockdev', ['--getsize64', path])
    const n = stdout.trim()
    if (/^[0-9]+$/.test(n)) return Number(n)
  } catch (err) {
    throw new ImgmeshError('EIO', `cannot read the size of block device ${path}: ${(err as Error).message}`, { path, cause: err })
  }
  throw new ImgmeshError('EIO', `cannot read the size of block device ${path}`, { path })
}

/** Resolves a path to a block device or regular file; anything else is refused. */
export async function inspectBlockPath (path: string, action: string): Promise<BlockTarget> {
  let real: string
  try {
    real = await realpath(path)
  } catch (err) {
    throw new ImgmeshError('EBADARG', `cannot ${action} ${path}: ${(err as Error).message}`, { path, cause: err })
  }
  const st = await lstat(real, { bigint: true })
  if (st.isBlockDevice()) return { path: real, type: 'device', size: await blockDeviceSize(real, st), st }
  if (st.isFile()) return { path: real, type: 'file', size: Number(st.size), st }
  throw new ImgmeshError('EBADARG', `cannot ${action} ${path}: not a block device or a regular file`, { path })
}

/** [offset, length] ranges to read: the file's data ranges widened to whole ZERO_BLOCKs, merged. */
function readRanges (fd: number, source: BlockTarget): Array<[number, number]> {
  const size = source.size
  if (source.type === 'device') return size > 0 ? [[0, size]] : []
  const out: Array<[number, number]> = []
  for (const [offset, length] of nativeFs.dataRanges(fd, size)) {
    const a = Math.floor(offset / ZERO_BLOCK) * ZERO_BLOCK
    const b = Math.min(size, Math.ceil((offset + length) / ZERO_BLOCK) * ZERO_BLOCK)
    const last = out[out.length - 1]
    if (last !== undefined && last[0] + last[1] >= a) last[1] = Math.max(last[1], b - last[0])
    else out.push([a, b - a])
  }
  return out
}

/**
 * Builds the segment list of a device's bytes. Feed it the bytes in order: `zeros(n)` for known
 * zeros (holes of a sparse file), `bytes(buf)` for what was read; both must cover whole
 * ZERO_BLOCKs except at the very end.
 */
class SegmentBuilder {
  readonly segments: Segment[] = []
  readonly unique = new Map<string, number>()
  dataBytes = 0
  holeBytes = 0
  private readonly store: ImageStore
  private readonly compress: boolean
  private readonly chunker: Chunker
  /** A run of whole zero blocks not yet classified (hole, or data if too short). */
  private pendingZeros = 0

  constructor (store: ImageStore, chunking: ChunkingOptions, compress: boolean) {
    this.store = store
    this.compress = compress
    this.chunker = new Chunker(chunking)
  }

  zeros (n: number): void { this.pendingZeros += n }

  async bytes (bytes: Uint8Array): Promise<void> {
    // A plain Uint8Array view: the chunker keeps its unfinished tail with slice(), which on a
    // Buffer is a view (not a copy) into the read buffer the next read overwrites.
    const buf = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length)
    let runStart = 0
    for (let i = 0; i < buf.length; i += ZERO_BLOCK) {
      const end = Math.min(buf.length, i + ZERO_BLOCK)
      if (!isZero(buf, i, end)) continue
      if (i > runStart) await this.data(buf.subarray(runStart, i))
      this.pendingZeros += end - i
      runStart = end
    }
    if (runStart < buf.length) await this.data(buf.subarray(runStart))
  }

  async finish (): Promise<void> {
    await this.settleZeros()
    for (const c of this.chunker.finish()) await this.chunk(c)
  }

  private async data (buf: Uint8Array): Promise<void> {
    await this.settleZeros()
    for (const c of this.chunker.push(buf)) await this.chunk(c)
  }

  /** A long zero run ends the data before it and becomes a hole; a short one is data. */
  private async settleZeros (): Promise<void> {
    let n = this.pendingZeros
    if (n === 0) return
    this.pendingZeros = 0
    if (n >= HOLE_MIN) {
      for (const c of this.chunker.finish()) await this.chunk(c)
      this.hole(n)
      return
    }
    while (n > 0) {
      const k = Math.min(n, ZEROS.length)
      for (const c of this.chunker.push(ZERO_BYTES.subarray(0, k))) await this.chunk(c)
      n -= k
    }
  }

  private hole (n: number): void {
    this.holeBytes += n
    const last = this.segments[this.segments.length - 1]
    if (last !== undefined && last.cid === undefined) last.length += n
    else this.segments.push({ length: n })
  }

  private async chunk (c: Uint8Array): Promise<void> {
    if (isZero(c)) { this.hole(c.length); return }
    const { cid } = this.compress ? this.store.blocks.putCompressedSync(c) : this.store.blocks.putSync(c)
    this.dataBytes += c.length
    const key = cid.toString()
    if (!this.unique.has(key)) this.unique.set(key, c.length)
    this.segments.push({ length: c.length, cid })
  }
}

async function openSource (source: BlockTarget, warnings: string[]): Promise<FileHandle> {
  const flags = constants.O_RDONLY | constants.O_NOFOLLOW
  if (source.type === 'device') {
    // O_EXCL on a block device fails with EBUSY while the kernel uses it (mounted, in a RAID or LVM).
    try {
      return await open(source.path, flags | constants.O_EXCL)
    } catch (err) {
      if (!isErrno(err, 'EBUSY')) throw new ImgmeshError('EIO', `cannot open ${source.path}: ${(err as Error).message}`, { path: source.path, cause: err })
      warnings.push(`${source.path} is in use (mounted?): the image may be inconsistent; unmount it or capture a snapshot`)
    }
  }
  try {
    return await open(source.path, flags)
  } catch (err) {
    throw new ImgmeshError('EIO', `cannot open ${source.path}: ${(err as Error).message}`, { path: source.path, cause: err })
  }
}

/** Reads [offset, offset+length) fully; a short read means the source shrank. */
async function readAt (fh: FileHandle, buf: Buffer, length: number, offset: number, path: string): Promise<Buffer> {
  let got = 0
  while (got < length) {
    let n: number
    try {
      n = (await fh.read(buf, got, length - got, offset + got)).bytesRead
    } catch (err) {
      throw new ImgmeshError('EIO', `reading ${path} at ${offset + got}: ${(err as Error).message}`, { path, cause: err })
    }
    if (n === 0) throw new ImgmeshError('ESOURCECHANGED', `source changed during capture: ${path} shrank`, { path })
    got += n
  }
  return buf.subarray(0, length)
}

/** Captures a block device or disk-image file as the next version (kind 'block') of opts.image. */
export async function captureBlock (store: ImageStore, opts: BlockCaptureOptions): Promise<BlockCaptureResult> {
  const source = await inspectBlockPath(opts.device, 'capture')
  const dataDir = await realpath(store.dataDir).catch(() => store.dataDir)
  if (source.path.startsWith(dataDir + '/')) throw new ImgmeshError('EBADARG', `cannot capture ${opts.device}: it is inside the data directory`, { path: opts.device })

  const head = await store.refs.head(opts.image)
  let prevTree: CID | null = null
  if (head !== null) {
    const prev = await store.getVersion(head.cid)
    if (prev.body.kind !== 'block') throw new ImgmeshError('EBADARG', `image ${opts.image} holds directory trees, not block images: capture ${opts.device} under another image name`, { path: opts.device })
    prevTree = prev.body.tree
  }

  const warnings: string[] = []
  const before = store.blocks.bytesAdded
  const builder = new SegmentBuilder(store, opts.chunking ?? DEFAULT_CHUNKING, opts.compress !== false)
  const fh = await openSource(source, warnings)
  try {
    const st = source.type === 'file' ? await fh.stat({ bigint: true }) : source.st
    if (source.type === 'file' && st.size !== source.st.size) throw new ImgmeshError('ESOURCECHANGED', `source changed during capture: ${source.path} changed size`, { path: source.path })
    let cursor = 0
    let done = 0
    const progress = (): void => { opts.onProgress?.({ bytes: done, totalBytes: source.size, path: source.path }) }
    // Two buffers: the next read runs while the current one is chunked and hashed.
    const bufs = [Buffer.allocUnsafeSlow(READ_SIZE), Buffer.allocUnsafeSlow(READ_SIZE)]
    let which = 0
    for (const [offset, length] of readRanges(fh.fd, source)) {
      if (offset > cursor) { builder.zeros(offset - cursor); done += offset - cursor }
      const end = offset + length
      let pos = offset
      let pending: Promise<Buffer> | null = readAt(fh, bufs[which], Math.min(READ_SIZE, end - pos), pos, source.path)
      while (pending !== null) {
        const buf = await pending
        pos += buf.length
        which ^= 1
        pending = pos < end ? readAt(fh, bufs[which], Math.min(READ_SIZE, end - pos), pos, source.path) : null
        await builder.bytes(buf)
        done += buf.length
        progress()
      }
      cursor = end
    }
    if (cursor < source.size) builder.zeros(source.size - cursor)
    await builder.finish()
    done = source.size
    progress()
    if (source.type === 'file') {
      const after = await fh.stat({ bigint: true })
      if (after.size !== st.size || after.mtimeNs !== st.mtimeNs) throw new ImgmeshError('ESOURCECHANGED', `source changed during capture: ${source.path} was modified`, { path: source.path })
    }
  } finally {
    await fh.close()
  }

  const { mtimeSec, mtimeNsec } = mtimeOf(source.st)
  const entry: TreeEntry = {
    name: new TextEncoder().encode(BLOCK_IMAGE_ENTRY),
    type: 'file',
    mode: Number(source.st.mode & 0o7777n),
    uid: Number(source.st.uid),
    gid: Number(source.st.gid),
    mtimeSec,
    mtimeNsec,
    xattrs: [],
    size: source.size,
    segments: builder.segments
  }
  const treeBytes = encodeTree([entry])
  if (treeBytes.length > MAX_TREE_BLOCK) {
    throw new ImgmeshError('EBADARG', `cannot capture ${source.path}: its ${builder.segments.length} segments do not fit one tree block (${treeBytes.length} bytes, limit ${MAX_TREE_BLOCK}); devices with more than about 50 GiB of data need a segmented block image format`, { path: source.path })
  }
  const { cid: tree } = await store.blocks.put(treeBytes, DAG_CBOR_CODE)
  const root: RootAttributes = { mode: 0o755, uid: 0, gid: 0, mtimeSec, mtimeNsec, xattrs: [] }
  const chunkBytes = [...builder.unique.values()].reduce((s, n) => s + n, 0)
  const base = {
    device: source.path, source: source.type, size: source.size, dataBytes: builder.dataBytes, holeBytes: builder.holeBytes,
    segments: builder.segments.length, chunks: builder.unique.size, image: opts.image, tree: tree.toString(),
    files: 1, entries: 1, bytes: source.size, hashedFiles: 1, warnings
  }
  if (head !== null && prevTree !== null && prevTree.equals(tree) && opts.allowEmpty !== true) {
    return { ...base, version: head.number, cid: head.cid.toString(), created: false, newBytes: store.blocks.bytesAdded - before }
  }
  const number = head === null ? 1 : head.number + 1
  const { cid } = await store.commitVersion({
    image: opts.image,
    number,
    parents: head === null ? [] : [head.cid],
    tree,
    root,
    created: new Date().toISOString(),
    message: opts.message ?? '',
    stats: { files: 1, dirs: 0, entries: 1, bytes: source.size, chunks: builder.unique.size, chunkBytes },
    kind: 'block'
  })
  log.info('captured block image', { image: opts.image, number, cid: cid.toString(), device: source.path, size: source.size })
  return { ...base, version: number, cid: cid.toString(), created: true, newBytes: store.blocks.bytesAdded - before }
}
