import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { streamPair } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { ImgmeshError } from '../node/errors.ts'
import {
  BlocksDecoder, MAX_BLOCK_SIZE, MAX_FRAME_SIZE, MAX_LIST_LENGTH, MessageType, decodeMessage, encode, packBlocks,
  readMessages, writeMessage, type BlocksMessage, type Block
} from '../protocols/blocks/messages.ts'
import { encodeVarint } from '../protocols/blocks/frame.ts'
import { MAX_CIDS, cidTableSize, rememberCids } from '../protocols/blocks/cid-table.ts'

const RAW = 0x55
const DAG_CBOR = 0x71

function cidOf (bytes: Uint8Array, codec = RAW): CID {
  return CID.createV1(codec, Digest.create(0x12, new Uint8Array(32).map((_, i) => bytes[i % Math.max(bytes.length, 1)] ?? i)))
}

function randomCid (codec = RAW): CID {
  return CID.createV1(codec, Digest.create(0x12, new Uint8Array(randomBytes(32))))
}

function concat (parts: Uint8Array[]): Uint8Array {
  return new Uint8ArrayList(...parts).subarray()
}

function isProtocolError (err: unknown): boolean {
  return err instanceof ImgmeshError && err.code === 'EPROTOCOL'
}

/** Compares messages, treating CIDs by value and Uint8Arrays by content. */
function normalize (m: BlocksMessage): unknown {
  return JSON.parse(JSON.stringify(m, (_k, v: unknown) => {
    const cid = CID.asCID(v)
    if (cid !== null) return `cid:${cid.toString()}`
    if (v instanceof Uint8Array) return `bytes:${Buffer.from(v).toString('hex')}`
    return v
  }))
}

function decodeAll (bytes: Uint8Array, splits: number[] = []): BlocksMessage[] {
  const d = new BlocksDecoder()
  const out: BlocksMessage[] = []
  let pos = 0
  for (const s of [...splits.map(x => Math.min(x, bytes.length)).sort((a, b) => a - b), bytes.length]) {
    if (s < pos) continue
    out.push(...d.push(bytes.subarray(pos, s)))
    pos = s
  }
  d.end()
  return out
}

const bitmap = new Uint8Array([0b1010_0000, 0b1111_1111, 0b1000_0000])
const samples: BlocksMessage[] = [
  { type: 'have', version: randomCid(DAG_CBOR), pieceCount: 1000, have: { kind: 'all' } },
  { type: 'have', version: randomCid(DAG_CBOR), pieceCount: 17, have: { kind: 'bitmap', bitmap } },
  { type: 'have', version: randomCid(DAG_CBOR), pieceCount: 0, have: { kind: 'bitmap', bitmap: new Uint8Array(0) } },
  { type: 'have', version: randomCid(DAG_CBOR), pieceCount: 100000, have: { kind: 'indexes', indexes: [0, 1, 2, 500, 99999] } },
  { type: 'want', id: 7, cids: [randomCid(), randomCid(), randomCid(DAG_CBOR)] },
  { type: 'want', id: 0, cids: [] },
  { type: 'block', id: 0xffff_ffff, blocks: [{ cid: randomCid(), bytes: new Uint8Array(randomBytes(200_000)) }, { cid: randomCid(), bytes: new Uint8Array(0) }, { cid: randomCid(), bytes: new Uint8Array(randomBytes(3)) }] },
  { type: 'dont-have', id: 3, cids: [randomCid()] },
  { type: 'cancel', cids: [randomCid(), randomCid()] }
]

test('every message round-trips, whole and split at random points', () => {
  for (const msg of samples) {
    const bytes = concat(encode(msg))
    assert.deepEqual(decodeAll(bytes).map(normalize), [normalize(msg)])
    for (let i = 0; i < 20; i++) {
      const splits = Array.from({ length: 1 + (i % 5) }, () => Math.floor(Math.random() * bytes.length))
      assert.deepEqual(decodeAll(bytes, splits).map(normalize), [normalize(msg)])
    }
  }
  const all = concat(samples.flatMap(encode))
  assert.deepEqual(decodeAll(all, [1, 2, 3, 1000, 70_000, 150_000]).map(normalize), samples.map(normalize))
})

