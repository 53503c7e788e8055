/**
 * node/swarm/noise-lengths.ts: LengthPrefixedDecoder (noise's message reader) finds the same
 * messages at every cut of the input, with no exception thrown for a read that ends on a message
 * boundary; bad lengths still fail as before.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { emptyAware, useQuietLengthDecoding, type LengthDecoder } from '../node/swarm/noise-lengths.ts'

/** noise's decoder: a 2-byte big-endian length, RangeError when fewer than 2 bytes are there. */
function uint16Counting (): { decode: LengthDecoder, throws: () => number } {
  let throws = 0
  const decode: LengthDecoder = (data) => {
    if (data.byteLength < 2) { throws++; throw new RangeError('Could not decode int16BE') }
    return data instanceof Uint8Array ? (data[0] << 8) | data[1] : data.getUint16(0)
  }
  return { decode, throws: () => throws }
}

const MESSAGES = [randomBytes(1), randomBytes(300), randomBytes(0), randomBytes(65535), randomBytes(2), randomBytes(7000)]

function framed16 (messages: Uint8Array[]): Buffer {
  return Buffer.concat(messages.flatMap(m => [Buffer.from([m.length >> 8, m.length & 0xff]), m]))
}

/** An unsigned LEB128 varint, the decoder's default length prefix. */
function varint (n: number): Buffer {
  const out: number[] = []
  do { out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0)); n >>>= 7 } while (n > 0)
  return Buffer.from(out)
}

function framedVarint (messages: Uint8Array[]): Buffer {
  return Buffer.concat(messages.flatMap(m => [varint(m.length), m]))
}

/** Everything the decoder yields for the input fed in pieces cut at the given offsets. */
function run (decoder: LengthPrefixedDecoder, input: Uint8Array, cuts: number[]): Buffer[] {
  const out: Buffer[] = []
  let at = 0
  for (const end of [...cuts, input.length]) {
    for (const m of decoder.decode(input.subarray(at, end))) out.push(Buffer.from(m instanceof Uint8Array ? m : m.subarray()))
    at = end
  }
  return out
}

const expected = MESSAGES.filter(m => m.length > 0).map(m => Buffer.from(m))

test('reads ending on message boundaries throw before the change and not after; the messages are the same', () => {
  const input = framed16(MESSAGES)
  const boundaries: number[] = []
  let p = 0
  for (const m of MESSAGES.slice(0, -1)) { p += 2 + m.length; boundaries.push(p) }

  const before = uint16Counting()
  const plain = new LengthPrefixedDecoder({ lengthDecoder: before.decode, encodingLength: () => 2, maxBufferSize: 1 << 20 })
  assert.deepEqual(run(plain, input, boundaries), expected)
  assert.equal(before.throws(), MESSAGES.length, 'one throw per read that ended on a boundary')

  assert.equal(useQuietLengthDecoding(), true)
  assert.equal(useQuietLengthDecoding(), true, 'idempotent')
  const after = uint16Counting()
  const quiet = new LengthPrefixedDecoder({ lengthDecoder: after.decode, encodingLength: () => 2, maxBufferSize: 1 << 20 })
  assert.deepEqual(run(quiet, input, boundaries), expected)
  assert.equal(after.throws(), 0)
})

test('the same messages at every cut of the input, 2-byte and varint lengths', () => {
  useQuietLengthDecoding()
  const small = MESSAGES.filter(m => m.length < 400)
  const want = small.filter(m => m.length > 0).map(m => Buffer.from(m))
  for (const [input, make] of [
    [framed16(small), () => new LengthPrefixedDecoder({ lengthDecoder: uint16Counting().decode, encodingLength: () => 2 })],
    [framedVarint(small), () => new LengthPrefixedDecoder()]
  ] as Array<[Buffer, () => LengthPrefixedDecoder]>) {
    for (let a = 0; a <= input.length; a++) {
      assert.deepEqual(run(make(), input, [a]), want, `one cut at ${a}`)
      const b = Math.min(input.length, a + 1 + (a % 5))
      assert.deepEqual(run(make(), input, [a, b]), want, `cuts at ${a} and ${b}`)
    }
    // one byte at a time: every length prefix arrives split
    assert.deepEqual(run(make(), input, Array.from({ length: input.length }, (_v, i) => i)), want)
  }
})

test('a length above the limit still fails, and a half prefix waits for the rest', () => {
  useQuietLengthDecoding()
  const d = new LengthPrefixedDecoder({ lengthDecoder: uint16Counting().decode, encodingLength: () => 2, maxDataLength: 100 })
  assert.throws(() => [...d.decode(Uint8Array.from([0, 101]))], /Invalid message length/)
  const e = new LengthPrefixedDecoder({ lengthDecoder: uint16Counting().decode, encodingLength: () => 2 })
  assert.deepEqual([...e.decode(Uint8Array.from([0]))], [])
  const got = [...e.decode(Uint8Array.from([3, 1, 2, 3]))].map(m => Buffer.from(m instanceof Uint8Array ? m : m.subarray()))
  assert.deepEqual(got, [Buffer.from([1, 2, 3])])
})

test('emptyAware answers 0 for an empty buffer and asks the decoder otherwise', () => {
  const { decode, throws } = uint16Counting()
  const quiet = emptyAware(decode)
  assert.equal(quiet(new Uint8Array(0)), 0)
  assert.equal(quiet(new Uint8ArrayList()), 0)
  assert.equal(quiet(Uint8Array.from([1, 2])), 258)
  assert.throws(() => quiet(Uint8Array.from([1])), RangeError)
  assert.equal(throws(), 1)
})
