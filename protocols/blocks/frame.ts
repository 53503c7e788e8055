/**
 * Length-prefixed frames over libp2p 3 message streams, shared by the imgmesh protocols.
 *
 *     frame = varint(body length) body
 *
 * The varint is unsigned LEB128, minimal (no trailing 0x80 0x00 padding), at most 8 bytes.
 * A frame longer than the reader's limit is refused as soon as its length is read, before any
 * of it is buffered. Bodies are returned as Uint8ArrayList so large payloads (blocks) can be
 * sliced out without joining the whole frame first.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import type { AbortOptions, MessageStream } from '@libp2p/interface'
import { ImgmeshError } from '../../node/errors.ts'

/** Largest varint accepted: 8 bytes, 56 bits; values above 2^53 - 1 are refused anyway. */
const MAX_VARINT_BYTES = 8

export function protocolError (why: string): ImgmeshError {
  return new ImgmeshError('EPROTOCOL', why)
}

export function varintLength (value: number): number {
  let n = 1
  while (value >= 0x80) { value = Math.floor(value / 128); n++ }
  return n
}

/** Writes `value` as an unsigned LEB128 varint at `offset`; returns the offset after it. */
export function writeVarint (value: number, buf: Uint8Array, offset: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new ImgmeshError('EBADARG', `varint out of range: ${value}`)
  while (value >= 0x80) {
    buf[offset++] = (value % 128) | 0x80
    value = Math.floor(value / 128)
  }
  buf[offset++] = value
  return offset
}

export function encodeVarint (value: number): Uint8Array {
  const out = new Uint8Array(varintLength(value))
  writeVarint(value, out, 0)
  return out
}

/**
 * A read cursor over a list of chunks (one frame body). Small fields are read byte by byte;
 * `take` returns a view when the range lies in one chunk and copies only when it spans chunks.
 * Every read past the end throws EPROTOCOL.
 */
export class Cursor {
  readonly length: number
  pos = 0
  private readonly bufs: Uint8Array[]
  private bi = 0
  private off = 0

  constructor (body: Uint8Array | Uint8ArrayList) {
    this.bufs = body instanceof Uint8Array ? [body] : [...body]
    this.length = body.byteLength
    this.skipEmpty()
  }

  get remaining (): number { return this.length - this.pos }

  private skipEmpty (): void {
    while (this.bi < this.bufs.length && this.off >= this.bufs[this.bi].length) { this.bi++; this.off = 0 }
  }

  byte (): number {
    if (this.pos >= this.length) throw protocolError('truncated message')
    const b = this.bufs[this.bi][this.off++]
    this.pos++
    this.skipEmpty()
    return b
  }

  varint (max = Number.MAX_SAFE_INTEGER): number {
    let value = 0
    let scale = 1
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      const b = this.byte()
      value += (b & 0x7f) * scale
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) throw protocolError('non-minimal varint')
        if (value > max) throw protocolError(`value ${value} exceeds ${max}`)
        return value
      }
      scale *= 128
    }
    throw protocolError('varint too long')
  }

  take (n: number): Uint8Array {
    if (n > this.remaining) throw protocolError('truncated message')
    if (n === 0) return new Uint8Array(0)
    const cur = this.bufs[this.bi]
    if (this.off + n <= cur.length) {
      const view = cur.subarray(this.off, this.off + n)
      this.off += n
      this.pos += n
      this.skipEmpty()
      return view
    }
    const out = new Uint8Array(n)
    let filled = 0
    while (filled < n) {
      const b = this.bufs[this.bi]
      const k = Math.min(n - filled, b.length - this.off)
      out.set(b.subarray(this.off, this.off + k), filled)
      filled += k
      this.off += k
      this.skipEmpty()
    }
    this.pos += n
    return out
  }

  /** Throws unless every byte was consumed (no trailing garbage). */
  end (): void {
    if (this.pos !== this.length) throw protocolError(`${this.length - this.pos} unexpected trailing bytes`)
  }
}

/**
 * Splits a byte stream into frame bodies. Push chunks as they arrive; every complete frame is
 * returned. Throws EPROTOCOL on a bad or oversized length; call `end()` at end of stream to
 * reject a truncated last frame.
 */
export class FrameDecoder {
  readonly maxFrameSize: number
  private readonly buffer = new Uint8ArrayList()
  /** Body length of the frame being read (after its prefix was consumed), or -1. */
  private expect = -1

  constructor (maxFrameSize: number) {
    this.maxFrameSize = maxFrameSize
  }

  get buffered (): number { return this.buffer.byteLength }

  push (chunk: Uint8Array | Uint8ArrayList): Uint8ArrayList[] {
    if (chunk.byteLength > 0) this.buffer.append(chunk)
    const frames: Uint8ArrayList[] = []
    for (;;) {
      if (this.expect < 0) {
        const header = this.readLength()
        if (header === null) break
        this.buffer.consume(header.bytes)
        this.expect = header.length
      }
      if (this.buffer.byteLength < this.expect) break
      frames.push(this.buffer.sublist(0, this.expect))
      this.buffer.consume(this.expect)
      this.expect = -1
    }
    return frames
  }

  private readLength (): { length: number, bytes: number } | null {
    let value = 0
    let scale = 1
    const avail = this.buffer.byteLength
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      if (i >= avail) return null
      const b = this.buffer.get(i)
      value += (b & 0x7f) * scale
      if (value > this.maxFrameSize) throw protocolError(`frame of ${value}+ bytes exceeds the limit of ${this.maxFrameSize}`)
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) throw protocolError('non-minimal frame length')
        return { length: value, bytes: i + 1 }
      }
      scale *= 128
    }
    throw protocolError('frame length varint too long')
  }

  /** At end of stream: throws EPROTOCOL if a partial frame is left. */
  end (): void {
    if (this.expect >= 0 || this.buffer.byteLength > 0) throw protocolError('stream ended inside a frame')
  }
}

/** Reads frame bodies from a message stream (or any chunk source) until it ends. */
export async function * readFrames (source: AsyncIterable<Uint8Array | Uint8ArrayList>, maxFrameSize: number): AsyncGenerator<Uint8ArrayList> {
  const decoder = new FrameDecoder(maxFrameSize)
  for await (const chunk of source) {
    for (const frame of decoder.push(chunk)) yield frame
  }
  decoder.end()
}

/** Prepends the length prefix to the parts of a body. The parts are not copied. */
export function framed (body: Uint8Array[]): Uint8Array[] {
  let length = 0
  for (const p of body) length += p.byteLength
  return [encodeVarint(length), ...body]
}

/**
 * Sends already-framed parts as one write and waits for the stream to drain when its buffer
 * is full (libp2p 3 streams: `send()` returns false, then `onDrain()`).
 */
export async function sendParts (stream: MessageStream, parts: Uint8Array[], options?: AbortOptions): Promise<void> {
  const list = new Uint8ArrayList(...parts)
  if (!stream.send(list)) await stream.onDrain(options)
}