test('indexes are sent sorted and unique', () => {
  const version = randomCid(DAG_CBOR)
  const [m] = decodeAll(concat(encode({ type: 'have', version, pieceCount: 10, have: { kind: 'indexes', indexes: [9, 3, 3, 0] } })))
  assert.deepEqual(m.type === 'have' && m.have.kind === 'indexes' ? m.have.indexes : null, [0, 3, 9])
  assert.throws(() => encode({ type: 'have', version, pieceCount: 10, have: { kind: 'indexes', indexes: [10] } }), isProtocolError)
})

test('block bytes are not copied by the encoder, and are views after decoding when in one chunk', () => {
  const data = new Uint8Array(randomBytes(65536))
  const parts = encode({ type: 'block', id: 1, blocks: [{ cid: randomCid(), bytes: data }] })
  assert.ok(parts.includes(data), 'the block bytes are one of the parts, by reference')
  const whole = concat(parts)
  const [m] = new BlocksDecoder().push(whole)
  assert.equal(m.type, 'block')
  if (m.type !== 'block') return
  assert.equal(m.blocks[0].bytes.buffer, whole.buffer, 'a view into the received chunk')
  assert.deepEqual(m.blocks[0].bytes, data)
})

test('limits: oversized blocks and frames are refused on both sides', () => {
  assert.throws(() => encode({ type: 'block', id: 0, blocks: [{ cid: randomCid(), bytes: new Uint8Array(MAX_BLOCK_SIZE + 1) }] }), isProtocolError)
  const two: Block[] = [{ cid: randomCid(), bytes: new Uint8Array(MAX_BLOCK_SIZE) }, { cid: randomCid(), bytes: new Uint8Array(100_000) }]
  assert.throws(() => encode({ type: 'block', id: 0, blocks: two }), isProtocolError)
  const packed = packBlocks(two, 5)
  assert.equal(packed.length, 2)
  for (const m of packed) encode(m)
  const many = Array.from({ length: 100 }, () => ({ cid: randomCid(), bytes: new Uint8Array(256 * 1024) }))
  const p2 = packBlocks(many)
  assert.equal(p2.reduce((s, m) => s + m.blocks.length, 0), 100)
  for (const m of p2) assert.ok(concat(encode(m)).length <= MAX_FRAME_SIZE + 8)
  assert.throws(() => encode({ type: 'want', id: 0, cids: Array.from({ length: MAX_LIST_LENGTH + 1 }, () => randomCid()) }), isProtocolError)

  // a frame announcing more than the limit is refused from its length prefix alone
  const d = new BlocksDecoder()
  assert.throws(() => d.push(encodeVarint(MAX_FRAME_SIZE + 1)), isProtocolError)
  assert.throws(() => new BlocksDecoder().push(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), isProtocolError)
})

