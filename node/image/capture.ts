/**
 * Capture: walk a golden tree (one filesystem, excludes applied) into tree blocks and content
 * chunks, reusing the previous version's chunk lists for files whose stat did not change, and
 * record the result as the next signed version of the image.
 */
import { lstat, open, readdir, realpath } from 'node:fs/promises'
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, readlinkSync } from 'node:fs'
import type { BigIntStats } from 'node:fs'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import type { PutResult } from '../store/block-store.ts'
import { RecentBlocks } from '../store/recent-blocks.ts'
import { ImageStore } from './image-store.ts'
import { Chunker, DEFAULT_CHUNKING, chunkBytes, type ChunkingOptions } from '../chunk/chunker.ts'
import { ExcludeList, DEFAULT_CAPTURE_EXCLUDES } from '../tree/exclude.ts'
import { encodeTree, compareNames, segmentContent, type TreeEntry, type Segment } from '../../protocols/tree.ts'
import { DAG_CBOR_CODE } from '../store/cid.ts'
import type { RootAttributes } from '../../protocols/version.ts'
import { nativeFs } from '../native/fsx.ts'
import { baseEntry, entryTypeOf, readXattrs, splitDev, joinPath, showPath, xattrsEqual } from '../tree/entry-metadata.ts'
import { nameKey, type DirNode } from '../tree/tree-loader.ts'
import { readJson, writeJson } from '../store/json-file.ts'
import { captureCacheFile } from './checkout.ts'
import { ImgmeshError, isErrno, fsError } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('capture')

/** Files up to this size are kept inside their tree block instead of as a chunk. */
export const INLINE_MAX = 512
/**
 * Files above INLINE_MAX and up to this size (the chunker's average: such a file is one chunk or
 * a few small ones) are packed, in name order, with the other small files of their directory
 * into shared chunks: on a Linux /usr 93% of the files are this small, and a swarm's cost is per
 * block as much as per byte (a 64 MiB slice of /usr: 1,922 blocks without packs, 945 with).
 * Each file is one run (offset, length) of its pack. A pack ends after a file once it holds
 * PACK_MIN bytes and a hash of the file's name says so (one name in four), or before a file
 * that would take it past PACK_LIMIT. A file found unchanged keeps its run, unless its pack is
 * more than half dead or, when its directory packs new files, is under 16 KiB: then it is packed
 * anew with them (captureSmallFiles, packsToRepack).
 */
export const PACK_MAX = 64 * 1024
const PACK_MIN = 64 * 1024
const PACK_LIMIT = 256 * 1024
const READ_SIZE = 1024 * 1024
const FILE_CONCURRENCY = 4
/**
 * Metadata calls (lstat, readlink) and files up to this size are read with synchronous calls:
 * on the 2-core test machine a round trip through the libuv thread pool cost 50-100 µs against
 * 10 µs for the lstat itself, and a small file took five of them (open, read, fstat, close, plus
 * the block writes). Larger files keep asynchronous 1 MiB reads, several files at a time, so
 * the disk sees parallel reads where it matters. See docs/benchmarks.md.
 */
const SYNC_READ_MAX = READ_SIZE
/** The walk gives the event loop a turn at least this often (ms), since it runs synchronous calls. */
const YIELD_EVERY_MS = 10

export interface CaptureOptions {
  source: string
  image: string
  excludes?: string[]
  defaultExcludes?: boolean
  message?: string
  /** Create a version even when the tree is identical to the newest one. */
  allowEmpty?: boolean
  /**
   * The version this capture builds on (a checkout being committed): its tree is the base for
   * reusing unchanged files and it becomes the parent. Default: the newest version of the image.
   */
  base?: CID
  chunking?: ChunkingOptions
  /** Files up to this many bytes are kept in their tree block (default INLINE_MAX; for measurements). */
  inlineMax?: number
  /** Larger files up to this many bytes (at most 256 KiB) are packed with their directory's other small files (default PACK_MAX; 0 packs none). */
  packMax?: number
  /**
   * Keep each new chunk as one zstd frame where that saves at least a tenth (default true):
   * about half the store on a Linux tree, and the agent serving this version sends the frames
   * as they are instead of compressing every block for the wire.
   */
  compress?: boolean
  onProgress?: (p: CaptureProgress) => void
}

