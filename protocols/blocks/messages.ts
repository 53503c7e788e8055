/**
 * The block-exchange protocol `/imgmesh/blocks/1.0.0`: long-lived streams carrying
 * length-prefixed binary frames, one message per frame (see frame.ts for the framing).
 *
 *     frame     = varint(len) type:u8 payload
 *     cid       = varint(n) n bytes (a CIDv1, n <= 128)
 *
 *     0x01 HAVE       cid(version) kind:u8 varint(pieceCount) rest
 *                       kind 0 "all":     rest is empty
 *                       kind 1 "bitmap":  rest is ceil(pieceCount/8) bytes, bit 7 of byte 0 is
 *                                         piece 0, spare bits of the last byte are zero
 *                       kind 2 "indexes": varint(n) then n strictly increasing piece indexes,
 *                                         delta-coded (first index, then gap - 1); they add to
 *                                         what the sender announced before
 *     0x02 WANT       varint(request id) varint(n) n × cid
 *     0x03 BLOCK      varint(request id) varint(n) n × (cid varint(len) len bytes)
 *     0x04 DONT_HAVE  varint(request id) varint(n) n × cid
 *     0x05 CANCEL     varint(n) n × cid
 *
 * Request id 0 means "none" (BLOCK sent unasked, e.g. super-seeding). A body larger than
 * MAX_FRAME_SIZE, an unknown type, a bad CID, trailing bytes or any count past its limit is
 * an EPROTOCOL error. BLOCK payloads are never joined or copied by the encoder: `encode`
 * returns the header pieces and the block bytes as separate parts; the decoder slices block
 * bytes out of the received chunks (a copy only when a block spans two chunks).
 *
 * Hashes are not checked here: the receiver must check every block against its CID.
 */
import { CID } from 'multiformats/cid'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { AbortOptions, MessageStream } from '@libp2p/interface'
import { Cursor, FrameDecoder, protocolError, readFrames, sendParts, varintLength, writeVarint } from './frame.ts'
import { MAX_CID_LENGTH, readCid } from './cid-table.ts'

export const BLOCKS_PROTOCOL = '/imgmesh/blocks/1.0.0'
/** Largest block carried (content chunks are at most 256 KiB; tree blocks may be larger). */
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024
/** Largest frame body: one maximal block plus room for headers. */
export const MAX_FRAME_SIZE = MAX_BLOCK_SIZE + 64 * 1024
export { MAX_CID_LENGTH }
/** Most CIDs in one WANT / DONT_HAVE / CANCEL and most blocks in one BLOCK message. */
export const MAX_LIST_LENGTH = 16384
/** Most pieces a version may have (a bitmap of 4 MiB). */
export const MAX_PIECES = 32 * 1024 * 1024
/** Largest request id (u32). */
export const MAX_REQUEST_ID = 0xffff_ffff

export const MessageType = {
  HAVE: 0x01,
  WANT: 0x02,
  BLOCK: 0x03,
  DONT_HAVE: 0x04,
  CANCEL: 0x05
} as const

export type HaveSet =
  | { kind: 'all' }
  | { kind: 'bitmap', bitmap: Uint8Array }
  | { kind: 'indexes', indexes: number[] }

export interface HaveMessage { type: 'have', version: CID, pieceCount: number, have: HaveSet }
export interface WantMessage { type: 'want', id: number, cids: CID[] }
export interface Block { cid: CID, bytes: Uint8Array }
export interface BlockMessage { type: 'block', id: number, blocks: Block[] }
export interface DontHaveMessage { type: 'dont-have', id: number, cids: CID[] }
export interface CancelMessage { type: 'cancel', cids: CID[] }

export type BlocksMessage = HaveMessage | WantMessage | BlockMessage | DontHaveMessage | CancelMessage

const HAVE_ALL = 0
const HAVE_BITMAP = 1
const HAVE_INDEXES = 2

// ---------------------------------------------------------------------------------- encoding