test('malformed frames are EPROTOCOL', () => {
  const frame = (body: number[] | Uint8Array): Uint8Array => concat([encodeVarint(body.length), Uint8Array.from(body)])
  const cid = randomCid().bytes
  const cases: Array<[string, Uint8Array]> = [
    ['empty body', frame([])],
    ['unknown type', frame([0x09])],
    ['truncated want', frame([MessageType.WANT, 0, 2, cid.length, ...cid])],
    ['trailing bytes', frame([MessageType.CANCEL, 1, cid.length, ...cid, 0])],
    ['bad cid', frame([MessageType.CANCEL, 1, 4, 1, 2, 3, 4])],
    ['cid too long', frame([MessageType.CANCEL, 1, 0x81, 0x01, ...new Uint8Array(129)])],
    ['CIDv0', frame([MessageType.CANCEL, 1, 34, 0x12, 0x20, ...new Uint8Array(32)])],
    ['non-minimal varint', frame([MessageType.WANT, 0x80, 0x00, 0])],
    ['request id past u32', frame([MessageType.WANT, 0x80, 0x80, 0x80, 0x80, 0x10, 0])],
    ['bitmap spare bits', frame([MessageType.HAVE, cid.length, ...cid, 1, 3, 0b1111_1111])],
    ['bitmap short', frame([MessageType.HAVE, cid.length, ...cid, 1, 17, 0xff])],
    ['unknown have kind', frame([MessageType.HAVE, cid.length, ...cid, 7, 3])],
    ['index out of range', frame([MessageType.HAVE, cid.length, ...cid, 2, 3, 1, 3])],
    ['block length past data', frame([MessageType.BLOCK, 0, 1, cid.length, ...cid, 10, 1, 2])],
    ['block length past limit', frame([MessageType.BLOCK, 0, 1, cid.length, ...cid, 0x81, 0x80, 0x80, 0x02])]
  ]
  for (const [name, bytes] of cases) {
    assert.throws(() => decodeAll(bytes), isProtocolError, name)
  }
  // a stream that ends inside a frame
  const whole = concat(encode(samples[4]))
  assert.throws(() => decodeAll(whole.subarray(0, whole.length - 1)), isProtocolError)
  assert.throws(() => decodeAll(new Uint8Array([0x85])), isProtocolError)
})

test('CIDs read off the wire: one instance per distinct CID, equal to decoding it; refused ones are never kept; the table is bounded', () => {
  const frame = (body: number[] | Uint8Array): Uint8Array => concat([encodeVarint(body.length), Uint8Array.from(body)])
  const a = randomCid()
  const b = randomCid(DAG_CBOR)
  const cancel = (...cids: CID[]): Uint8Array => concat(encode({ type: 'cancel', cids }))
  const first = decodeAll(cancel(a, b))[0]
  const again = decodeAll(cancel(b, a), [7, 20, 41])[0]
  assert.ok(first.type === 'cancel' && again.type === 'cancel')
  assert.ok(first.cids[0].equals(a) && first.cids[1].equals(b))
  assert.equal(first.cids[0].toString(), a.toString())
  // the same bytes, whole or split across chunks, give the same instance
  assert.equal(again.cids[1], first.cids[0])
  assert.equal(again.cids[0], first.cids[1])
  // the instance does not pin the receive buffer
  assert.equal(first.cids[0].bytes.byteOffset, 0)
  assert.equal(first.cids[0].bytes.buffer.byteLength, a.bytes.length)
  // bytes refused once are refused every time (nothing was kept for them)
  const v0 = frame([MessageType.CANCEL, 1, 34, 0x12, 0x20, ...new Uint8Array(32)])
  const bad = frame([MessageType.CANCEL, 1, 4, 1, 2, 3, 4])
  for (let i = 0; i < 3; i++) {
    assert.throws(() => decodeAll(v0), isProtocolError)
    assert.throws(() => decodeAll(bad), isProtocolError)
  }
  // bounded: past MAX_CIDS distinct CIDs the table starts again, and decoding stays right
  for (let n = 0; n <= MAX_CIDS; n += 2048) {
    const cids = Array.from({ length: 2048 }, () => randomCid())
    const got = decodeAll(cancel(...cids))[0]
    assert.ok(got.type === 'cancel' && got.cids.every((c, i) => c.equals(cids[i])))
    assert.ok(cidTableSize() <= MAX_CIDS)
  }
  const late = decodeAll(cancel(a))[0]
  assert.ok(late.type === 'cancel' && late.cids[0].equals(a))
})

