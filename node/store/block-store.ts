/**
 * The block store: content-addressed blocks on disk (blockstore-fs), every block hashed and
 * checked against its CID when read. A block that fails the check is reported, never returned.
 */
import { stat } from 'node:fs/promises'
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, read, readSync, renameSync, unlinkSync, writeSync, constants } from 'node:fs'
import { join, dirname } from 'node:path'
import { threadId } from 'node:worker_threads'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import type { CID } from 'multiformats/cid'
import { ImgmeshError, isErrno } from '../errors.ts'
import { createLogger } from '../logger.ts'
import { RAW_CODE, cidFor, matchesCid, blockKey } from './cid.ts'
import { CID as CIDClass } from 'multiformats/cid'

const log = createLogger('store')

/** O_NOFOLLOW: a temporary name is never followed if something put a symlink there. */
const TMP_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW
/** Temporary names unique per process and thread, whatever the number of stores open. */
let tmpCounter = 0

export interface BlockGetter {
  /** Returns the verified bytes of a block, or throws ENOBLOCK / EBADBLOCK. */
  get: (cid: CID) => Promise<Uint8Array>
}

export interface PutResult { cid: CID, added: boolean }

function readError (cid: CID, err: unknown): ImgmeshError {
  if (isErrno(err, 'ENOENT')) return new ImgmeshError('ENOBLOCK', `block ${cid.toString()} is not in the store`)
  return new ImgmeshError('EIO', `reading block ${cid.toString()}: ${(err as Error).message}`, { cause: err })
}

/** The content of a block file, of the size fstat gives (blocks are never rewritten; the hash check catches the rest). */
async function readBlockFile (path: string): Promise<Uint8Array> {
  const fd = openSync(path, constants.O_RDONLY)
  try {
    const buf = Buffer.allocUnsafeSlow(fstatSync(fd).size)
    let got = 0
    while (got < buf.length) {
      const n = await readAsync(fd, buf, got, buf.length - got, got)
      if (n === 0) break
      got += n
    }
    return new Uint8Array(buf.buffer, buf.byteOffset, got)
  } finally {
    closeSync(fd)
  }
}

function readBlockFileSync (path: string): Uint8Array {
  const fd = openSync(path, constants.O_RDONLY)
  try {
    const buf = Buffer.allocUnsafeSlow(fstatSync(fd).size)
    let got = 0
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, got)
      if (n === 0) break
      got += n
    }
    return new Uint8Array(buf.buffer, buf.byteOffset, got)
  } finally {
    closeSync(fd)
  }
}

function readAsync (fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buf, offset, length, position, (err, n) => { if (err !== null) reject(err); else resolve(n) })
  })
}

export class BlockStore implements BlockGetter {
  readonly dir: string
  private readonly fs: FsBlockstore
  private readonly sharding = new NextToLast()
  /** Bytes newly written since this store object was opened. */
  bytesAdded = 0
  blocksAdded = 0

  constructor (dir: string) {
    this.dir = dir
    this.fs = new FsBlockstore(dir, { shardingStrategy: this.sharding })
  }

  async open (): Promise<void> { await this.fs.open() }

  /** The file holding a block (for repair tools and tests). */
  pathOf (cid: CID): string {
    const { dir, file } = this.sharding.encode(cid)
    return join(this.dir, dir, file)
  }

  /** Whether the block's file exists (existsSync: a miss costs no exception, unlike blockstore-fs has()). */
  async has (cid: CID): Promise<boolean> { return existsSync(this.pathOf(cid)) }

  /**
   * Reads a block and checks its hash. Missing: ENOBLOCK. Corrupt: EBADBLOCK (the block is left for `gc --repair`/refetch).
   * open, fstat and close are synchronous (cheap, no disk wait for a file in a warm directory);
   * only the read, which may wait for the disk, goes through the thread pool: one round trip per
   * block instead of four for readFile(), so an agent serving peers from a cold store keeps its
   * event loop free while the disk works.
   */
  async get (cid: CID): Promise<Uint8Array> {
    let bytes: Uint8Array
    try {
      bytes = await readBlockFile(this.pathOf(cid))
    } catch (err) {
      throw readError(cid, err)
    }
    return this.checked(cid, bytes)
  }

