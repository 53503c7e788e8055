/**
 * Verified blocks kept in memory, up to a byte budget. A block that just arrived (hashed once on
 * arrival) is soon wanted again: by the deploy writing its file, and by peers it is relayed to.
 * Serving those from here saves a read and a hash per use. Holds only bytes that matched their CID.
 *
 * The bytes live in one arena allocated at the first put, used as a ring: a new block is copied
 * to the head and overwrites the oldest ones. Keeping each block's own buffer instead made every
 * cached block an object that outlives the young generation, and each one dropped could only be
 * freed by a full collection: on a receiving agent that was a major GC every 20 MB or so and
 * about a fifth of its CPU. A get copies the block out (the arena is overwritten later, while the
 * caller may still hold it) and moves a block from the older half of the ring back to the head,
 * so blocks in use stay and the least recently used go first.
 *
 * The arena asks for huge pages: it is released when the agent goes idle, so every transfer
 * touches it anew, and a first touch costs a page fault and a zeroed page per 4 KiB (12,000
 * faults for the two caches' 48 MiB, a tenth of a second or more of a client's CPU on a virtual
 * machine); with 2 MiB pages it is one fault per 2 MiB.
 */
import { nativeHeap } from '../native/heap.ts'

interface Slot { key: string, offset: number, length: number, rank: number }

export class BlockCache {
  readonly maxBytes: number
  private arena: Uint8Array | null = null
  private readonly slots = new Map<string, Slot>()
  /** Slots in the order they were placed: the oldest first (a ring; `first` is its start). */
  private order: Array<Slot | null> = []
  private first = 0
  /** The rank (count of slots placed before it) of order[0]. */
  private base = 0
  /** Where the next block goes; every live slot placed after the last wrap ends at or before it. */
  private head = 0
  /** Bytes of the blocks held. */
  bytes = 0
  hits = 0
  misses = 0

  constructor (maxBytes: number) { this.maxBytes = Math.max(0, Math.floor(maxBytes)) }

  /** A copy of the block, or undefined. */
  get (key: string): Uint8Array | undefined {
    const s = this.slots.get(key)
    if (s === undefined || this.arena === null) { this.misses++; return undefined }
    this.hits++
    const copy = this.arena.slice(s.offset, s.offset + s.length)
    if (this.inOlderHalf(s)) this.put(key, copy)
    return copy
  }

  /**
   * Calls use with the block's bytes in the arena, lent for the call only (no copy), and returns
   * true; false, calling nothing, if the block is not held. For a reader that is done with the
   * bytes when use returns (a synchronous write): the block is not moved to the head.
   */
  lend (key: string, use: (bytes: Uint8Array) => void): boolean {
    const s = this.slots.get(key)
    if (s === undefined || this.arena === null) { this.misses++; return false }
    this.hits++
    use(this.arena.subarray(s.offset, s.offset + s.length))
    return true
  }

  /** Whether key is held (without counting a hit or moving it). */
  has (key: string): boolean { return this.slots.has(key) }

  /** Keeps a copy of bytes under key. Blocks larger than half the budget are not kept. */
  put (key: string, bytes: Uint8Array): void {
    const length = bytes.length
    this.delete(key)
    if (length > this.maxBytes / 2) return
    if (this.arena === null) {
      this.arena = new Uint8Array(this.maxBytes)
      nativeHeap.hugePages(this.arena)
    }
    if (this.head + length > this.maxBytes) {
      // Wrap: what lies after the head is the oldest; drop it rather than track two segments.
      this.evictWhile(s => s.offset >= this.head)
      this.head = 0
    }
    const end = this.head + length
    this.evictWhile(s => s.offset >= this.head && s.offset < end)
    this.arena.set(bytes, this.head)
    const slot = { key, offset: this.head, length, rank: this.base + this.order.length }
    this.slots.set(key, slot)
    this.order.push(slot)
    this.head = end
    this.bytes += length
    if (this.first > 1024 && this.first * 2 > this.order.length) {
      this.order = this.order.slice(this.first)
      this.base += this.first
      this.first = 0
    }
  }

  delete (key: string): void {
    const s = this.slots.get(key)
    if (s === undefined) return
    this.slots.delete(key)
    this.bytes -= s.length
    // Its place in `order` becomes a hole, skipped when it reaches the front.
    this.order[s.rank - this.base] = null
  }

  clear (): void {
    this.slots.clear()
    this.base += this.order.length
    this.order = []
    this.first = 0
    this.head = 0
    this.bytes = 0
  }

  /** Drops every block and the arena itself (allocated again at the next put). */
  release (): void {
    this.clear()
    this.arena = null
  }

  /** Whether the slot lies where the next quarter-to-half turn of the ring will overwrite it. */
  private inOlderHalf (s: Slot): boolean {
    const ahead = s.offset >= this.head ? s.offset - this.head : s.offset + this.maxBytes - this.head
    return ahead < this.maxBytes / 2
  }

  /** Drops slots from the oldest while the oldest satisfies test. */
  private evictWhile (test: (s: Slot) => boolean): void {
    while (this.first < this.order.length) {
      const s = this.order[this.first]
      if (s !== null && !test(s)) return
      this.first++
      if (s !== null) {
        this.slots.delete(s.key)
        this.bytes -= s.length
      }
    }
  }
}
