/**
 * Typed access to the small native helper (fsx.c): the filesystem calls Node's fs lacks.
 * Paths are Buffers so that names that are not UTF-8 survive unchanged.
 */
import { createRequire } from 'node:module'

export interface NativeFs {
  /** All extended attributes of a path, not following a symlink: [name, value] pairs. */
  getXattrs: (path: Buffer) => Array<[string, Buffer]>
  setXattr: (path: Buffer, name: string, value: Uint8Array) => void
  removeXattr: (path: Buffer, name: string) => void
  /** utimensat(AT_SYMLINK_NOFOLLOW) with nanoseconds. */
  setTimes: (path: Buffer, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number) => void
  /** mknod for devices, fifos and sockets; mode includes the file type bits. */
  makeNode: (path: Buffer, mode: number, major: number, minor: number) => void
  /** Data ranges [offset, length] of an open file of the given size (holes skipped). */
  dataRanges: (fd: number, size: number) => Array<[number, number]>
  /**
   * pread that never waits for the disk: the bytes read (maybe fewer than asked: the rest is
   * not in the page cache, or the file ends), or -1 when nothing can be read without waiting.
   */
  readCached: (fd: number, buffer: Uint8Array, position: number) => number
}

const require = createRequire(import.meta.url)
export const nativeFs: NativeFs = require('./build/Release/fsx.node') as NativeFs
