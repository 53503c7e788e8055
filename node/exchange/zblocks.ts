/**
 * Blocks compressed on the wire. `/imgmesh/blocks/1.1.0` is `/imgmesh/blocks/1.0.0` (see
 * protocols/blocks/messages.ts) plus one message, sent only by the serving side:
 *
 *     0x06 ZBLOCK  varint(request id) varint(n) n × (cid varint(zlen) zlen bytes)
 *
 * Each entry is one block as a single zstd frame whose header carries the content size (at most
 * MAX_BLOCK_SIZE; a frame without it, or that decompresses to more, is an EPROTOCOL error). A
 * server sends a block that does not shrink by at least 10 % as a plain BLOCK. Peers negotiate
 * the protocol when the requesting side opens its stream (1.1.0 first, then 1.0.0), so an agent
 * that knows only 1.0.0 still gets plain blocks.
 *
 * Why: a Debian tree's chunks compress about 2.2:1 with zstd (measured on the testbed image,
 * 64 KiB chunks compressed one by one, level 3), which halves the bytes on every link and the
 * encryption and system-call work per block. Capture stores each new chunk as its frame
 * (node/image/capture.ts, `compress`), which the origin sends as it is; a block stored plain is
 * compressed once by the agent that first serves it. Every receiver keeps the compressed bytes it
 * got and relays them as they are, so a block is compressed once in the whole swarm and
 * decompressed once per receiver. The receiver checks the decompressed bytes against the CID, as
 * for any block, and its store keeps the frame as it came (node/store/zstd-frame.ts, pack record
 * kind 0x02), to serve it again without compressing.
 *
 * Compression and decompression go through one zstd context each, kept for the process's life
 * (node/native/zstd.c), where Node exports zstd: node:zlib makes a new context per call, which on
 * 64 KiB blocks cost more than compressing them. node:zlib is the fallback.
 *
 * TODO(protocols): this format belongs in protocols/blocks/messages.ts next to the others.
 */
import { zstdCompress, constants as zc } from 'node:zlib'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { CID } from 'multiformats/cid'
import type { MessageStream } from '@libp2p/interface'
import { Cursor, protocolError, readFrames, varintLength, writeVarint } from '../../protocols/blocks/frame.ts'
import { nativeZstd } from '../native/zstd.ts'
import { BLOCK_LEVEL, CAN_DEFLATE, ZstdFrameError, MIN_COMPRESS, deflateBlock, frameContentSize, inflateFrame, worthFraming } from '../store/zstd-frame.ts'
import { readCid } from '../../protocols/blocks/cid-table.ts'
import { MAX_BLOCK_SIZE, MAX_FRAME_SIZE, MAX_LIST_LENGTH, MAX_REQUEST_ID, decodeMessage, type BlocksMessage } from '../../protocols/blocks/messages.ts'

export { frameContentSize }

export const BLOCKS_PROTOCOL_Z = '/imgmesh/blocks/1.1.0'
/** Whether this Node can compress blocks at all (its zlib has zstd from 22.15 on). */
export const ZSTD_AVAILABLE = nativeZstd.available || typeof zstdCompress === 'function'
export const ZBLOCK = 0x06

export interface ZBlock { cid: CID, z: Uint8Array }
export interface ZBlockMessage { type: 'zblock', id: number, blocks: ZBlock[] }
export type WireMessage = BlocksMessage | ZBlockMessage

/** The frame parts of a ZBLOCK message (block bytes not copied). */
export function encodeZBlocks (msg: ZBlockMessage): Uint8Array[] {
  if (msg.blocks.length > MAX_LIST_LENGTH) throw protocolError(`${msg.blocks.length} blocks in one message`)
  let body = 1 + varintLength(msg.id) + varintLength(msg.blocks.length)
  for (const b of msg.blocks) body += varintLength(b.cid.bytes.length) + b.cid.bytes.length + varintLength(b.z.length) + b.z.length
  if (body > MAX_FRAME_SIZE) throw protocolError(`message of ${body} bytes exceeds ${MAX_FRAME_SIZE}`)
  const parts: Uint8Array[] = []
  const head = new Uint8Array(32)
  let p = writeVarint(body, head, 0)
  head[p++] = ZBLOCK
  p = writeVarint(msg.id, head, p)
  p = writeVarint(msg.blocks.length, head, p)
  parts.push(head.subarray(0, p))
  for (const b of msg.blocks) {
    const h = new Uint8Array(varintLength(b.cid.bytes.length) + b.cid.bytes.length + varintLength(b.z.length))
    let q = writeVarint(b.cid.bytes.length, h, 0)
    h.set(b.cid.bytes, q)
    q += b.cid.bytes.length
    writeVarint(b.z.length, h, q)
    parts.push(h)
    if (b.z.length > 0) parts.push(b.z)
  }
  return parts
}