  /**
   * get() with a synchronous read, for batch jobs that have nothing else to do meanwhile (a
   * deploy from the local store without an agent): about 30% faster there than one thread-pool
   * round trip per block (docs/benchmarks.md), but it holds the event loop while the disk reads.
   */
  getSync (cid: CID): Uint8Array {
    let bytes: Uint8Array
    try {
      bytes = readBlockFileSync(this.pathOf(cid))
    } catch (err) {
      throw readError(cid, err)
    }
    return this.checked(cid, bytes)
  }

  private checked (cid: CID, bytes: Uint8Array): Uint8Array {
    if (!matchesCid(cid, bytes)) {
      log.info('corrupt block in store', { cid: cid.toString() })
      throw new ImgmeshError('EBADBLOCK', `block ${cid.toString()} in the store does not match its hash`)
    }
    return bytes
  }

  /** Stores bytes under their own hash; returns whether the block was new. */
  async put (bytes: Uint8Array, codec: number = RAW_CODE): Promise<PutResult> {
    return this.putSync(bytes, codec)
  }

  /** put() done before returning: bytes may be reused as soon as it returns (capture reuses its read buffer). */
  putSync (bytes: Uint8Array, codec: number = RAW_CODE): PutResult {
    return this.putBlock(cidFor(bytes, codec), bytes)
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
    return await this.putBlock(cid, bytes)
  }

  /**
   * Writes a block file where blockstore-fs keeps it (same sharding, same name), so blockstore-fs
   * reads it. Measured: blockstore-fs put() costs an access() for has(), a recursive mkdir, a
   * temporary file written by steno and a rename, each a round trip to the libuv thread pool;
   * on the 2-core test machine that took about 370 µs per block against 115 µs for the same
   * syscalls made directly (docs/benchmarks.md). So: one existsSync (no exception when absent),
   * then a temporary file written with plain synchronous calls and renamed into place, which
   * keeps a killed process from leaving a partial block under its real name. The shard
   * directory is created only when the open fails for want of it. Each call blocks the event
   * loop for one small file write (tens of µs, a block being at most 256 KiB of content or one
   * tree block).
   */
  private putBlock (cid: CID, bytes: Uint8Array): PutResult {
    const path = this.pathOf(cid)
    if (existsSync(path)) return { cid, added: false }
    const tmp = `${path}.${process.pid}-${threadId}-${tmpCounter++}.tmp`
    try {
      let fd: number
      try {
        fd = openSync(tmp, TMP_FLAGS, 0o644)
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err
        mkdirSync(dirname(path), { recursive: true })
        fd = openSync(tmp, TMP_FLAGS, 0o644)
      }
      try {
        let done = 0
        while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done)
      } finally {
        closeSync(fd)
      }
      renameSync(tmp, path)
    } catch (err) {
      try { unlinkSync(tmp) } catch {}
      if (isErrno(err, 'ENOSPC') || isErrno(err, 'EDQUOT')) throw new ImgmeshError('ENOSPC', `storing block ${cid.toString()}: no space left on device in ${this.dir}`, { cause: err })
      throw new ImgmeshError('EIO', `storing block ${cid.toString()}: ${(err as Error).message}`, { cause: err })
    }
    this.bytesAdded += bytes.length
    this.blocksAdded++
    return { cid, added: true }
  }

  async delete (cid: CID): Promise<void> { await this.fs.delete(cid) }

  /** Every block in the store, as raw-codec CIDs (the store keys by multihash only). */
  async * cids (): AsyncGenerator<CID> {
    for await (const { cid } of this.fs.getAll()) {
      yield CIDClass.createV1(RAW_CODE, cid.multihash)
    }
  }

  /** Removes every block whose multihash is not in keep (keys from blockKey). */
  async sweep (keep: Set<string>): Promise<{ removed: number, bytes: number }> {
    let removed = 0
    let bytes = 0
    for await (const { cid } of this.fs.getAll()) {
      if (keep.has(blockKey(cid))) continue
      try { bytes += (await stat(this.pathOf(cid))).size } catch {}
      await this.fs.delete(cid)
      removed++
    }
    return { removed, bytes }
  }
}
