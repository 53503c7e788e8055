/**
 * The block store: content-addressed blocks in append-only packs (pack-file.ts) under
 * `blocks/`, found through an index in memory, every block hashed and checked against its CID
 * when read. A block that fails the check is reported, never returned.
 *
 * Several processes use one store at once (the agent, a capture run from the CLI): each store
 * object appends to a pack of its own, named after its process, and reads everyone's. A block
 * not in the index sends the store to look for packs it has not seen and for records appended
 * to the packs of writers still running, so a block another process stored before telling us
 * about it is found. GC rewrites only packs whose writer has gone.
 */
import { closeSync, fstatSync, mkdirSync, openSync, read, readSync, readdirSync, statSync, statfsSync, unlinkSync, constants } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { threadId } from 'node:worker_threads'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { ImgmeshError, isErrno } from '../errors.ts'
import { createLogger } from '../logger.ts'
import { RAW_CODE, cidFor, matchesCid, blockKey } from './cid.ts'
import { PackWriter, scanPack, MAX_RECORD_DATA } from './pack-file.ts'
import { ZstdFrameError, deflateBlock, inflateFrame } from './zstd-frame.ts'
import { nativeFs } from '../native/fsx.ts'

const log = createLogger('store')

const PACK_SUFFIX = '.pack'
/** statfs types of filesystems held in memory (tmpfs, ramfs): a read there never waits for a disk. */
const MEMORY_FS_TYPES = new Set([0x01021994, 0x858458f6])
/** A pack this big is closed and the next block starts a new one (GC rewrites packs whole). */
const PACK_ROLLOVER_BYTES = 256 * 1024 * 1024
/** Packs being written by store objects of this process (the others are finished or foreign). */
const writingHere = new Set<string>()

export interface BlockGetter {
  /** Returns the verified bytes of a block, or throws ENOBLOCK / EBADBLOCK. */
  get: (cid: CID) => Promise<Uint8Array>
  /**
   * For a block that is not here yet (a fetch is bringing it): calls `arrived` with its verified
   * bytes the moment it comes, or `failed` if it cannot, and returns true; returns false,
   * calling nothing, when the block is here (use get()). A writer can so ask for many blocks
   * at once and write each as it arrives. The bytes are lent for the call only: a caller that
   * keeps them (in a promise, say) keeps them out of V8's young generation and costs full
   * collections. Absent: every block is here.
   */
  whenArrived?: (cid: CID, arrived: (bytes: Uint8Array) => void, failed: (err: Error) => void) => boolean
  /**
   * For a block held in memory: calls `use` at once with its verified bytes, lent for the call
   * only (a synchronous write, say), and returns true; returns false, calling nothing,
   * otherwise (use get()). Saves the copy get() makes. Absent: always get().
   */
  lend?: (cid: CID, use: (bytes: Uint8Array) => void) => boolean
  /** Whether a block is here now (get() answers without waiting for a fetch). Absent: every block is here. */
  isHere?: (cid: CID) => boolean
  /**
   * Calls `listener` with each block a fetch brings, once it is verified and can be read (lent,
   * or by get()), until the returned function is called. Absent: nothing is coming.
   */
  onArrival?: (listener: (cid: CID) => void) => () => void
}

export interface PutResult { cid: CID, added: boolean }

/** Where a block's bytes are (with zstd: its zstd frame): for repair tools and tests. */
export interface BlockLocation { path: string, offset: number, length: number, zstd: boolean }

interface Pack {
  name: string
  path: string
  fd: number
  /** Bytes scanned: records up to here are in the index. */
  scanned: number
  /** No one appends to it any more (its writer closed it, or its process is gone). */
  finished: boolean
  /** Its scan met a bad header: nothing after it is read, and GC rewrites the pack. */
  corrupt: boolean
}

interface Location { pack: Pack, offset: number, length: number, zstd: boolean }

function storeError (what: string, err: unknown, dir: string): ImgmeshError {
  if (isErrno(err, 'ENOSPC') || isErrno(err, 'EDQUOT')) return new ImgmeshError('ENOSPC', `${what}: no space left on device in ${dir}`, { cause: err })
  return new ImgmeshError('EIO', `${what}: ${(err as Error).message}`, { cause: err })
}