export interface CaptureProgress { files: number, bytes: number, path: string }

export interface CaptureResult {
  image: string
  version: number
  cid: string
  tree: string
  /** False when the tree equals the newest version's and no version was created. */
  created: boolean
  files: number
  entries: number
  bytes: number
  newBytes: number
  /** Files whose content was read and chunked (the rest reused the previous version's chunks). */
  hashedFiles: number
  warnings: string[]
}

/** Stat identity of a captured file, to know whether its content can be reused next time. */
type CacheRecord = [ino: string, ctimeNs: string, size: string, mtimeNs: string]
interface CaptureCache { source: string, tree: string, files: Record<string, CacheRecord> }

interface Walk {
  store: ImageStore
  rootDev: bigint
  excludes: ExcludeList
  chunking: ChunkingOptions
  inlineMax: number
  packMax: number
  /** Stores one chunk (compressed or not, as the capture asked) before returning. */
  putChunk: (chunk: Uint8Array) => PutResult
  hardlinks: Map<string, Buffer>
  oldCache: Record<string, CacheRecord>
  newCache: Record<string, CacheRecord>
  chunks: Set<string>
  stats: { files: number, dirs: number, entries: number, bytes: number, chunks: number, chunkBytes: number, hashedFiles: number }
  warnings: string[]
  onProgress?: (p: CaptureProgress) => void
  lastYield: number
  /** Read buffer of the synchronous small-file path (one file at a time, its chunks stored before the next read). */
  readBuf: Buffer
  /** The pack being filled (one directory's small files at a time). */
  packBuf: Buffer
  /** Old blocks read to compare touched files with their previous runs. */
  recent: RecentBlocks
}

/** Lets timers and I/O callbacks run when the walk has held the event loop for a while. */
async function pace (walk: Walk): Promise<void> {
  const now = performance.now()
  if (now - walk.lastYield < YIELD_EVERY_MS) return
  await new Promise<void>(resolve => setImmediate(resolve))
  walk.lastYield = performance.now()
}

