/**
 * The packs a deploy read last. The files packed in one chunk are written one after another (a
 * directory's small files, in tree order), each wanting its run of the same pack; without this,
 * a deploy from the store read, decompressed and hashed each pack once per file in it.
 * Concurrent writers asking for the same pack share one read.
 */
import type { CID } from 'multiformats/cid'
import type { BlockGetter } from '../store/block-store.ts'

/** Packs kept (at most 256 KiB each). */
const KEEP = 16

export class RecentPacks {
  private readonly packs = new Map<string, Promise<Uint8Array>>()

  async get (blocks: BlockGetter, cid: CID): Promise<Uint8Array> {
    const key = cid.toString()
    let pack = this.packs.get(key)
    if (pack === undefined) {
      pack = blocks.get(cid)
      this.packs.set(key, pack)
      // a failed read is not kept: the next file asks again
      pack.catch(() => { if (this.packs.get(key) === pack) this.packs.delete(key) })
      if (this.packs.size > KEEP) this.packs.delete(this.packs.keys().next().value as string)
    }
    return await pack
  }
}
