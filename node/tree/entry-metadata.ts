/** Reading the metadata of a path on disk into the fields of a tree entry (never following symlinks). */
import type { BigIntStats } from 'node:fs'
import { nativeFs } from '../native/fsx.ts'
import type { EntryType, TreeEntry } from '../../protocols/tree.ts'
import { isErrno } from '../errors.ts'

export function entryTypeOf (st: BigIntStats): EntryType | null {
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isCharacterDevice()) return 'char'
  if (st.isBlockDevice()) return 'block'
  if (st.isFIFO()) return 'fifo'
  if (st.isSocket()) return 'socket'
  return null
}

/** Linux dev_t split, as glibc's major()/minor(). */
export function splitDev (rdev: bigint): { major: number, minor: number } {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn))
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn))
  return { major, minor }
}

export function mtimeOf (st: BigIntStats): { mtimeSec: number, mtimeNsec: number } {
  const ns = st.mtimeNs
  let sec = ns / 1_000_000_000n
  let nsec = ns % 1_000_000_000n
  if (nsec < 0n) { nsec += 1_000_000_000n; sec -= 1n }
  return { mtimeSec: Number(sec), mtimeNsec: Number(nsec) }
}

/** Extended attributes of a path, sorted by name; unreadable ones (ENOTSUP) give an empty list. */
export function readXattrs (path: Buffer): Array<[string, Uint8Array]> {
  try {
    return nativeFs.getXattrs(path).map(([k, v]): [string, Uint8Array] => [k, new Uint8Array(v)]).sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
  } catch (err) {
    if (isErrno(err, 'ENOTSUP') || isErrno(err, 'EACCES') || isErrno(err, 'EPERM')) return []
    throw err
  }
}

export function baseEntry (name: Uint8Array, type: EntryType, st: BigIntStats, xattrs: Array<[string, Uint8Array]>): TreeEntry {
  return { name, type, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), ...mtimeOf(st), xattrs }
}

export function xattrsEqual (a: Array<[string, Uint8Array]>, b: Array<[string, Uint8Array]>): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    if (a[i][0] !== b[i][0] || Buffer.compare(a[i][1], b[i][1]) !== 0) return false
  }
  return true
}

export function joinPath (dir: Buffer, name: Uint8Array): Buffer {
  return Buffer.concat([dir, Buffer.from('/'), name])
}

/** Human-readable form of a path made of bytes (invalid UTF-8 shown as \xNN). */
export function showPath (path: Uint8Array): string {
  const buf = Buffer.from(path.buffer, path.byteOffset, path.byteLength)
  const text = buf.toString('utf8')
  if (Buffer.from(text, 'utf8').equals(buf) && !/[\x00-\x1f\x7f]/.test(text)) return text
  let out = ''
  for (const b of buf) out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0')
  return out
}