export async function capture (store: ImageStore, opts: CaptureOptions): Promise<CaptureResult> {
  let source: string
  try {
    source = await realpath(opts.source)
  } catch (err) {
    throw new ImgmeshError('EBADARG', `cannot capture ${opts.source}: ${(err as Error).message}`, { path: opts.source })
  }
  const rootStat = await lstat(source, { bigint: true })
  if (!rootStat.isDirectory()) throw new ImgmeshError('EBADARG', `cannot capture ${opts.source}: not a directory`, { path: opts.source })
  // The user's patterns first: the first matching rule wins, so a `+ PATTERN` can re-include a default.
  const patterns = [...(opts.excludes ?? []), ...(opts.defaultExcludes === false ? [] : DEFAULT_CAPTURE_EXCLUDES)]
  // Never capture the store itself, wherever the data dir is.
  const dataDir = await realpath(store.dataDir).catch(() => store.dataDir)
  if (dataDir === source) throw new ImgmeshError('EBADARG', `cannot capture ${opts.source}: it is the data directory`, { path: opts.source })
  if (dataDir.startsWith(source + '/') || source === '/') patterns.push(source === '/' ? dataDir : dataDir.slice(source.length))

  const head = await store.refs.head(opts.image)
  const prevRef = opts.base === undefined ? head : { cid: opts.base, number: (await store.getVersion(opts.base)).body.number }
  let prevTree: DirNode | null = null
  let prevCid: CID | null = null
  let prevTreeCid: CID | null = null
  let prevRoot: RootAttributes | null = null
  if (prevRef !== null) {
    prevCid = prevRef.cid
    const prev = await store.getVersion(prevRef.cid)
    prevTreeCid = prev.body.tree
    prevRoot = prev.body.root
    try { prevTree = await store.loadTree(prev.body.tree) } catch (err) { log.warn('previous tree unavailable, hashing every file', { error: (err as Error).message }) }
  }
  const cacheFile = captureCacheFile(store, opts.image, source)
  const cache = await readJson<CaptureCache>(cacheFile)
  const oldCache = cache !== null && cache.source === source && prevTreeCid !== null && cache.tree === prevTreeCid.toString() ? cache.files : {}

  const before = store.blocks.bytesAdded
  const walk: Walk = {
    store,
    rootDev: rootStat.dev,
    excludes: new ExcludeList(patterns),
    chunking: opts.chunking ?? DEFAULT_CHUNKING,
    inlineMax: opts.inlineMax ?? INLINE_MAX,
    packMax: Math.min(opts.packMax ?? PACK_MAX, PACK_LIMIT),
    putChunk: opts.compress === false ? chunk => store.blocks.putSync(chunk) : chunk => store.blocks.putCompressedSync(chunk),
    hardlinks: new Map(),
    oldCache,
    newCache: {},
    chunks: new Set(),
    stats: { files: 0, dirs: 0, entries: 0, bytes: 0, chunks: 0, chunkBytes: 0, hashedFiles: 0 },
    warnings: [],
    onProgress: opts.onProgress,
    lastYield: performance.now(),
    readBuf: Buffer.allocUnsafeSlow(SYNC_READ_MAX),
    packBuf: Buffer.allocUnsafeSlow(PACK_LIMIT),
    recent: new RecentBlocks()
  }
  const tree = await captureDir(walk, Buffer.from(source), Buffer.alloc(0), prevTree)
  const newBytesBeforeVersion = store.blocks.bytesAdded - before
  const rootEntry = baseEntry(new Uint8Array(), 'dir', await lstat(source, { bigint: true }), readXattrs(Buffer.from(source)))
  const root: RootAttributes = { mode: rootEntry.mode, uid: rootEntry.uid, gid: rootEntry.gid, mtimeSec: rootEntry.mtimeSec, mtimeNsec: rootEntry.mtimeNsec, xattrs: rootEntry.xattrs }

  if (prevRef !== null && prevTreeCid !== null && prevTreeCid.equals(tree) && prevRoot !== null && rootsEqual(prevRoot, root) && opts.allowEmpty !== true) {
    await writeJson(cacheFile, { source, tree: tree.toString(), files: walk.newCache })
    return {
      image: opts.image, version: prevRef.number, cid: prevRef.cid.toString(), tree: tree.toString(), created: false,
      files: walk.stats.files, entries: walk.stats.entries, bytes: walk.stats.bytes, newBytes: newBytesBeforeVersion,
      hashedFiles: walk.stats.hashedFiles, warnings: walk.warnings
    }
  }
  const number = head === null ? 1 : head.number + 1
  const { cid } = await store.commitVersion({
    image: opts.image,
    number,
    parents: prevCid === null ? [] : [prevCid],
    tree,
    root,
    created: new Date().toISOString(),
    message: opts.message ?? '',
    stats: { files: walk.stats.files, dirs: walk.stats.dirs, entries: walk.stats.entries, bytes: walk.stats.bytes, chunks: walk.stats.chunks, chunkBytes: walk.stats.chunkBytes }
  })
  await writeJson(cacheFile, { source, tree: tree.toString(), files: walk.newCache })
  log.info('captured', { image: opts.image, number, cid: cid.toString() })
  return {
    image: opts.image, version: number, cid: cid.toString(), tree: tree.toString(), created: true,
    files: walk.stats.files, entries: walk.stats.entries, bytes: walk.stats.bytes, newBytes: store.blocks.bytesAdded - before,
    hashedFiles: walk.stats.hashedFiles, warnings: walk.warnings
  }
}

function rootsEqual (a: RootAttributes, b: RootAttributes): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtimeSec === b.mtimeSec && a.mtimeNsec === b.mtimeNsec && xattrsEqual(a.xattrs, b.xattrs)
}

function relLatin1 (rel: Buffer): string {
  return '/' + rel.toString('latin1')
}