/** The process that writes a pack, from its name (`PID-THREAD-RANDOM.pack`). */
function writerPid (name: string): number {
  const pid = Number(name.slice(0, name.indexOf('-')))
  return Number.isSafeInteger(pid) && pid > 0 ? pid : 0
}

function processAlive (pid: number): boolean {
  if (pid <= 0) return false
  try { process.kill(pid, 0); return true } catch (err) { return isErrno(err, 'EPERM') }
}

/** The block in a stored zstd frame, or null if the frame is not one block (a corrupt record). */
function inflateStored (frame: Uint8Array): Uint8Array | null {
  try {
    return inflateFrame(frame, n => Buffer.allocUnsafe(n), MAX_RECORD_DATA)
  } catch (err) {
    if (err instanceof ZstdFrameError) return null
    throw err
  }
}

/** Whether `dir` is on a filesystem held in memory (false when that cannot be told). */
function inMemoryFs (dir: string): boolean {
  try { return MEMORY_FS_TYPES.has(statfsSync(dir).type) } catch { return false }
}

/** Reads a block's record synchronously into buf; returns the bytes read (fewer at the pack's end). */
function readRecord (loc: Location, buf: Uint8Array): number {
  let got = 0
  while (got < loc.length) {
    const n = readSync(loc.pack.fd, buf, got, loc.length - got, loc.offset + got)
    if (n === 0) break
    got += n
  }
  return got
}

function readAsync (fd: number, buf: Uint8Array, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buf, 0, length, position, (err, n) => { if (err !== null) reject(err); else resolve(n) })
  })
}

export class BlockStore implements BlockGetter {
  readonly dir: string
  private readonly index = new Map<string, Location>()
  private readonly packs = new Map<string, Pack>()
  private writer: PackWriter | null = null
  private writerPack: Pack | null = null
  private dirMtime = -1
  /** Bytes newly written since this store object was opened. */
  bytesAdded = 0
  blocksAdded = 0
  /**
   * The store is on tmpfs or ramfs (a diskless node's store, say), where reads cannot ask not to
   * wait (RWF_NOWAIT is refused) and never wait anyway: they are made synchronously, not
   * through the thread pool.
   */
  inMemory = false

  constructor (dir: string) {
    this.dir = dir
  }

  async open (): Promise<void> {
    try {
      mkdirSync(this.dir, { recursive: true })
    } catch (err) {
      throw storeError(`creating block store ${this.dir}`, err, this.dir)
    }
    this.inMemory = inMemoryFs(this.dir)
    this.refresh()
  }

  /** Blocks the store holds and their bytes (what other processes stored included). */
  stats (): { blocks: number, bytes: number } {
    this.refresh()
    let bytes = 0
    for (const loc of this.index.values()) bytes += loc.length
    return { blocks: this.index.size, bytes }
  }

  /** The pack and range holding a block (for repair tools and tests), or null. */
  locate (cid: CID): BlockLocation | null {
    const loc = this.find(blockKey(cid))
    return loc === undefined ? null : { path: loc.pack.path, offset: loc.offset, length: loc.length, zstd: loc.zstd }
  }

  async has (cid: CID): Promise<boolean> { return this.find(blockKey(cid)) !== undefined }

  /**
   * Which of these blocks are here, in their order. What other processes stored since is looked
   * for once for the whole list, where has() looks on every miss: a fetch that starts with
   * nothing asks about every piece of the version, and each look is a stat of the store's
   * directory and of the packs still being written.
   */
  heldOf (cids: readonly CID[]): boolean[] {
    const keys = cids.map(blockKey)
    if (keys.some(key => !this.index.has(key))) this.refresh()
    return keys.map(key => this.index.has(key))
  }

  /** Whether every one of these blocks is here. */
  async hasAll (cids: Iterable<CID>): Promise<boolean> {
    for (const cid of cids) if (this.find(blockKey(cid)) === undefined) return false
    return true
  }

  /**
   * Reads a block and checks its hash. Missing: ENOBLOCK. Corrupt: EBADBLOCK. What the page
   * cache holds is copied at once (a read that never waits for the disk: no thread-pool round
   * trip, about 10 µs less CPU per 64 KiB here); the rest goes through the thread pool, so an
   * agent serving peers from a cold store keeps its event loop free while the disk works. A
   * store held in memory is read synchronously.
   */
  async get (cid: CID): Promise<Uint8Array> {
    return (await this.getWithFrame(cid)).bytes
  }

