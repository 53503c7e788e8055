/**
 * Verified blocks kept in memory, least recently used dropped first, up to a byte budget. A
 * block that just arrived (hashed once on arrival) is soon wanted again: by the deploy writing
 * its file, and by peers it is relayed to. Serving those from here saves a read, an allocation
 * and a hash per use. Holds only bytes that matched their CID.
 */
export class BlockCache {
  readonly maxBytes: number
  private readonly map = new Map<string, Uint8Array>()
  bytes = 0
  hits = 0
  misses = 0

  constructor (maxBytes: number) { this.maxBytes = Math.max(0, maxBytes) }

  get (key: string): Uint8Array | undefined {
    const b = this.map.get(key)
    if (b === undefined) { this.misses++; return undefined }
    this.hits++
    // Most recently used last.
    this.map.delete(key)
    this.map.set(key, b)
    return b
  }

  put (key: string, bytes: Uint8Array): void {
    if (bytes.length > this.maxBytes) return
    const old = this.map.get(key)
    if (old !== undefined) { this.bytes -= old.length; this.map.delete(key) }
    this.map.set(key, bytes)
    this.bytes += bytes.length
    for (const [k, b] of this.map) {
      if (this.bytes <= this.maxBytes) break
      this.map.delete(k)
      this.bytes -= b.length
    }
  }

  delete (key: string): void {
    const b = this.map.get(key)
    if (b === undefined) return
    this.map.delete(key)
    this.bytes -= b.length
  }

  clear (): void { this.map.clear(); this.bytes = 0 }
}