function lstatOrChanged (abs: Buffer, rel: Buffer): BigIntStats {
  try {
    return lstatSync(abs, { bigint: true })
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImgmeshError('ESOURCECHANGED', `source changed during capture: /${showPath(rel)} vanished`, { path: showPath(rel) })
    throw fsError(err, 'reading', abs.toString())
  }
}

async function captureDir (walk: Walk, abs: Buffer, rel: Buffer, prev: DirNode | null): Promise<CID> {
  let names: Buffer[]
  try {
    names = await readdir(abs, { encoding: 'buffer' })
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImgmeshError('ESOURCECHANGED', `source changed during capture: /${showPath(rel)} vanished`, { path: showPath(rel) })
    throw fsError(err, 'reading directory', abs.toString())
  }
  names.sort(compareNames)
  const prevEntries = new Map<string, TreeEntry>()
  if (prev !== null) for (const e of prev.entries) prevEntries.set(nameKey(e.name), e)

  const entries: TreeEntry[] = []
  const fileTasks: Array<() => Promise<void>> = []
  const subdirs: Array<{ entry: TreeEntry, abs: Buffer, rel: Buffer, st: BigIntStats }> = []
  const small: SmallFile[] = []
  for (const name of names) {
    const childAbs = joinPath(abs, name)
    const childRel = rel.length === 0 ? Buffer.from(name) : joinPath(rel, name)
    await pace(walk)
    const st = lstatOrChanged(childAbs, childRel)
    const type = entryTypeOf(st)
    if (walk.excludes.excludes(relLatin1(childRel), st.isDirectory())) continue
    if (type === null) { walk.warnings.push(`skipped /${showPath(childRel)}: unknown file type`); continue }
    const entry = baseEntry(new Uint8Array(name), type, st, readXattrs(childAbs))
    walk.stats.entries++
    entries.push(entry)
    switch (type) {
      case 'dir':
        walk.stats.dirs++
        subdirs.push({ entry, abs: childAbs, rel: childRel, st })
        break
      case 'symlink': {
        entry.link = new Uint8Array(readlinkSync(childAbs, { encoding: 'buffer' }))
        break
      }
      case 'char':
      case 'block': {
        const { major, minor } = splitDev(st.rdev)
        entry.major = major
        entry.minor = minor
        break
      }
      case 'file': {
        if (st.nlink > 1n) {
          const key = `${st.dev}:${st.ino}`
          const first = walk.hardlinks.get(key)
          if (first !== undefined) {
            entry.type = 'hardlink'
            entry.link = new Uint8Array(first)
            break
          }
          walk.hardlinks.set(key, childRel)
        }
        walk.stats.files++
        walk.stats.bytes += Number(st.size)
        entry.size = Number(st.size)
        const prevEntry = prevEntries.get(nameKey(name))
        if (entry.size > walk.inlineMax && entry.size <= walk.packMax) { small.push({ entry, abs: childAbs, rel: childRel, st, prev: prevEntry }); break }
        fileTasks.push(async () => {
          await captureFile(walk, entry, childAbs, childRel, st, prevEntry)
          await pace(walk)
        })
        break
      }
      default:
        break
    }
  }
  await runLimited(fileTasks, FILE_CONCURRENCY)
  await captureSmallFiles(walk, small, prevEntries.values())
  for (const d of subdirs) {
    if (d.st.dev !== walk.rootDev) {
      walk.warnings.push(`not descending into /${showPath(d.rel)}: another filesystem`)
      d.entry.tree = await putTree(walk, [])
      continue
    }
    const prevChild = prev?.children.get(nameKey(d.entry.name)) ?? null
    d.entry.tree = await captureDir(walk, d.abs, d.rel, prevChild)
  }
  return await putTree(walk, entries)
}

async function putTree (walk: Walk, entries: TreeEntry[]): Promise<CID> {
  const { cid } = walk.store.blocks.putSync(encodeTree(entries), DAG_CBOR_CODE)
  return cid
}