  /**
   * get(), and for a block kept as its zstd frame the frame too (checked: it decompressed to
   * bytes), for a server that sends blocks compressed.
   */
  async getWithFrame (cid: CID): Promise<{ bytes: Uint8Array, frame?: Uint8Array }> {
    const loc = this.found(cid)
    const buf = new Uint8Array(Buffer.allocUnsafeSlow(loc.length).buffer, 0, loc.length)
    let got = 0
    try {
      if (this.inMemory) {
        got = readRecord(loc, buf)
      } else {
        const cached = nativeFs.readCached(loc.pack.fd, buf, loc.offset)
        if (cached > 0) got = cached
        while (got < loc.length) {
          const n = await readAsync(loc.pack.fd, buf.subarray(got), loc.length - got, loc.offset + got)
          if (n === 0) break
          got += n
        }
      }
    } catch (err) {
      throw storeError(`reading block ${cid.toString()}`, err, this.dir)
    }
    const stored = buf.subarray(0, got)
    const bytes = this.checked(cid, loc, stored)
    return loc.zstd ? { bytes, frame: stored } : { bytes }
  }

  /**
   * get() with a synchronous read, for batch jobs that have nothing else to do meanwhile (a
   * deploy from the local store without an agent), or for blocks that were just written.
   */
  getSync (cid: CID): Uint8Array {
    const loc = this.found(cid)
    const buf = new Uint8Array(Buffer.allocUnsafeSlow(loc.length).buffer, 0, loc.length)
    let got = 0
    try {
      got = readRecord(loc, buf)
    } catch (err) {
      throw storeError(`reading block ${cid.toString()}`, err, this.dir)
    }
    return this.checked(cid, loc, buf.subarray(0, got))
  }

  private found (cid: CID): Location {
    const loc = this.find(blockKey(cid))
    if (loc === undefined) throw new ImgmeshError('ENOBLOCK', `block ${cid.toString()} is not in the store`)
    return loc
  }

  /** The block's bytes from what its record holds (a zstd frame decompressed), checked against cid. */
  private checked (cid: CID, loc: Location, stored: Uint8Array): Uint8Array {
    const bytes = loc.zstd ? inflateStored(stored) : stored
    if (bytes === null || !matchesCid(cid, bytes)) {
      log.info('corrupt block in store', { cid: cid.toString() })
      throw new ImgmeshError('EBADBLOCK', `block ${cid.toString()} in the store does not match its hash`)
    }
    return bytes
  }

  /** The index entry of a block; on a miss, what other processes stored since is looked for first. */
  private find (key: string): Location | undefined {
    const loc = this.index.get(key)
    if (loc !== undefined) return loc
    this.refresh()
    return this.index.get(key)
  }

  /** Stores bytes under their own hash; returns whether the block was new. */
  async put (bytes: Uint8Array, codec: number = RAW_CODE): Promise<PutResult> {
    return this.putSync(bytes, codec)
  }

  /** put() done before returning: bytes may be reused as soon as it returns (capture reuses its read buffer). */
  putSync (bytes: Uint8Array, codec: number = RAW_CODE): PutResult {
    return this.putBlock(cidFor(bytes, codec), bytes)
  }

  /**
   * putSync, keeping a new block as one zstd frame when that saves at least a tenth of it
   * (zstd-frame.ts deflateBlock): fewer bytes on disk, and an agent serves the frame as it is
   * instead of compressing the block for every peer that takes blocks compressed. A block already
   * in the store is not compressed again.
   */
  putCompressedSync (bytes: Uint8Array, codec: number = RAW_CODE): PutResult {
    const cid = cidFor(bytes, codec)
    if (this.index.has(blockKey(cid))) return { cid, added: false }
    return this.putBlock(cid, bytes, deflateBlock(bytes) ?? undefined)
  }

  /** Stores a block received from elsewhere after checking it hashes to cid. */
  async putVerified (cid: CID, bytes: Uint8Array): Promise<PutResult> {
    if (!matchesCid(cid, bytes)) throw new ImgmeshError('EBADBLOCK', `block does not hash to ${cid.toString()}`)
    return this.putBlock(cid, bytes)
  }

  /**
   * Stores a block the caller has just checked against its CID (the block exchange hashes every
   * block it receives once, on arrival): the same as putVerified without hashing it again.
   */
  async putTrusted (cid: CID, bytes: Uint8Array): Promise<PutResult> {
    return this.putBlock(cid, bytes)
  }

