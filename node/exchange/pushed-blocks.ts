/**
 * A version's tree goes out whole when a peer asks for its root (block-exchange.ts): loading a
 * tree level by level costs one round trip per directory level, and with fifty agents on two
 * cores each round trip took seconds, so that a client waited 20–90 s for its tree before it
 * could ask for one piece. The asker keeps the tree blocks that arrive before it asks for them
 * here, already checked against their CIDs, until its tree loader takes them.
 *
 * Only tree blocks (dag-cbor) are kept, at most `maxBytes` in all; the oldest go first. A block
 * nobody takes costs its memory until then, no more.
 */
import type { CID } from 'multiformats/cid'
import { DAG_CBOR_CODE } from '../store/cid.ts'

/** Most bytes of pushed tree blocks kept at once. */
export const PUSHED_MAX_BYTES = 16 * 1024 * 1024

/** Whether a block may be kept unasked: a tree block (dag-cbor) no larger than `maxBytes`. */
export function mayKeepPushed (cid: CID, length: number, maxBytes = PUSHED_MAX_BYTES): boolean {
  return cid.code === DAG_CBOR_CODE && length <= maxBytes
}

export class PushedBlocks {
  readonly maxBytes: number
  private readonly blocks = new Map<string, Uint8Array>()
  private total = 0

  constructor (maxBytes = PUSHED_MAX_BYTES) { this.maxBytes = maxBytes }

  /** Keeps a block (its bytes must be checked against its CID already and not be reused by the caller). */
  put (key: string, bytes: Uint8Array): void {
    if (this.blocks.has(key) || bytes.length > this.maxBytes) return
    this.blocks.set(key, bytes)
    this.total += bytes.length
    for (const [k, b] of this.blocks) {
      if (this.total <= this.maxBytes) break
      this.blocks.delete(k)
      this.total -= b.length
    }
  }

  /** The block, once: it leaves the set. */
  take (key: string): Uint8Array | undefined {
    const b = this.blocks.get(key)
    if (b === undefined) return undefined
    this.blocks.delete(key)
    this.total -= b.length
    return b
  }

  get size (): number { return this.blocks.size }
  get bytes (): number { return this.total }
}

/**
 * The tree blocks to send after `cid` when a peer asks for it: the rest of the tree of an offer
 * whose root it is (root first in `tree`), unless this stream was sent that tree already.
 */
export function treeAfterRoot (cid: CID, offers: Iterable<{ tree?: CID[] }>, sent: Set<string>): CID[] {
  if (cid.code !== DAG_CBOR_CODE) return []
  for (const offer of offers) {
    const tree = offer.tree
    if (tree === undefined || tree.length < 2 || !tree[0].equals(cid)) continue
    const key = cid.toString()
    if (sent.has(key)) return []
    sent.add(key)
    return tree.slice(1)
  }
  return []
}