/** Bytes of a ZBLOCK message with these entries (for packing frames). */
export function zblockSize (blocks: Array<{ cid: CID, bytes: number }>): number {
  let n = 1 + 5 + varintLength(blocks.length)
  for (const b of blocks) n += varintLength(b.cid.bytes.length) + b.cid.bytes.length + varintLength(b.bytes) + b.bytes
  return n
}

function decodeZBlocks (body: Uint8ArrayList): ZBlockMessage {
  const c = new Cursor(body)
  c.byte()
  const id = c.varint(MAX_REQUEST_ID)
  const n = c.varint(MAX_LIST_LENGTH)
  const blocks: ZBlock[] = []
  for (let i = 0; i < n; i++) {
    const cid = readCid(c)
    const len = c.varint(MAX_BLOCK_SIZE)
    blocks.push({ cid, z: c.take(len) })
  }
  c.end()
  return { type: 'zblock', id, blocks }
}

/** Messages of a 1.0.0 or 1.1.0 stream until its remote end closes; EPROTOCOL on garbage. */
export async function * readWireMessages (source: MessageStream | AsyncIterable<Uint8Array | Uint8ArrayList>): AsyncGenerator<WireMessage> {
  for await (const frame of readFrames(source, MAX_FRAME_SIZE)) {
    if (frame.byteLength > 0 && frame.get(0) === ZBLOCK) yield decodeZBlocks(frame)
    else yield decodeMessage(frame)
  }
}

/**
 * The block in one zstd frame (see node/store/zstd-frame.ts), decompressed into `into(n)` where
 * the native decompressor is there; EPROTOCOL if the frame is not one block of at most
 * MAX_BLOCK_SIZE that decompresses to the size it declares.
 */
function inflate (z: Uint8Array, into: (n: number) => Uint8Array): Uint8Array {
  try {
    return inflateFrame(z, into, MAX_BLOCK_SIZE)
  } catch (err) {
    if (err instanceof ZstdFrameError) throw protocolError(err.message)
    throw err
  }
}

/** The blocks in zstd frames, each in a buffer of its own (see inflate for what is checked). */
export function decompressBlocks (frames: Uint8Array[]): Uint8Array[] {
  return frames.map(z => inflate(z, n => Buffer.allocUnsafe(n)))
}

/** One block in a zstd frame (see decompressBlocks). */
export function decompressBlock (z: Uint8Array): Uint8Array {
  return inflate(z, n => Buffer.allocUnsafe(n))
}

/** The smallest buffer a BlockInflater keeps (grown to the largest block it met). */
const INFLATE_BUFFER_BYTES = 256 * 1024

/**
 * Decompresses received blocks one at a time into one buffer it keeps, instead of a new one per
 * block: each block is hashed, stored and written where it lies, so a new 64 KiB buffer per block
 * was only garbage (and, at this rate, the young generation's collections and fresh pages it
 * cost). A result is valid until the next call.
 */
export class BlockInflater {
  private buffer = new Uint8Array(0)

  /** The block in frame z (checked as decompressBlocks checks it), lent until the next call. */
  inflate (z: Uint8Array): Uint8Array {
    return inflate(z, (n) => {
      if (this.buffer.length < n) this.buffer = new Uint8Array(Math.max(n, INFLATE_BUFFER_BYTES))
      return this.buffer
    })
  }
}

/**
 * The block as a zstd frame, or null when compressing does not pay (with the kept context on the
 * calling thread, about 0.2 ms per 64 KiB; else in node:zlib's thread pool).
 */
export async function compressBlock (bytes: Uint8Array): Promise<Uint8Array | null> {
  if (CAN_DEFLATE) return deflateBlock(bytes)
  if (bytes.length < MIN_COMPRESS) return null
  const z = await new Promise<Uint8Array>((resolve, reject) => {
    // the pledged size puts the content size in the frame header (decompressBlocks needs it)
    zstdCompress(bytes, { pledgedSrcSize: bytes.length, params: { [zc.ZSTD_c_compressionLevel]: BLOCK_LEVEL } }, (err, out) => { if (err !== null) reject(err); else resolve(out) })
  })
  return worthFraming(z.length, bytes.length) ? z : null
}