/** A growable scratch buffer for the small header parts of a message. */
class Writer {
  private buf: Uint8Array
  pos = 0
  constructor (size: number) { this.buf = new Uint8Array(size) }
  private ensure (n: number): void {
    if (this.pos + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n))
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
  }

  byte (b: number): void { this.ensure(1); this.buf[this.pos++] = b }
  varint (v: number): void { this.ensure(10); this.pos = writeVarint(v, this.buf, this.pos) }
  bytes (b: Uint8Array): void { this.ensure(b.length); this.buf.set(b, this.pos); this.pos += b.length }
  cid (c: CID): void { this.varint(c.bytes.length); this.bytes(c.bytes) }
  /** Returns what was written and starts a new part. */
  flush (): Uint8Array {
    const out = this.buf.subarray(0, this.pos)
    this.buf = this.buf.subarray(this.pos)
    this.pos = 0
    return out
  }
}

function checkId (id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_REQUEST_ID) throw protocolError(`bad request id ${id}`)
}

function checkList (n: number, what: string): void {
  if (n > MAX_LIST_LENGTH) throw protocolError(`${n} ${what} in one message (limit ${MAX_LIST_LENGTH})`)
}

function checkCid (c: CID): void {
  if (c.version !== 1 || c.bytes.length > MAX_CID_LENGTH) throw protocolError(`unsupported CID ${c.toString()}`)
}

function cidListSize (cids: CID[]): number {
  let n = 0
  for (const c of cids) { checkCid(c); n += varintLength(c.bytes.length) + c.bytes.length }
  return n
}

function sortedUnique (indexes: number[], pieceCount: number): number[] {
  const out = [...new Set(indexes)].sort((a, b) => a - b)
  for (const i of out) if (!Number.isInteger(i) || i < 0 || i >= pieceCount) throw protocolError(`piece index ${i} out of range`)
  return out
}

/**
 * Encodes one message as a frame: a list of parts to write in order (the first holds the
 * length prefix). Block bytes appear as their own parts, uncopied. Throws EPROTOCOL if the
 * message breaks a limit (the peer would refuse it).
 */