test('CIDs put in the table before they come are the instances the wire then gives; the table is never emptied by them', () => {
  const cancel = (...cids: CID[]): Uint8Array => concat(encode({ type: 'cancel', cids }))
  // a full table (from the tests before) starts again at the next CID the wire brings
  if (cidTableSize() >= MAX_CIDS) decodeAll(cancel(randomCid()))
  const known = [randomCid(), randomCid(DAG_CBOR)]
  rememberCids(known)
  const got = decodeAll(cancel(known[1], known[0]), [5, 17])[0]
  assert.ok(got.type === 'cancel')
  assert.equal(got.cids[0], known[1])
  assert.equal(got.cids[1], known[0])
  // a CIDv0 is not taken (the wire refuses it)
  const v0 = CID.createV0(Digest.create(0x12, new Uint8Array(32).fill(7)))
  const before = cidTableSize()
  rememberCids([v0])
  assert.equal(cidTableSize(), before)
  // filling the table: remembering stops at MAX_CIDS and keeps what it holds
  rememberCids(Array.from({ length: MAX_CIDS }, () => randomCid()))
  assert.equal(cidTableSize(), MAX_CIDS)
  const late = randomCid()
  rememberCids([late])
  assert.equal(cidTableSize(), MAX_CIDS)
  const again = decodeAll(cancel(known[0]))[0]
  assert.ok(again.type === 'cancel' && again.cids[0] === known[0])
  // a CID the table does not hold still decodes right (the wire then starts the table again)
  const fresh = decodeAll(cancel(late))[0]
  assert.ok(fresh.type === 'cancel' && fresh.cids[0].equals(late) && fresh.cids[0] !== late)
  assert.ok(cidTableSize() <= MAX_CIDS)
})

const cidArb = fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.constantFrom(RAW, DAG_CBOR))
  .map(([d, codec]) => CID.createV1(codec, Digest.create(0x12, d)))
const idArb = fc.integer({ min: 0, max: 0xffff_ffff })
const messageArb: fc.Arbitrary<BlocksMessage> = fc.oneof(
  fc.record({ type: fc.constant('want' as const), id: idArb, cids: fc.array(cidArb, { maxLength: 20 }) }),
  fc.record({ type: fc.constant('dont-have' as const), id: idArb, cids: fc.array(cidArb, { maxLength: 20 }) }),
  fc.record({ type: fc.constant('cancel' as const), cids: fc.array(cidArb, { maxLength: 20 }) }),
  fc.record({ type: fc.constant('block' as const), id: idArb, blocks: fc.array(fc.record({ cid: cidArb, bytes: fc.uint8Array({ maxLength: 3000 }) }), { maxLength: 5 }) }),
  fc.tuple(cidArb, fc.integer({ min: 0, max: 2000 }), fc.nat(), fc.array(fc.nat(), { maxLength: 40 })).map(([version, pieceCount, seed, picks]): BlocksMessage => {
    const kind = seed % 3
    if (kind === 0) return { type: 'have', version, pieceCount, have: { kind: 'all' } }
    if (kind === 1) {
      const bm = new Uint8Array(Math.ceil(pieceCount / 8))
      for (const p of picks) if (pieceCount > 0) { const i = p % pieceCount; bm[i >> 3] |= 0x80 >> (i & 7) }
      return { type: 'have', version, pieceCount, have: { kind: 'bitmap', bitmap: bm } }
    }
    const indexes = pieceCount === 0 ? [] : [...new Set(picks.map(p => p % pieceCount))].sort((a, b) => a - b)
    return { type: 'have', version, pieceCount, have: { kind: 'indexes', indexes } }
  })
)

/** Decodes bytes; must either yield messages that re-encode to the same bytes or throw EPROTOCOL. */
function decodeSafely (bytes: Uint8Array, splits: number[]): void {
  let msgs: BlocksMessage[]
  try {
    msgs = decodeAll(bytes, splits)
  } catch (err) {
    if (!isProtocolError(err)) throw err
    return
  }
  for (const m of msgs) {
    const frame = concat(encode(m))
    assert.deepEqual(normalize(decodeMessage(frame.subarray(lengthPrefixSize(frame)))), normalize(m))
  }
}

function lengthPrefixSize (frame: Uint8Array): number {
  let i = 0
  while ((frame[i] & 0x80) !== 0) i++
  return i + 1
}