  /**
   * putTrusted done before returning: bytes may be reused as soon as it returns. With frame (the
   * block as one zstd frame, as it came over the wire; the caller checked that it decompresses to
   * bytes) the frame is what is kept, if smaller: fewer bytes written, and every read
   * decompresses it and checks the hash.
   */
  putTrustedSync (cid: CID, bytes: Uint8Array, frame?: Uint8Array): PutResult {
    return this.putBlock(cid, bytes, frame)
  }

  /**
   * Appends a block to this object's pack (one positional write of header and data; a failed
   * write is cut back, so a full disk leaves the pack as it was). The index is not refreshed
   * first: a block another process stored meanwhile is stored twice, which costs only space.
   */
  private putBlock (cid: CID, bytes: Uint8Array, frame?: Uint8Array): PutResult {
    const key = blockKey(cid)
    if (this.index.has(key)) return { cid, added: false }
    if (bytes.length > MAX_RECORD_DATA) throw new ImgmeshError('EBADARG', `block ${cid.toString()} of ${bytes.length} bytes is larger than a block may be`)
    // A frame is kept only if it is smaller (a peer's frame could be larger than its block).
    const zstd = frame !== undefined && frame.length < bytes.length
    const stored = zstd ? frame : bytes
    try {
      const pack = this.writable()
      const offset = this.writer!.append(cid.multihash.bytes, stored, zstd)
      pack.scanned = this.writer!.size
      this.index.set(key, { pack, offset, length: stored.length, zstd })
      if (this.writer!.size >= PACK_ROLLOVER_BYTES) this.finishWriting()
    } catch (err) {
      if (err instanceof ImgmeshError) throw err
      throw storeError(`storing block ${cid.toString()}`, err, this.dir)
    }
    this.bytesAdded += stored.length
    this.blocksAdded++
    return { cid, added: true }
  }

  /** This object's pack, created at the first block it stores. */
  private writable (): Pack {
    if (this.writer !== null && this.writerPack !== null && !this.writer.broken) return this.writerPack
    if (this.writer !== null) this.finishWriting()
    const name = `${process.pid}-${threadId}-${randomBytes(6).toString('hex')}${PACK_SUFFIX}`
    const path = join(this.dir, name)
    const writer = PackWriter.create(path)
    writingHere.add(name)
    const pack: Pack = { name, path, fd: writer.fd, scanned: writer.size, finished: false, corrupt: false }
    this.packs.set(name, pack)
    this.writer = writer
    this.writerPack = pack
    return pack
  }

  /** Closes this object's pack for writing (it stays open for reading); the next block starts a new one. */
  private finishWriting (): void {
    if (this.writerPack !== null) {
      this.writerPack.finished = true
      writingHere.delete(this.writerPack.name)
    }
    this.writer = null
    this.writerPack = null
  }

  /**
   * Brings the index up to date with the directory: packs that appeared (read whole), records
   * appended to packs whose writer is still at work, packs that are gone (GC elsewhere moved
   * what they held). Costs one stat when nothing changed and every other writer is finished.
   */
  private refresh (): void {
    let mtime: number
    try {
      mtime = statSync(this.dir).mtimeMs
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return
      throw storeError(`reading block store ${this.dir}`, err, this.dir)
    }
    if (mtime !== this.dirMtime) {
      // Directory times tick coarsely: one this recent may yet hide a change in the same tick.
      this.dirMtime = Date.now() - mtime < 1000 ? -1 : mtime
      const names = new Set(readdirSync(this.dir).filter(n => n.endsWith(PACK_SUFFIX)))
      for (const name of names) if (!this.packs.has(name)) this.addPack(name)
      for (const [name, pack] of this.packs) if (!names.has(name) && pack !== this.writerPack) this.dropPack(pack)
    }
    for (const pack of this.packs.values()) {
      if (pack.finished || pack === this.writerPack) continue
      this.scan(pack)
      if (!this.stillWritten(pack.name)) {
        // Its writer is gone: anything it appended is here now (stat after the liveness check).
        this.scan(pack)
        pack.finished = true
      }
    }
  }

  private stillWritten (name: string): boolean {
    const pid = writerPid(name)
    return pid === process.pid ? writingHere.has(name) : processAlive(pid)
  }