function countChunks (walk: Walk, segments: Segment[]): void {
  for (const s of segments) {
    if (s.cid === undefined) continue
    const key = s.cid.toString()
    if (s.offset !== undefined) {
      // a pack: its bytes are the runs its files take from it
      walk.stats.chunkBytes += s.length
      if (!walk.chunks.has(key)) { walk.chunks.add(key); walk.stats.chunks++ }
      continue
    }
    if (walk.chunks.has(key)) continue
    walk.chunks.add(key)
    walk.stats.chunks++
    walk.stats.chunkBytes += s.length
  }
}

function cacheRecord (st: BigIntStats): CacheRecord {
  return [st.ino.toString(), st.ctimeNs.toString(), st.size.toString(), st.mtimeNs.toString()]
}

/** Whether a file is as the previous capture saw it (same stat), so its content can be taken from the previous tree. */
function unchanged (walk: Walk, entry: TreeEntry, rel: Buffer, st: BigIntStats, prev: TreeEntry | undefined): prev is TreeEntry {
  const old = walk.oldCache[rel.toString('base64')]
  if (prev === undefined || prev.type !== 'file' || old === undefined) return false
  const record = cacheRecord(st)
  return old.every((v, i) => v === record[i]) && prev.size === entry.size && prev.mtimeSec === entry.mtimeSec && prev.mtimeNsec === entry.mtimeNsec
}

/** Takes an unchanged file's content from the previous tree. */
function reuseContent (walk: Walk, entry: TreeEntry, rel: Buffer, st: BigIntStats, prev: TreeEntry): void {
  if (prev.inline !== undefined) entry.inline = prev.inline
  else entry.segments = prev.segments
  countChunks(walk, entry.segments ?? [])
  walk.newCache[rel.toString('base64')] = cacheRecord(st)
  walk.onProgress?.({ files: walk.stats.files, bytes: entry.size ?? 0, path: showPath(rel) })
}

async function captureFile (walk: Walk, entry: TreeEntry, abs: Buffer, rel: Buffer, st: BigIntStats, prev: TreeEntry | undefined): Promise<void> {
  if (unchanged(walk, entry, rel, st, prev)) { reuseContent(walk, entry, rel, st, prev); return }
  const key = rel.toString('base64')
  const record = cacheRecord(st)
  walk.stats.hashedFiles++
  const size = Number(st.size)
  if (size <= SYNC_READ_MAX) captureSmallFile(walk, entry, abs, rel, st, size)
  else await captureLargeFile(walk, entry, abs, rel, st, size)
  walk.newCache[key] = record
  walk.onProgress?.({ files: walk.stats.files, bytes: size, path: showPath(rel) })
}

interface SmallFile { entry: TreeEntry, abs: Buffer, rel: Buffer, st: BigIntStats, prev: TreeEntry | undefined }

/** FNV-1a of a file name: where packs end (exported for tests). */
export function nameHash (name: Uint8Array): number {
  let h = 0x811c9dc5
  for (const b of name) h = Math.imul(h ^ b, 0x01000193)
  return h >>> 0
}

/**
 * A directory's small files. Those that are as the previous capture saw them keep their content
 * from the previous tree; so does a file whose stat changed but whose bytes did not (chmod,
 * touch: compared with its previous content in the store). A changed file therefore does not
 * change its neighbours' entries, and an update moves the new bytes, plus the kept files of the
 * blocks packsToRepack gives up (half-dead packs, small blocks). The rest are read and packed
 * together; a pack of one file is a whole chunk, and a file with holes is captured on its own.
 */