export function encode (msg: BlocksMessage): Uint8Array[] {
  const w = new Writer(64)
  const parts: Uint8Array[] = []
  let bodyLength: number
  switch (msg.type) {
    case 'have': {
      checkCid(msg.version)
      const count = msg.pieceCount
      if (!Number.isInteger(count) || count < 0 || count > MAX_PIECES) throw protocolError(`bad piece count ${count}`)
      const head = 1 + varintLength(msg.version.bytes.length) + msg.version.bytes.length + 1 + varintLength(count)
      if (msg.have.kind === 'all') {
        bodyLength = head
        w.varint(bodyLength); w.byte(MessageType.HAVE); w.cid(msg.version); w.byte(HAVE_ALL); w.varint(count)
        parts.push(w.flush())
      } else if (msg.have.kind === 'bitmap') {
        const bitmap = msg.have.bitmap
        if (bitmap.length !== Math.ceil(count / 8)) throw protocolError(`bitmap of ${bitmap.length} bytes for ${count} pieces`)
        const spare = bitmap.length * 8 - count
        if (spare > 0 && (bitmap[bitmap.length - 1] & ((1 << spare) - 1)) !== 0) throw protocolError('bitmap has bits set past the last piece')
        bodyLength = head + bitmap.length
        w.varint(bodyLength); w.byte(MessageType.HAVE); w.cid(msg.version); w.byte(HAVE_BITMAP); w.varint(count)
        parts.push(w.flush(), bitmap)
      } else {
        const indexes = sortedUnique(msg.have.indexes, count)
        checkList(indexes.length, 'piece indexes')
        const deltas: number[] = []
        let prev = -1
        for (const i of indexes) { deltas.push(i - prev - 1); prev = i }
        bodyLength = head + varintLength(indexes.length) + deltas.reduce((s, d) => s + varintLength(d), 0)
        w.varint(bodyLength); w.byte(MessageType.HAVE); w.cid(msg.version); w.byte(HAVE_INDEXES); w.varint(count)
        w.varint(indexes.length)
        for (const d of deltas) w.varint(d)
        parts.push(w.flush())
      }
      break
    }
    case 'want':
    case 'dont-have': {
      checkId(msg.id)
      checkList(msg.cids.length, 'CIDs')
      bodyLength = 1 + varintLength(msg.id) + varintLength(msg.cids.length) + cidListSize(msg.cids)
      w.varint(bodyLength); w.byte(msg.type === 'want' ? MessageType.WANT : MessageType.DONT_HAVE); w.varint(msg.id); w.varint(msg.cids.length)
      for (const c of msg.cids) w.cid(c)
      parts.push(w.flush())
      break
    }
    case 'cancel': {
      checkList(msg.cids.length, 'CIDs')
      bodyLength = 1 + varintLength(msg.cids.length) + cidListSize(msg.cids)
      w.varint(bodyLength); w.byte(MessageType.CANCEL); w.varint(msg.cids.length)
      for (const c of msg.cids) w.cid(c)
      parts.push(w.flush())
      break
    }
    case 'block': {
      checkId(msg.id)
      checkList(msg.blocks.length, 'blocks')
      bodyLength = 1 + varintLength(msg.id) + varintLength(msg.blocks.length)
      for (const b of msg.blocks) {
        checkCid(b.cid)
        if (b.bytes.length > MAX_BLOCK_SIZE) throw protocolError(`block of ${b.bytes.length} bytes exceeds ${MAX_BLOCK_SIZE}`)
        bodyLength += varintLength(b.cid.bytes.length) + b.cid.bytes.length + varintLength(b.bytes.length) + b.bytes.length
      }
      if (bodyLength > MAX_FRAME_SIZE) throw protocolError(`message of ${bodyLength} bytes exceeds ${MAX_FRAME_SIZE}`)
      w.varint(bodyLength); w.byte(MessageType.BLOCK); w.varint(msg.id); w.varint(msg.blocks.length)
      for (const b of msg.blocks) {
        w.cid(b.cid); w.varint(b.bytes.length)
        parts.push(w.flush())
        if (b.bytes.length > 0) parts.push(b.bytes)
      }
      if (w.pos > 0) parts.push(w.flush())
      break
    }
  }
  if (bodyLength > MAX_FRAME_SIZE) throw protocolError(`message of ${bodyLength} bytes exceeds ${MAX_FRAME_SIZE}`)
  return parts
}

/** Bytes a block adds to a BLOCK frame beyond its data. */
export function blockOverhead (b: Block): number {
  return varintLength(b.cid.bytes.length) + b.cid.bytes.length + varintLength(b.bytes.length)
}

/**
 * Packs blocks into as few BLOCK messages as the frame limit allows (in order), each at most
 * `maxBytes` of body (default MAX_FRAME_SIZE) and MAX_LIST_LENGTH blocks.
 */
export function packBlocks (blocks: Block[], id = 0, maxBytes = MAX_FRAME_SIZE): BlockMessage[] {
  const out: BlockMessage[] = []
  const fixed = 1 + varintLength(id) + varintLength(MAX_LIST_LENGTH)
  let cur: Block[] = []
  let size = fixed
  for (const b of blocks) {
    const add = blockOverhead(b) + b.bytes.length
    if (cur.length > 0 && (size + add > maxBytes || cur.length >= MAX_LIST_LENGTH)) {
      out.push({ type: 'block', id, blocks: cur })
      cur = []
      size = fixed
    }
    cur.push(b)
    size += add
  }
  if (cur.length > 0) out.push({ type: 'block', id, blocks: cur })
  return out
}

// ---------------------------------------------------------------------------------- decoding

function readCids (c: Cursor): CID[] {
  const n = c.varint(MAX_LIST_LENGTH)
  const cids: CID[] = []
  for (let i = 0; i < n; i++) cids.push(readCid(c))
  return cids
}

