/**
 * One block in one zstd frame: how the block exchange sends a block compressed, and how the
 * block store keeps a block it received that way (pack-file.ts, a record of kind zstd). The frame
 * header must declare the content size (RFC 8878 3.1.1), and the frame must decompress to
 * exactly that many bytes, no more than the caller's limit: anything else is refused here, before
 * the bytes are hashed against their CID (which every reader still does).
 *
 * Compression and decompression go through the one zstd context each kept for the process
 * (node/native/zstd.c) where Node exports zstd; decompression falls back to node:zlib.
 */
import { zstdDecompressSync } from 'node:zlib'
import { nativeZstd } from '../native/zstd.ts'

/** zstd level of every block compressed here, at capture or to be sent. */
export const BLOCK_LEVEL = 3
/** A block is kept or sent as a frame only if that saves at least this fraction of its bytes. */
export const MIN_SAVING = 0.1
/** Blocks shorter than this are never worth a frame. */
export const MIN_COMPRESS = 512

/** Whether deflateBlock can compress here (the native context, where Node exports zstd). */
export const CAN_DEFLATE = nativeZstd.compress !== undefined

/** Whether a frame of zlen bytes is worth keeping for a block of n bytes. */
export function worthFraming (zlen: number, n: number): boolean {
  return zlen <= n * (1 - MIN_SAVING)
}

/**
 * The block as one zstd frame (content size in the header), synchronously, or null when it would
 * not save MIN_SAVING, the block is tiny, or this Node has no native zstd (CAN_DEFLATE).
 */
export function deflateBlock (bytes: Uint8Array): Uint8Array | null {
  if (nativeZstd.compress === undefined || bytes.length < MIN_COMPRESS) return null
  const z = nativeZstd.compress(bytes, BLOCK_LEVEL)
  return worthFraming(z.length, bytes.length) ? z : null
}

/** A frame that is not one block: no content size, too large, corrupt, or not its declared size. */
export class ZstdFrameError extends Error {}

/**
 * The content size a zstd frame header declares, or null if the header does not say (or is not a
 * zstd frame header): magic, frame header descriptor, optional window descriptor, optional
 * dictionary id, then the frame content size field.
 */
export function frameContentSize (z: Uint8Array): number | null {
  if (z.length < 6 || z[0] !== 0x28 || z[1] !== 0xb5 || z[2] !== 0x2f || z[3] !== 0xfd) return null
  const fhd = z[4]
  const fcsFlag = fhd >> 6
  const single = (fhd & 0x20) !== 0
  const dictBytes = [0, 1, 2, 4][fhd & 3]
  const fcsBytes = fcsFlag === 0 ? (single ? 1 : 0) : [0, 2, 4, 8][fcsFlag]
  if (fcsBytes === 0) return null
  const p = 5 + (single ? 0 : 1) + dictBytes
  if (p + fcsBytes > z.length) return null
  let v = 0
  for (let k = 0; k < Math.min(fcsBytes, 6); k++) v += z[p + k] * 2 ** (8 * k)
  if (fcsBytes === 8 && (z[p + 6] !== 0 || z[p + 7] !== 0)) return null
  if (fcsBytes === 2) v += 256
  return v
}

/**
 * The block in frame z, decompressed into `into(n)` (a buffer of at least n bytes) when the
 * native decompressor is there, else into a new buffer. ZstdFrameError if the frame declares no
 * content size or more than limit, does not decompress, or decompresses to another size.
 */
export function inflateFrame (z: Uint8Array, into: (n: number) => Uint8Array, limit: number): Uint8Array {
  const n = frameContentSize(z)
  if (n === null || n > limit) throw new ZstdFrameError('compressed block without a valid content size')
  let out: Uint8Array
  try {
    if (nativeZstd.decompress !== undefined) {
      const dst = into(n).subarray(0, n)
      out = dst.subarray(0, nativeZstd.decompress(z, dst))
    } else {
      out = zstdDecompressSync(z, { maxOutputLength: Math.max(1, n) })
    }
  } catch (err) {
    throw new ZstdFrameError(`bad compressed block (${(err as Error).message})`)
  }
  if (out.length !== n) throw new ZstdFrameError('compressed block does not decompress to its declared size')
  return out
}
