/**
 * The blocks read last, for readers that take many small runs of the same few blocks: a deploy
 * writing the files packed in one chunk (a directory's small files, in tree order), verify
 * comparing them, capture comparing a touched file with its old run. Without it each file read,
 * decompressed and hashed its whole pack again. Concurrent readers of one block share one read;
 * a failed read is not kept.
 */
import type { CID } from 'multiformats/cid'
import type { BlockGetter } from './block-store.ts'

/** Blocks kept (packs are at most 256 KiB each); the oldest read goes first. */
const KEEP = 16

export class RecentBlocks {
  private readonly blocks = new Map<string, Promise<Uint8Array>>()

  async get (getter: BlockGetter, cid: CID): Promise<Uint8Array> {
    const key = cid.toString()
    let block = this.blocks.get(key)
    if (block === undefined) {
      block = getter.get(cid)
      this.blocks.set(key, block)
      // a failed read is not kept: the next reader asks again
      block.catch(() => { if (this.blocks.get(key) === block) this.blocks.delete(key) })
      if (this.blocks.size > KEEP) this.blocks.delete(this.blocks.keys().next().value as string)
    }
    return await block
  }
}