async function captureSmallFiles (walk: Walk, all: SmallFile[], prevEntries: Iterable<TreeEntry>): Promise<void> {
  // Which files keep their previous content: same stat, or same bytes (chmod, touch).
  const keep: boolean[] = []
  /** Read here already (and counted as hashed). */
  const read: boolean[] = []
  /** What was read of a file that then differed (no holes): packed from here, not read again. */
  const held = new Map<SmallFile, Buffer>()
  for (const f of all) {
    let same = unchanged(walk, f.entry, f.rel, f.st, f.prev)
    read.push(false)
    if (!same && f.prev?.type === 'file' && f.prev.size === f.entry.size) {
      await pace(walk)
      walk.stats.hashedFiles++
      read[read.length - 1] = true
      const bytes = Buffer.allocUnsafe(f.entry.size ?? 0)
      const whole = readWhole(f, bytes)
      same = whole && await sameBytes(walk, f.prev, bytes)
      if (whole && !same) held.set(f, bytes)
    }
    keep.push(same)
  }
  const repack = await packsToRepack(walk, all.filter((_f, i) => keep[i]).map(f => f.prev!), prevEntries, keep.includes(false))
  const files: SmallFile[] = []
  for (let i = 0; i < all.length; i++) {
    const f = all[i]
    if (keep[i] && !packedIn(f.prev!, repack)) { reuseContent(walk, f.entry, f.rel, f.st, f.prev!); continue }
    if (!read[i]) walk.stats.hashedFiles++
    files.push(f)
  }
  const pack = walk.packBuf
  let used = 0
  let members: Array<{ entry: TreeEntry, offset: number }> = []
  const close = (): void => {
    if (members.length === 0) return
    const { cid } = walk.putChunk(pack.subarray(0, used))
    if (members.length === 1) members[0].entry.segments = [{ length: used, cid }]
    else for (const m of members) m.entry.segments = [{ length: m.entry.size ?? 0, cid, offset: m.offset }]
    if (!walk.chunks.has(cid.toString())) {
      walk.chunks.add(cid.toString())
      walk.stats.chunks++
      walk.stats.chunkBytes += used
    }
    members = []
    used = 0
  }
  for (const f of files) {
    const size = f.entry.size ?? 0
    await pace(walk)
    if (used + size > PACK_LIMIT) close()
    const bytes = pack.subarray(used, used + size)
    const got = held.get(f)
    if (got !== undefined) bytes.set(got)
    if (got === undefined && !readWhole(f, bytes)) {
      // a file with holes keeps them: read again on its own
      captureSmallFile(walk, f.entry, f.abs, f.rel, f.st, size)
    } else {
      members.push({ entry: f.entry, offset: used })
      used += size
      if (used >= PACK_MIN && (nameHash(f.entry.name) & 3) === 0) close()
    }
    walk.newCache[f.rel.toString('base64')] = cacheRecord(f.st)
    walk.onProgress?.({ files: walk.stats.files, bytes: size, path: showPath(f.rel) })
  }
  close()
}

/** A pack is packed anew once less than this share of its bytes is still used by its directory. */
const REPACK_LIVE = 0.5
/** A kept file in a block smaller than this joins its directory's new pack, when there is one. */
const REPACK_SMALL = 16 * 1024

/** The one block that holds all of a file's content (a run of a pack, or a whole chunk), if any. */
function soleBlock (e: TreeEntry): Segment | undefined {
  const s = e.segments
  return s !== undefined && s.length === 1 && s[0].cid !== undefined ? s[0] : undefined
}

/** Whether a file's content is all in one of `blocks`. */
function packedIn (e: TreeEntry, blocks: Set<string>): boolean {
  const s = soleBlock(e)
  return s !== undefined && blocks.has(s.cid!.toString())
}

/**
 * Blocks of this directory whose kept files are packed anew, so that the version does not carry
 * dead bytes or a trail of small blocks (a swarm's cost is per block as much as per byte):
 * - a pack that lost files in this capture (a file changed, went or became something else) and
 *   of which the files kept hold less than REPACK_LIVE of the bytes; dead bytes from earlier
 *   captures count when it next loses a file, and a pack that lost nothing now is not looked at;
 * - when the directory packs new files anyway (`packing`), a block under REPACK_SMALL bytes
 *   (the small pack or lone chunk an earlier change left): it joins the new pack.
 * A pack's size is read from the store, through the walk's recent blocks; a pack no longer in
 * the store is left as it is. Returns the blocks' CIDs.
 */
