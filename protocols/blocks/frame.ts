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
import type { AbortOptions, MessageStream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
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

/** Bytes queued unread before the stream is paused (the remote then stops getting window). */
export const READ_HIGH_WATER_MARK = 8 * 1024 * 1024
/**
 * Paused streams keep receiving what the remote may still send within its yamux window (up to
 * 16 MiB); the read buffer limit must exceed that, or the stream is reset.
 */
const PAUSED_READ_BUFFER = 32 * 1024 * 1024

function isMessageStream (s: unknown): s is MessageStream {
  return typeof s === 'object' && s !== null && typeof (s as MessageStream).addEventListener === 'function' &&
    typeof (s as MessageStream).pause === 'function' && typeof (s as MessageStream).send === 'function'
}

/**
 * The chunks a libp2p 3 message stream receives, until its remote end closes (returns) or the
 * stream fails (throws its error). Unlike iterating the stream directly, it also ends when the
 * remote closed its write end before reading began (the built-in iterator waits forever for a
 * 'remoteCloseWrite' event that already fired), and it pauses the stream while more than
 * `highWaterMark` bytes wait unread, so a slow consumer holds back the sender.
 */
export async function * streamSource (stream: MessageStream, highWaterMark = READ_HIGH_WATER_MARK): AsyncGenerator<Uint8Array | Uint8ArrayList> {
  const queue: Array<Uint8Array | Uint8ArrayList> = []
  let queued = 0
  let ended = false
  let failure: Error | undefined
  let paused = false
  let wake: (() => void) | null = null
  const notify = (): void => { const w = wake; wake = null; w?.() }
  let resuming = false
  const pause = (): void => {
    paused = true
    try { stream.pause() } catch { /* the stream is closing: nothing more will come */ }
  }
  const resume = (): void => {
    if (!paused) return
    paused = false
    resuming = true
    try { stream.resume() } catch { /* the stream is closing: nothing more will come */ } finally { resuming = false }
    // resume() hands over what arrived while paused and only then opens the muxer's window
    // again: a pause made while it hands over would be undone at once, and the sender would be
    // granted window after window into a stream that no longer reads (it is reset once its
    // read buffer is full). So the pause waits until resume() has returned.
    if (queued > highWaterMark && !ended) pause()
  }
  const onMessage = (evt: StreamMessageEvent): void => {
    queue.push(evt.data)
    queued += evt.data.byteLength
    if (queued > highWaterMark && !paused && !ended && !resuming) pause()
    notify()
  }
  const onEnd = (): void => { ended = true; notify() }
  const onClose = (evt: StreamCloseEvent): void => {
    if (evt.error !== undefined) failure = evt.error
    ended = true
    notify()
  }
  if (stream.maxReadBufferLength < PAUSED_READ_BUFFER) stream.maxReadBufferLength = PAUSED_READ_BUFFER
  stream.addEventListener('message', onMessage)
  stream.addEventListener('end', onEnd)
  stream.addEventListener('close', onClose)
  if (stream.readableEnded || stream.status === 'closed') ended = true
  if (stream.status === 'aborted' || stream.status === 'reset') failure = protocolError(`stream was ${stream.status}`)
  try {
    for (;;) {
      const chunk = queue.shift()
      if (chunk !== undefined) {
        queued -= chunk.byteLength
        if (queued <= highWaterMark / 2) resume()
        yield chunk
        continue
      }
      if (failure !== undefined) throw failure
      if (ended) return
      await new Promise<void>(resolve => { wake = resolve })
    }
  } finally {
    stream.removeEventListener('message', onMessage)
    stream.removeEventListener('end', onEnd)
    stream.removeEventListener('close', onClose)
    resume()
  }
}

/**
 * Reads frame bodies from a message stream (through `streamSource`) or any chunk source until
 * it ends; EPROTOCOL on a bad, oversized or truncated frame.
 */
export async function * readFrames (source: MessageStream | AsyncIterable<Uint8Array | Uint8ArrayList>, maxFrameSize: number): AsyncGenerator<Uint8ArrayList> {
  const decoder = new FrameDecoder(maxFrameSize)
  const chunks = isMessageStream(source) ? streamSource(source) : source
  for await (const chunk of chunks) {
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

/** Bytes a writer may leave queued in a stream before `waitForDrain` makes it wait. */
export const WRITE_HIGH_WATER_MARK = 1024 * 1024
const DRAIN_POLL_MS = 250

/**
 * Resolves once the stream can take more data: its transport is not full and at most
 * `highWaterMark` bytes wait in its write buffer. Rejects if the stream closes or the signal
 * fires.
 *
 * Use this instead of `stream.onDrain()`: in @libp2p/utils 7.4 `onDrain()` keeps the promise
 * of the first drain, so after one drain it resolves at once forever and a writer that
 * trusts it queues everything it has in memory (no backpressure at all).
 */
export async function waitForDrain (stream: MessageStream, options?: AbortOptions, highWaterMark = WRITE_HIGH_WATER_MARK): Promise<void> {
  const ready = (): boolean => !stream.writableNeedsDrain && stream.writeBufferLength <= highWaterMark
  if (ready()) return
  const signal = options?.signal
  signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      clearInterval(poll)
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('idle', check)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const check = (): void => {
      if (stream.status !== 'open') { onClose(); return }
      if (ready()) { cleanup(); resolve() }
    }
    const onClose = (): void => { cleanup(); reject(new ImgmeshError('EABORTED', `stream ${stream.status} while waiting to write`)) }
    const onAbort = (): void => { cleanup(); reject(signal?.reason instanceof Error ? signal.reason : new ImgmeshError('EABORTED', 'write aborted')) }
    // 'drain' runs before the stream re-processes its queue (in a microtask): check after it
    const onDrain = (): void => { queueMicrotask(check) }
    // a safety net against a missed event; bounded by the caller's signal
    const poll = setInterval(check, DRAIN_POLL_MS)
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('idle', check)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Sends already-framed parts as one write, then waits while the stream's buffer is full
 * (`waitForDrain`). The parts are not copied here.
 */
export async function sendParts (stream: MessageStream, parts: Uint8Array[], options?: AbortOptions): Promise<void> {
  stream.send(new Uint8ArrayList(...parts))
  await waitForDrain(stream, options)
}
