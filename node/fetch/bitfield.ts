/** A fixed-size set of piece indexes, as the bytes of a HAVE bitmap (bit 7 of byte 0 is piece 0). */
export class Bitfield {
  readonly size: number
  readonly bytes: Uint8Array
  private count = 0
  private edits = 0

  constructor (size: number, bytes?: Uint8Array) {
    this.size = size
    this.bytes = new Uint8Array(Math.ceil(size / 8))
    if (bytes !== undefined) {
      this.bytes.set(bytes.subarray(0, this.bytes.length))
      const spare = this.bytes.length * 8 - size
      if (spare > 0) this.bytes[this.bytes.length - 1] &= (0xff << spare) & 0xff
      for (let i = 0; i < size; i++) if (this.has(i)) this.count++
    }
  }

  static full (size: number): Bitfield {
    const b = new Bitfield(size)
    for (let i = 0; i < size; i++) b.set(i)
    return b
  }

  has (i: number): boolean { return (this.bytes[i >> 3] & (0x80 >> (i & 7))) !== 0 }

  set (i: number): boolean {
    if (i < 0 || i >= this.size || this.has(i)) return false
    this.bytes[i >> 3] |= 0x80 >> (i & 7)
    this.count++
    this.edits++
    return true
  }

  clear (i: number): boolean {
    if (i < 0 || i >= this.size || !this.has(i)) return false
    this.bytes[i >> 3] &= ~(0x80 >> (i & 7))
    this.count--
    this.edits++
    return true
  }

  get cardinality (): number { return this.count }
  /** How many times a piece was set or cleared since construction: unchanged means the same set. */
  get changes (): number { return this.edits }
  get complete (): boolean { return this.count === this.size }
}