async function packsToRepack (walk: Walk, kept: TreeEntry[], prevEntries: Iterable<TreeEntry>, packing: boolean): Promise<Set<string>> {
  const blocks = new Map<string, { cid: CID, live: number, packed: boolean, length: number }>()
  for (const e of kept) {
    const s = soleBlock(e)
    if (s === undefined) continue
    const key = s.cid!.toString()
    const b = blocks.get(key) ?? { cid: s.cid!, live: 0, packed: s.offset !== undefined, length: s.length }
    b.live += s.length
    blocks.set(key, b)
  }
  const keptEntries = new Set<TreeEntry>(kept)
  const lost = new Set<string>()
  for (const e of prevEntries) {
    if (keptEntries.has(e)) continue
    for (const s of e.segments ?? []) if (s.offset !== undefined && s.cid !== undefined) lost.add(s.cid.toString())
  }
  const out = new Set<string>()
  for (const [key, b] of blocks) {
    const dead = b.packed && lost.has(key)
    if (!dead && !packing) continue
    if (!b.packed) {
      if (packing && b.length < REPACK_SMALL) out.add(key)
      continue
    }
    const pack = await walk.recent.get(walk.store.blocks, b.cid).catch(() => null)
    if (pack === null) continue
    if ((packing && pack.length < REPACK_SMALL) || (dead && b.live < pack.length * REPACK_LIVE)) out.add(key)
  }
  return out
}

/**
 * Whether a file read again holds the bytes of its previous entry (from the store, through the
 * walk's recent blocks: a directory's touched files share their old packs). False when the
 * previous entry is not a file of that size, or a block of it is no longer in the store.
 */
async function sameBytes (walk: Walk, prev: TreeEntry, bytes: Uint8Array): Promise<boolean> {
  if (prev.type !== 'file' || prev.size !== bytes.length || prev.segments === undefined) return false
  let at = 0
  for (const s of prev.segments) {
    const here = bytes.subarray(at, at + s.length)
    at += s.length
    if (s.cid === undefined) { if (here.some(b => b !== 0)) return false; continue }
    const got = await walk.recent.get(walk.store.blocks, s.cid).catch(() => null)
    const want = got === null ? null : segmentContent(s, got)
    if (want === null || Buffer.compare(here, want) !== 0) return false
  }
  return true
}

/** Reads a small file whole into `into` (its size); false, reading nothing, when it has holes. */
function readWhole (f: SmallFile, into: Buffer): boolean {
  let fd: number
  try {
    fd = openSync(f.abs, constants.O_RDONLY | constants.O_NOFOLLOW)
  } catch (err) {
    throw openError(err, f.rel)
  }
  try {
    const ranges = nativeFs.dataRanges(fd, into.length)
    if (ranges.length !== 1 || ranges[0][0] !== 0 || ranges[0][1] !== into.length) return false
    readFully(fd, into, 0, f.rel)
    const after = fstatSync(fd, { bigint: true })
    if (after.size !== f.st.size || after.mtimeNs !== f.st.mtimeNs) throw changed(f.rel, 'was modified')
    return true
  } finally {
    closeSync(fd)
  }
}

function openError (err: unknown, rel: Buffer): ImgmeshError {
  if (isErrno(err, 'ENOENT')) return new ImgmeshError('ESOURCECHANGED', `source changed during capture: /${showPath(rel)} vanished`, { path: showPath(rel) })
  return fsError(err, 'reading', `/${showPath(rel)}`)
}

/** Reads buf.length bytes at pos; fewer means the file shrank. */
function readFully (fd: number, buf: Buffer, pos: number, rel: Buffer): void {
  let got = 0
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, pos + got)
    if (n === 0) throw changed(rel, 'shrank')
    got += n
  }
}

/**
 * A file of at most SYNC_READ_MAX bytes, read whole into the walk's buffer with synchronous
 * calls, then inlined or chunked and stored (putSync) before anything else runs.
 */
