import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync, randomBytes, createPublicKey, type KeyObject } from 'node:crypto'
import fc from 'fast-check'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { streamPair } from '@libp2p/utils'
import { ImgmeshError } from '../node/errors.ts'
import { encodeVersion, publicKeyToHex, signVersion, type VersionBody } from '../protocols/version.ts'
import {
  MAX_HEADS, decodeHeads, encodeHeads, exchangeHeads, readHeads, verifyHead, versionCidOf, writeHeads, type Head, type HeadsMessage
} from '../protocols/heads/heads.ts'
import { encodeVarint } from '../protocols/blocks/frame.ts'

function hasCode (code: string) {
  return (err: unknown): boolean => err instanceof ImgmeshError && err.code === code
}

function randomCid (codec: number): CID {
  return CID.createV1(codec, Digest.create(0x12, new Uint8Array(randomBytes(32))))
}

function makeVersion (key: KeyObject, image: string, number: number): { bytes: Uint8Array, cid: CID } {
  const body: VersionBody = {
    image,
    number,
    parents: number > 1 ? [randomCid(0x71)] : [],
    tree: randomCid(0x71),
    root: { mode: 0o755, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 0, xattrs: [] },
    created: new Date(0).toISOString(),
    author: publicKeyToHex(createPublicKey(key)),
    message: 'test',
    stats: { files: 1, dirs: 1, entries: 2, bytes: 10, chunks: 1, chunkBytes: 10 }
  }
  const bytes = encodeVersion(signVersion(body, key))
  return { bytes, cid: versionCidOf(bytes) }
}

const publisher = generateKeyPairSync('ed25519').privateKey
const stranger = generateKeyPairSync('ed25519').privateKey
const trusted = new Set([publicKeyToHex(createPublicKey(publisher))])

function norm (m: HeadsMessage): unknown {
  return m.heads.map(h => ({ ...h, cid: h.cid.toString(), version: h.version === undefined ? undefined : Buffer.from(h.version).toString('hex') }))
}

test('heads round-trip, with and without version blocks', () => {
  const v1 = makeVersion(publisher, 'debian12-hpc', 3)
  const msg: HeadsMessage = {
    heads: [
      { image: 'debian12-hpc', number: 3, cid: v1.cid, version: v1.bytes },
      { image: 'alma9', number: 41, cid: randomCid(0x71) }
    ]
  }
  assert.deepEqual(norm(decodeHeads(encodeHeads(msg))), norm(msg))
  assert.deepEqual(decodeHeads(encodeHeads({ heads: [] })), { heads: [] })
})

test('heads: bad messages are EPROTOCOL', () => {
  const v = makeVersion(publisher, 'img', 1)
  const bad: Array<[string, unknown]> = [
    ['not a map', [1, 2]],
    ['extra field', { heads: [], x: 1 }],
    ['heads not a list', { heads: 'x' }],
    ['bad image', { heads: [{ image: '../etc', number: 1, cid: v.cid }] }],
    ['number 0', { heads: [{ image: 'img', number: 0, cid: v.cid }] }],
    ['negative number', { heads: [{ image: 'img', number: -4, cid: v.cid }] }],
    ['float number', { heads: [{ image: 'img', number: 1.5, cid: v.cid }] }],
    ['raw cid', { heads: [{ image: 'img', number: 1, cid: randomCid(0x55) }] }],
    ['cid as string', { heads: [{ image: 'img', number: 1, cid: v.cid.toString() }] }],
    ['unknown head field', { heads: [{ image: 'img', number: 1, cid: v.cid, extra: true }] }],
    ['version does not match cid', { heads: [{ image: 'img', number: 1, cid: randomCid(0x71), version: v.bytes }] }],
    ['version not bytes', { heads: [{ image: 'img', number: 1, cid: v.cid, version: 'abc' }] }],
    ['duplicate', { heads: [{ image: 'img', number: 1, cid: v.cid }, { image: 'img', number: 1, cid: v.cid }] }],
    ['too many', { heads: Array.from({ length: MAX_HEADS + 1 }, () => ({ image: 'img', number: 1, cid: randomCid(0x71) })) }]
  ]
  for (const [name, raw] of bad) {
    assert.throws(() => decodeHeads(dagCbor.encode(raw)), hasCode('EPROTOCOL'), name)
  }
  assert.throws(() => decodeHeads(new Uint8Array([0xff, 0x00, 0x13])), hasCode('EPROTOCOL'))
  assert.throws(() => decodeHeads(new Uint8Array(0)), hasCode('EPROTOCOL'))
  assert.throws(() => encodeHeads({ heads: [{ image: 'img', number: 0, cid: v.cid }] }), hasCode('EPROTOCOL'))
})