/** Decodes one frame body (without its length prefix). Throws EPROTOCOL on anything malformed. */
export function decodeMessage (body: Uint8Array | Uint8ArrayList): BlocksMessage {
  if (body.byteLength > MAX_FRAME_SIZE) throw protocolError(`message of ${body.byteLength} bytes exceeds ${MAX_FRAME_SIZE}`)
  const c = new Cursor(body)
  const type = c.byte()
  let msg: BlocksMessage
  switch (type) {
    case MessageType.HAVE: {
      const version = readCid(c)
      const kind = c.byte()
      const pieceCount = c.varint(MAX_PIECES)
      if (kind === HAVE_ALL) {
        msg = { type: 'have', version, pieceCount, have: { kind: 'all' } }
      } else if (kind === HAVE_BITMAP) {
        const bitmap = c.take(Math.ceil(pieceCount / 8)).slice()
        const spare = bitmap.length * 8 - pieceCount
        if (spare > 0 && (bitmap[bitmap.length - 1] & ((1 << spare) - 1)) !== 0) throw protocolError('bitmap has bits set past the last piece')
        msg = { type: 'have', version, pieceCount, have: { kind: 'bitmap', bitmap } }
      } else if (kind === HAVE_INDEXES) {
        const n = c.varint(Math.min(MAX_LIST_LENGTH, pieceCount))
        const indexes: number[] = []
        let prev = -1
        for (let i = 0; i < n; i++) {
          const index = prev + 1 + c.varint(MAX_PIECES)
          if (index >= pieceCount) throw protocolError(`piece index ${index} out of range (${pieceCount} pieces)`)
          indexes.push(index)
          prev = index
        }
        msg = { type: 'have', version, pieceCount, have: { kind: 'indexes', indexes } }
      } else {
        throw protocolError(`unknown HAVE kind ${kind}`)
      }
      break
    }
    case MessageType.WANT:
    case MessageType.DONT_HAVE: {
      const id = c.varint(MAX_REQUEST_ID)
      const cids = readCids(c)
      msg = type === MessageType.WANT ? { type: 'want', id, cids } : { type: 'dont-have', id, cids }
      break
    }
    case MessageType.BLOCK: {
      const id = c.varint(MAX_REQUEST_ID)
      const n = c.varint(MAX_LIST_LENGTH)
      const blocks: Block[] = []
      for (let i = 0; i < n; i++) {
        const cid = readCid(c)
        const len = c.varint(MAX_BLOCK_SIZE)
        blocks.push({ cid, bytes: c.take(len) })
      }
      msg = { type: 'block', id, blocks }
      break
    }
    case MessageType.CANCEL:
      msg = { type: 'cancel', cids: readCids(c) }
      break
    default:
      throw protocolError(`unknown message type 0x${type.toString(16)}`)
  }
  c.end()
  return msg
}

/** Incremental decoder: push received chunks, get whole messages. `end()` rejects a truncated tail. */
export class BlocksDecoder {
  private readonly frames: FrameDecoder
  constructor (maxFrameSize = MAX_FRAME_SIZE) { this.frames = new FrameDecoder(maxFrameSize) }
  push (chunk: Uint8Array | Uint8ArrayList): BlocksMessage[] {
    return this.frames.push(chunk).map(decodeMessage)
  }

  end (): void { this.frames.end() }
}

/** Yields the messages read from a stream until its remote end closes; throws EPROTOCOL on garbage. */
export async function * readMessages (source: MessageStream | AsyncIterable<Uint8Array | Uint8ArrayList>, maxFrameSize = MAX_FRAME_SIZE): AsyncGenerator<BlocksMessage> {
  for await (const frame of readFrames(source, maxFrameSize)) yield decodeMessage(frame)
}

/** Writes one message, waiting for the stream to drain if its send buffer is full. */
export async function writeMessage (stream: MessageStream, msg: BlocksMessage, options?: AbortOptions): Promise<void> {
  await sendParts(stream, encode(msg), options)
}