function captureSmallFile (walk: Walk, entry: TreeEntry, abs: Buffer, rel: Buffer, st: BigIntStats, size: number): void {
  let fd: number
  try {
    fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW)
  } catch (err) {
    throw openError(err, rel)
  }
  try {
    if (size <= walk.inlineMax) {
      const buf = Buffer.alloc(size)
      readFully(fd, buf, 0, rel)
      entry.inline = new Uint8Array(buf)
    } else {
      const segments: Segment[] = []
      let cursor = 0
      for (const [offset, length] of nativeFs.dataRanges(fd, size)) {
        if (offset > cursor) segments.push({ length: offset - cursor })
        const buf = walk.readBuf.subarray(0, length)
        readFully(fd, buf, offset, rel)
        for (const chunk of chunkBytes(buf, walk.chunking)) {
          const { cid } = walk.putChunk(chunk)
          segments.push({ length: chunk.length, cid })
        }
        cursor = offset + length
      }
      if (cursor < size) segments.push({ length: size - cursor })
      entry.segments = mergeHoles(segments)
      countChunks(walk, entry.segments)
    }
    const after = fstatSync(fd, { bigint: true })
    if (after.size !== st.size || after.mtimeNs !== st.mtimeNs) throw changed(rel, 'was modified')
  } finally {
    closeSync(fd)
  }
}

/** A larger file: asynchronous 1 MiB reads through the streaming chunker. */
async function captureLargeFile (walk: Walk, entry: TreeEntry, abs: Buffer, rel: Buffer, st: BigIntStats, size: number): Promise<void> {
  let fh
  try {
    fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW)
  } catch (err) {
    throw openError(err, rel)
  }
  try {
    const segments: Segment[] = []
    // Chunks are views into buf (or copies when they span reads); putSync stores each before
    // the next read into buf, so one buffer serves the whole file. A plain Uint8Array, not a
    // Buffer: the chunker keeps the unfinished tail with slice(), which copies a Uint8Array but
    // only makes a view of a Buffer (the next read would overwrite it).
    const buf = new Uint8Array(READ_SIZE)
    const addChunk = (chunk: Uint8Array): void => {
      const { cid } = walk.putChunk(chunk)
      segments.push({ length: chunk.length, cid })
    }
    let cursor = 0
    for (const [offset, length] of nativeFs.dataRanges(fh.fd, size)) {
      if (offset > cursor) segments.push({ length: offset - cursor })
      const chunker = new Chunker(walk.chunking)
      let pos = offset
      const end = offset + length
      while (pos < end) {
        const want = Math.min(READ_SIZE, end - pos)
        const { bytesRead } = await fh.read(buf, 0, want, pos)
        if (bytesRead === 0) throw changed(rel, 'shrank')
        pos += bytesRead
        for (const chunk of chunker.push(buf.subarray(0, bytesRead))) addChunk(chunk)
      }
      for (const chunk of chunker.finish()) addChunk(chunk)
      cursor = end
    }
    if (cursor < size) segments.push({ length: size - cursor })
    entry.segments = mergeHoles(segments)
    countChunks(walk, entry.segments)
    const after = await fh.stat({ bigint: true })
    if (after.size !== st.size || after.mtimeNs !== st.mtimeNs) throw changed(rel, 'was modified')
  } finally {
    await fh.close()
  }
}

function mergeHoles (segments: Segment[]): Segment[] {
  const out: Segment[] = []
  for (const s of segments) {
    const last = out[out.length - 1]
    if (s.cid === undefined && last !== undefined && last.cid === undefined) last.length += s.length
    else out.push({ ...s })
  }
  return out
}

function changed (rel: Buffer, how: string): ImgmeshError {
  return new ImgmeshError('ESOURCECHANGED', `source changed during capture: /${showPath(rel)} ${how}`, { path: showPath(rel) })
}

export async function runLimited (tasks: Array<() => Promise<void>>, limit: number): Promise<void> {
  let next = 0
  let failure: unknown = null
  const worker = async (): Promise<void> => {
    while (failure === null && next < tasks.length) {
      const task = tasks[next++]
      try { await task() } catch (err) { failure ??= err }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker))
  if (failure !== null) throw failure
}