test('verifyHead: trusted, wrong key, missing and lying heads', () => {
  const good = makeVersion(publisher, 'img', 2)
  const v = verifyHead({ image: 'img', number: 2, cid: good.cid, version: good.bytes }, trusted)
  assert.equal(v.body.number, 2)
  assert.throws(() => verifyHead({ image: 'img', number: 2, cid: good.cid }, trusted), hasCode('ENOVERSION'))
  assert.throws(() => verifyHead({ image: 'img', number: 3, cid: good.cid, version: good.bytes }, trusted), hasCode('EBADVERSION'))
  assert.throws(() => verifyHead({ image: 'other', number: 2, cid: good.cid, version: good.bytes }, trusted), hasCode('EBADVERSION'))
  const foreign = makeVersion(stranger, 'img', 2)
  assert.throws(() => verifyHead({ image: 'img', number: 2, cid: foreign.cid, version: foreign.bytes }, trusted), hasCode('EUNTRUSTED'))
  // a block whose signature was tampered with (re-hashed so the CID matches)
  const tampered = good.bytes.slice()
  tampered[tampered.length - 5] ^= 0x01
  const head: Head = { image: 'img', number: 2, cid: versionCidOf(tampered), version: tampered }
  assert.throws(() => verifyHead(head, trusted), (err: unknown) => err instanceof ImgmeshError && (err.code === 'EBADSIGNATURE' || err.code === 'EBADVERSION'))
})

test('fuzz: random and mutated heads bytes never crash the decoder', () => {
  const v = makeVersion(publisher, 'img', 1)
  const valid = encodeHeads({ heads: [{ image: 'img', number: 1, cid: v.cid, version: v.bytes }, { image: 'b', number: 9, cid: randomCid(0x71) }] })
  const safe = (bytes: Uint8Array): void => {
    try {
      const m = decodeHeads(bytes)
      encodeHeads(m) // whatever decodes is valid
    } catch (err) {
      if (!hasCode('EPROTOCOL')(err)) throw err
    }
  }
  fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => { safe(bytes) }), { numRuns: 1000 })
  fc.assert(fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (at, value, cut) => {
    const m = valid.slice()
    m[at % m.length] = value
    safe(m)
    safe(valid.subarray(0, cut % valid.length))
  }), { numRuns: 1000 })
})

test('exchange over a message stream, both directions', async () => {
  const [a, b] = await streamPair()
  const va = makeVersion(publisher, 'img', 5)
  const mine: HeadsMessage = { heads: [{ image: 'img', number: 5, cid: va.cid, version: va.bytes }] }
  const theirs: HeadsMessage = { heads: [{ image: 'other', number: 2, cid: randomCid(0x71) }] }
  const signal = AbortSignal.timeout(5000)
  const [gotA, gotB] = await Promise.all([exchangeHeads(a, mine, { signal }), exchangeHeads(b, theirs, { signal })])
  assert.deepEqual(norm(gotA), norm(theirs))
  assert.deepEqual(norm(gotB), norm(mine))
})

test('exchange with a peer that ends the stream at once: EPROTOCOL, never an unhandled rejection', async () => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', onUnhandled)
  try {
    for (let i = 0; i < 20; i++) {
      const [a, b] = await streamPair()
      const mine: HeadsMessage = { heads: Array.from({ length: 50 }, (_, k) => ({ image: `img${k}`, number: k + 1, cid: randomCid(0x71) })) }
      // Half the rounds the peer sends garbage first (our read fails while we still write),
      // half it closes at once.
      if (i % 2 === 0) a.send(new Uint8Array([0x03, 0xff, 0xff, 0xff]))
      const exchanging = exchangeHeads(b, mine, { signal: AbortSignal.timeout(5000) })
      if (i % 2 === 1) await a.close()
      await assert.rejects(exchanging, (err: unknown) => err instanceof ImgmeshError)
    }
    // give a stray rejection a turn of the event loop to show up
    await new Promise(resolve => setTimeout(resolve, 50))
    assert.deepEqual(unhandled, [])
  } finally {
    process.off('unhandledRejection', onUnhandled)
  }
})

test('readHeads: garbage, oversize, early end and silence', async () => {
  {
    const [a, b] = await streamPair()
    a.send(new Uint8Array([0x03, 0xff, 0xff, 0xff]))
    await assert.rejects(readHeads(b, { signal: AbortSignal.timeout(5000) }), hasCode('EPROTOCOL'))
  }
  {
    const [a, b] = await streamPair()
    a.send(encodeVarint(64 * 1024 * 1024))
    await assert.rejects(readHeads(b, { signal: AbortSignal.timeout(5000) }), hasCode('EPROTOCOL'))
  }
  {
    const [a, b] = await streamPair()
    const reading = readHeads(b, { signal: AbortSignal.timeout(5000) })
    a.send(new Uint8Array([0x10, 0xa1]))
    await a.close()
    await assert.rejects(reading, hasCode('EPROTOCOL'))
  }
  {
    const [, b] = await streamPair()
    const t0 = Date.now()
    // AbortSignal.timeout does not keep the event loop alive: hold it open meanwhile
    const keepAlive = setInterval(() => {}, 1000)
    try {
      await assert.rejects(readHeads(b, { signal: AbortSignal.timeout(200) }), hasCode('ETIMEOUT'))
    } finally {
      clearInterval(keepAlive)
    }
    assert.ok(Date.now() - t0 < 3000)
  }
  {
    const [a, b] = await streamPair()
    await writeHeads(a, { heads: [] })
    assert.deepEqual(await readHeads(b, { signal: AbortSignal.timeout(5000) }), { heads: [] })
  }
})