  private addPack (name: string): void {
    const path = join(this.dir, name)
    let fd: number
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW)
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return
      throw storeError(`opening pack ${path}`, err, this.dir)
    }
    const pack: Pack = { name, path, fd, scanned: 0, finished: false, corrupt: false }
    this.packs.set(name, pack)
    if (!this.stillWritten(name)) pack.finished = true
    this.scan(pack)
  }

  private scan (pack: Pack): void {
    if (pack.corrupt) return
    const size = fstatSync(pack.fd).size
    if (size <= pack.scanned) return
    const r = scanPack(pack.fd, pack.scanned, size)
    for (const rec of r.records) {
      const key = Buffer.from(rec.multihash).toString('base64url')
      if (!this.index.has(key)) this.index.set(key, { pack, offset: rec.offset, length: rec.length, zstd: rec.zstd })
    }
    pack.scanned = r.end
    if (r.corrupt) {
      pack.corrupt = true
      log.warn('pack has a bad record header; the rest of it is ignored', { pack: pack.path, offset: r.end })
    }
  }

  private dropPack (pack: Pack): void {
    this.packs.delete(pack.name)
    for (const [key, loc] of this.index) if (loc.pack === pack) this.index.delete(key)
    try { closeSync(pack.fd) } catch {}
  }

  /** Closes every pack; the object is not used after. */
  close (): void {
    this.finishWriting()
    for (const pack of [...this.packs.values()]) this.dropPack(pack)
  }

  /** Every block in the store, as raw-codec CIDs (the store keys by multihash only). */
  async * cids (): AsyncGenerator<CID> {
    this.refresh()
    for (const key of [...this.index.keys()]) {
      yield CID.createV1(RAW_CODE, Digest.decode(Buffer.from(key, 'base64url')))
    }
  }

  /**
   * Removes every block whose multihash is not in keep (keys from blockKey). A finished pack
   * that holds only kept blocks stays; one that holds none is deleted; the others have their
   * kept blocks copied into a new pack, then are deleted. Packs other processes are still
   * writing are left alone (their garbage goes at a later GC). A process reading a deleted
   * pack it had open keeps reading it; one that had not opened it finds the copies.
   */
  async sweep (keep: Set<string>): Promise<{ removed: number, bytes: number }> {
    this.finishWriting()
    this.refresh()
    const removedKeys = new Set<string>()
    let bytes = 0
    for (const pack of [...this.packs.values()]) {
      if (!pack.finished) continue
      const records = scanPack(pack.fd, 0, fstatSync(pack.fd).size).records
      const keys = records.map(r => Buffer.from(r.multihash).toString('base64url'))
      const live = records.filter((_r, i) => keep.has(keys[i]))
      if (live.length === records.length && !pack.corrupt) continue
      // Copy what is kept (and held nowhere else) before the pack goes.
      const buf = Buffer.allocUnsafe(Math.max(0, ...live.map(r => r.length)))
      for (let i = 0; i < records.length; i++) {
        const r = records[i]
        const key = keys[i]
        const loc = this.index.get(key)
        if (!keep.has(key)) {
          if (loc?.pack === pack) { this.index.delete(key); removedKeys.add(key); bytes += r.length }
          continue
        }
        if (loc !== undefined && loc.pack !== pack) continue
        const n = readSync(pack.fd, buf, 0, r.length, r.offset)
        const data = buf.subarray(0, n)
        const cid = CID.createV1(RAW_CODE, Digest.decode(r.multihash))
        this.index.delete(key)
        const block = r.zstd ? inflateStored(data) : data
        if (block === null || !matchesCid(cid, block)) {
          // Not copied: missing, it is fetched again; corrupt, it would only fail every read.
          log.warn('corrupt block dropped by gc', { cid: cid.toString(), pack: pack.path })
          removedKeys.add(key)
          continue
        }
        try {
          this.putBlock(cid, block, r.zstd ? data : undefined)
        } catch (err) {
          this.index.set(key, loc ?? { pack, offset: r.offset, length: r.length, zstd: r.zstd })
          throw err
        }
        this.bytesAdded -= data.length
        this.blocksAdded--
      }
      try {
        unlinkSync(pack.path)
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw storeError(`removing pack ${pack.path}`, err, this.dir)
      }
      this.dropPack(pack)
    }
    this.finishWriting()
    return { removed: removedKeys.size, bytes }
  }
}
