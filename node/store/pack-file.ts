/**
 * A pack: an append-only file of blocks, written by exactly one store object of one process
 * and read by any. Creating a file costs hundreds of µs of kernel time on some filesystems
 * (measured: 650 µs per create on the ext4 of the test machines, against 37 µs to append
 * 64 KiB), so blocks are appended to packs instead of getting a file each.
 *
 *     pack   = "IMGPACK1" record*
 *     record = kind varint(multihash length) multihash varint(data length) data
 *     kind   = 0x01 (data: the block's bytes) | 0x02 (data: the block as one zstd frame,
 *              zstd-frame.ts; a block received compressed is kept as it came)
 *
 * An agent older than kind 0x02 takes such a record for a bad header and ignores the rest of
 * that pack (its GC then rewrites it): the blocks are fetched again, nothing wrong is used.
 *
 * A record is complete once its last data byte is in the file. A reader scanning a pack stops
 * at a record that does not fit in the file (one still being written, or cut short by a crash)
 * and picks it up on a later scan; a header that makes no sense ends the scan of that pack
 * (the rest of it is never used). Data are not trusted here: every read is hash-checked by
 * the block store.
 */
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writevSync, constants } from 'node:fs'

export const PACK_MAGIC = Buffer.from('IMGPACK1', 'latin1')
const RECORD_RAW = 0x01
const RECORD_ZSTD = 0x02
/** Largest multihash a record may name (sha2-256 is 34 bytes). */
const MAX_MULTIHASH = 64
/** Largest block a record may hold (tree blocks are at most 32 MiB). */
export const MAX_RECORD_DATA = 64 * 1024 * 1024
/** A record header is at most this long: kind, two varints, the multihash. */
const MAX_HEADER = 1 + 1 + MAX_MULTIHASH + 4

export interface PackRecord {
  /** The multihash bytes of the block. */
  multihash: Uint8Array
  /** Offset of the block's data in the pack, and its length. */
  offset: number
  length: number
  /** The data are the block in one zstd frame (kind 0x02), not its bytes. */
  zstd: boolean
}

function varintAt (buf: Uint8Array, pos: number, end: number): [number, number] | null {
  let value = 0
  let scale = 1
  for (let i = 0; i < 4 && pos + i < end; i++) {
    const b = buf[pos + i]
    value += (b & 0x7f) * scale
    if ((b & 0x80) === 0) return [value, pos + i + 1]
    scale *= 128
  }
  return null
}

function writeVarint (value: number, out: Uint8Array, pos: number): number {
  while (value >= 0x80) { out[pos++] = (value & 0x7f) | 0x80; value = Math.floor(value / 128) }
  out[pos++] = value
  return pos
}

export interface ScanResult {
  records: PackRecord[]
  /** Where the scan stopped: the end of the last complete record. */
  end: number
  /** The scan met a header that is not a record (the rest of the pack is ignored). */
  corrupt: boolean
}

/**
 * Reads the record headers of an open pack from `from` (PACK_MAGIC.length for a whole pack)
 * up to `size`: one small read per record, the data are skipped.
 */
export function scanPack (fd: number, from: number, size: number): ScanResult {
  const records: PackRecord[] = []
  const head = Buffer.allocUnsafe(MAX_HEADER)
  let pos = from
  if (from === 0) {
    if (size < PACK_MAGIC.length) return { records, end: 0, corrupt: false }
    const n = readSync(fd, head, 0, PACK_MAGIC.length, 0)
    if (n < PACK_MAGIC.length || !head.subarray(0, n).equals(PACK_MAGIC)) return { records, end: 0, corrupt: true }
    pos = PACK_MAGIC.length
  }
  while (pos < size) {
    const n = readSync(fd, head, 0, Math.min(MAX_HEADER, size - pos), pos)
    const kind = head[0]
    if (kind !== RECORD_RAW && kind !== RECORD_ZSTD) return { records, end: pos, corrupt: true }
    const mh = varintAt(head, 1, n)
    if (mh === null) return { records, end: pos, corrupt: n === MAX_HEADER }
    const [mhLen, afterLen] = mh
    if (mhLen === 0 || mhLen > MAX_MULTIHASH) return { records, end: pos, corrupt: true }
    const dl = varintAt(head, afterLen + mhLen, n)
    if (dl === null) return { records, end: pos, corrupt: n === MAX_HEADER }
    const [dataLen, dataStart] = dl
    if (dataLen > MAX_RECORD_DATA) return { records, end: pos, corrupt: true }
    const offset = pos + dataStart
    // Not all here yet (being written, or cut short): stop, a later scan sees the rest.
    if (offset + dataLen > size) break
    records.push({ multihash: Uint8Array.from(head.subarray(afterLen, afterLen + mhLen)), offset, length: dataLen, zstd: kind === RECORD_ZSTD })
    pos = offset + dataLen
  }
  return { records, end: pos, corrupt: false }
}

/** The writing end of a pack this process created. Not safe to share between store objects. */
export class PackWriter {
  readonly path: string
  readonly fd: number
  /** Bytes in the pack: where the next record goes. */
  size: number
  /** A write failed and the pack could not be cut back: nothing more is appended to it. */
  broken = false

  private constructor (path: string, fd: number, size: number) {
    this.path = path
    this.fd = fd
    this.size = size
  }

  /** Creates a new pack (O_EXCL: never an existing file, never through a symlink). */
  static create (path: string): PackWriter {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644)
    const w = new PackWriter(path, fd, 0)
    try {
      w.write([PACK_MAGIC])
    } catch (err) {
      closeSync(fd)
      throw err
    }
    return w
  }

  /**
   * Appends one block (data: its bytes, or with zstd its zstd frame); returns the offset of its
   * data. On failure the pack is cut back to where it was.
   */
  append (multihash: Uint8Array, data: Uint8Array, zstd = false): number {
    const head = new Uint8Array(1 + 5 + multihash.length + 5)
    head[0] = zstd ? RECORD_ZSTD : RECORD_RAW
    let p = writeVarint(multihash.length, head, 1)
    head.set(multihash, p)
    p = writeVarint(data.length, head, p + multihash.length)
    const offset = this.size + p
    this.write([head.subarray(0, p), data])
    return offset
  }

  private write (parts: Uint8Array[]): void {
    if (this.broken) throw Object.assign(new Error(`pack ${this.path} is no longer written to`), { code: 'EIO' })
    const start = this.size
    let total = 0
    for (const part of parts) total += part.length
    let done = 0
    try {
      while (done < total) {
        let skip = done
        const rest: Uint8Array[] = []
        for (const part of parts) {
          if (skip >= part.length) { skip -= part.length; continue }
          rest.push(skip > 0 ? part.subarray(skip) : part)
          skip = 0
        }
        done += writevSync(this.fd, rest, start + done)
      }
    } catch (err) {
      // A half-written record would hide every record after it: cut it off.
      try { if (done > 0) ftruncateSync(this.fd, start) } catch { this.broken = true }
      throw err
    }
    this.size = start + total
  }

  /** The size the file has on disk (equal to `size` unless something else wrote to it). */
  diskSize (): number { return fstatSync(this.fd).size }

  close (): void { closeSync(this.fd) }
}
