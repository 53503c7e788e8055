/**
 * The block store: content-addressed blocks on disk (blockstore-fs), every block hashed and
 * checked against its CID when read. A block that fails the check is reported, never returned.
 */
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import type { CID } from 'multiformats/cid'
import { ImgmeshError, isErrno } from '../errors.ts'
import { createLogger } from '../logger.ts'
import { RAW_CODE, cidFor, matchesCid, blockKey } from './cid.ts'
import { CID as CIDClass } from 'multiformats/cid'

const log = createLogger('store')

export interface BlockGetter {
  /** Returns the verified bytes of a block, or throws ENOBLOCK / EBADBLOCK. */
  get: (cid: CID) => Promise<Uint8Array>
}

export interface PutResult { cid: CID, added: boolean }

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

  async has (cid: CID): Promise<boolean> { return await this.fs.has(cid) }

  /** Reads a block and checks its hash. Missing: ENOBLOCK. Corrupt: EBADBLOCK (the block is left for `gc --repair`/refetch). */
  async get (cid: CID): Promise<Uint8Array> {
    let bytes: Uint8Array
    try {
      bytes = await readFile(this.pathOf(cid))
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new ImgmeshError('ENOBLOCK', `block ${cid.toString()} is not in the store`)
      throw new ImgmeshError('EIO', `reading block ${cid.toString()}: ${(err as Error).message}`, { cause: err })
    }
    if (!matchesCid(cid, bytes)) {
      log.info('corrupt block in store', { cid: cid.toString() })
      throw new ImgmeshError('EBADBLOCK', `block ${cid.toString()} in the store does not match its hash`)
    }
    return bytes
  }

  /** Stores bytes under their own hash; returns whether the block was new. */
  async put (bytes: Uint8Array, codec: number = RAW_CODE): Promise<PutResult> {
    const cid = cidFor(bytes, codec)
    return await this.putBlock(cid, bytes)
  }

  /** Stores a block received from elsewhere after checking it hashes to cid. */
  async putVerified (cid: CID, bytes: Uint8Array): Promise<PutResult> {
    if (!matchesCid(cid, bytes)) throw new ImgmeshError('EBADBLOCK', `block does not hash to ${cid.toString()}`)
    return await this.putBlock(cid, bytes)
  }

  private async putBlock (cid: CID, bytes: Uint8Array): Promise<PutResult> {
    if (await this.fs.has(cid)) {
      return { cid, added: false }
    }
    try {
      await this.fs.put(cid, bytes)
    } catch (err) {
      const text = String((err as Error).message ?? err)
      if (text.includes('ENOSPC') || text.includes('EDQUOT')) throw new ImgmeshError('ENOSPC', `storing block ${cid.toString()}: no space left on device in ${this.dir}`, { cause: err })
      throw new ImgmeshError('EIO', `storing block ${cid.toString()}: ${text}`, { cause: err })
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