test('fuzz: valid messages round-trip under any chunking', () => {
  fc.assert(fc.property(fc.array(messageArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (msgs, splits) => {
    const bytes = concat(msgs.flatMap(encode))
    assert.deepEqual(decodeAll(bytes, splits.map(s => s % (bytes.length + 1))).map(normalize), msgs.map(normalize))
  }), { numRuns: 300 })
})

test('fuzz: random bytes never crash the decoder', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(), { maxLength: 4 }), (bytes, splits) => {
    decodeSafely(bytes, splits)
    // also as a body behind a valid length prefix, and with each valid type byte in front
    decodeSafely(concat([encodeVarint(bytes.length), bytes]), splits)
    for (const t of [1, 2, 3, 4, 5]) decodeSafely(concat([encodeVarint(bytes.length + 1), new Uint8Array([t]), bytes]), [])
  }), { numRuns: 1000 })
})

test('fuzz: truncated, mutated and length-forged valid frames never crash the decoder', () => {
  fc.assert(fc.property(messageArb, fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), (msg, cut, at, value) => {
    const bytes = concat(encode(msg))
    decodeSafely(bytes.subarray(0, cut % (bytes.length + 1)), [])
    const mutated = bytes.slice()
    mutated[at % mutated.length] = value
    decodeSafely(mutated, [at % mutated.length])
    const inserted = concat([bytes.subarray(0, at % bytes.length), new Uint8Array([value]), bytes.subarray(at % bytes.length)])
    decodeSafely(inserted, [])
    // forge the length prefix: bigger (absorbs the next frame), smaller, oversized
    const body = bytes.subarray(lengthPrefixSize(bytes))
    decodeSafely(concat([encodeVarint(body.length + (value % 7)), body, bytes]), [])
    decodeSafely(concat([encodeVarint(Math.max(0, body.length - 1 - (value % 7))), body]), [])
    decodeSafely(concat([encodeVarint(MAX_FRAME_SIZE + 1 + value), body]), [])
  }), { numRuns: 1000 })
})

test('over a libp2p message stream: many messages with 256 KiB blocks, then garbage', async () => {
  const [outbound, inbound] = await streamPair()
  const blocks = Array.from({ length: 40 }, () => { const bytes = new Uint8Array(randomBytes(256 * 1024)); return { cid: cidOf(bytes), bytes } })
  const sent: BlocksMessage[] = [
    { type: 'have', version: randomCid(DAG_CBOR), pieceCount: 40, have: { kind: 'all' } },
    { type: 'want', id: 1, cids: blocks.map(b => b.cid) },
    ...packBlocks(blocks, 1),
    { type: 'cancel', cids: [blocks[0].cid] }
  ]
  const reading = (async () => {
    const got: BlocksMessage[] = []
    for await (const m of readMessages(inbound)) got.push(m)
    return got
  })()
  for (const m of sent) await writeMessage(outbound, m)
  await outbound.close()
  const got = await reading
  assert.equal(got.length, sent.length)
  assert.deepEqual(got.map(normalize), sent.map(normalize))

  const [o2, i2] = await streamPair()
  const bad = (async () => { for await (const _m of readMessages(i2)) { /* drain */ } })()
  await writeMessage(o2, sent[0])
  o2.send(new Uint8Array([0x02, 0x77, 0x00]))
  await o2.close()
  await assert.rejects(bad, isProtocolError)
})

test('reading ends when the remote closed its write end before reading began', async () => {
  const [a, b] = await streamPair()
  await writeMessage(a, samples[4])
  await writeMessage(a, samples[8])
  await a.close()
  await new Promise(resolve => setTimeout(resolve, 50))
  const got: BlocksMessage[] = []
  const keepAlive = setTimeout(() => {}, 5000) // holds the event loop if reading were to hang
  try {
    for await (const m of readMessages(b)) got.push(m)
  } finally {
    clearTimeout(keepAlive)
  }
  assert.deepEqual(got.map(normalize), [normalize(samples[4]), normalize(samples[8])])
})
