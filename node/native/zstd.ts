/** Typed access to zstd.c: block compression with one zstd context kept, where Node exports zstd. */
import { createRequire } from 'node:module'

export interface NativeZstd {
  /** False on a Node that does not export zstd: then compress and decompress are absent. */
  available: boolean
  /** One zstd frame of src, its content size in the header. */
  compress?: (src: Uint8Array, level: number) => Buffer
  /** Decompresses frame into dst; returns the bytes written (throws on a bad frame or one larger than dst). */
  decompress?: (frame: Uint8Array, dst: Uint8Array) => number
}

const require = createRequire(import.meta.url)
export const nativeZstd: NativeZstd = require('./build/Release/zstd.node') as NativeZstd
