import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync, randomBytes, createPublicKey, sign as edSign, type KeyObject } from 'node:crypto'
import fc from 'fast-check'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { ImgmeshError } from '../node/errors.ts'
import { encodeVersion, publicKeyToHex, signVersion, type VersionBody } from '../protocols/version.ts'
import { versionCidOf } from '../protocols/heads/heads.ts'
import {
  announcementSigningBytes, checkAnnouncement, decodeAnnouncement, encodeAnnouncement, signAnnouncement, verify,
  type Announcement, type AnnouncementBody
} from '../protocols/announce/announce.ts'

function hasCode (code: string) {
  return (err: unknown): boolean => err instanceof ImgmeshError && err.code === code
}

function randomCid (codec = 0x71): CID {
  return CID.createV1(codec, Digest.create(0x12, new Uint8Array(randomBytes(32))))
}

const hex = (k: KeyObject): string => publicKeyToHex(createPublicKey(k))
const publisher = generateKeyPairSync('ed25519').privateKey
const other = generateKeyPairSync('ed25519').privateKey
const stranger = generateKeyPairSync('ed25519').privateKey
const trusted = new Set([hex(publisher), hex(other)])

function makeVersion (key: KeyObject, image: string, number: number, parents: CID[]): { bytes: Uint8Array, cid: CID } {
  const body: VersionBody = {
    image,
    number,
    parents,
    tree: randomCid(),
    root: { mode: 0o755, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 0, xattrs: [] },
    created: new Date(0).toISOString(),
    author: hex(key),
    message: 'test',
    stats: { files: 1, dirs: 1, entries: 2, bytes: 10, chunks: 1, chunkBytes: 10 }
  }
  const bytes = encodeVersion(signVersion(body, key))
  return { bytes, cid: versionCidOf(bytes) }
}

function body (over: Partial<AnnouncementBody> = {}): Omit<AnnouncementBody, 'publisher'> {
  return { image: 'debian12-hpc', number: 4, cid: randomCid(), parents: [randomCid()], newChunks: 120, newBytes: 7_000_000, time: 1_700_000_000_000, ...over }
}

function norm (a: Announcement): unknown {
  return dagCbor.decode(encodeAnnouncement(a))
}

test('sign, encode, decode, verify', () => {
  const a = signAnnouncement(body(), publisher)
  assert.equal(a.body.publisher, hex(publisher))
  const bytes = encodeAnnouncement(a)
  const back = decodeAnnouncement(bytes)
  assert.deepEqual(norm(back), norm(a))
  assert.equal(verify(back, trusted).announcement, back)
  const r = checkAnnouncement(bytes, trusted)
  assert.equal(r.ok, true)
})

test('with the version block: checked against CID, signature, trust and claims', () => {
  const parents = [randomCid()]
  const v = makeVersion(publisher, 'img', 7, parents)
  const a = signAnnouncement(body({ image: 'img', number: 7, cid: v.cid, parents }), other, v.bytes)
  const r = verify(decodeAnnouncement(encodeAnnouncement(a)), trusted)
  assert.equal(r.version?.body.number, 7)

  // announcement lies about the number / parents
  const lie = signAnnouncement(body({ image: 'img', number: 8, cid: v.cid, parents }), other, v.bytes)
  assert.throws(() => verify(lie, trusted), hasCode('EBADVERSION'))
  const lie2 = signAnnouncement(body({ image: 'img', number: 7, cid: v.cid, parents: [] }), other, v.bytes)
  assert.throws(() => verify(lie2, trusted), hasCode('EBADVERSION'))
  // version block that does not hash to the announced cid
  const wrongCid = signAnnouncement(body({ image: 'img', number: 7, cid: randomCid(), parents }), other, v.bytes)
  assert.throws(() => verify(wrongCid, trusted), hasCode('EBADVERSION'))
  // version authored by an untrusted key, announced by a trusted one
  const fv = makeVersion(stranger, 'img', 7, parents)
  const foreign = signAnnouncement(body({ image: 'img', number: 7, cid: fv.cid, parents }), publisher, fv.bytes)
  assert.throws(() => verify(foreign, trusted), hasCode('EUNTRUSTED'))
})

test('unsigned, wrong-key and tampered announcements are refused', () => {
  const a = signAnnouncement(body(), publisher)
  // unsigned: no signature field at all, or a zero signature
  const raw = dagCbor.decode(encodeAnnouncement(a)) as Record<string, unknown>
  delete raw.s
  assert.throws(() => decodeAnnouncement(dagCbor.encode(raw)), hasCode('EPROTOCOL'))
  assert.throws(() => verify({ ...a, signature: new Uint8Array(64) }, trusted), hasCode('EBADSIGNATURE'))
  // signed by a key outside the trust list
  const s = signAnnouncement(body(), stranger)
  assert.throws(() => verify(s, trusted), hasCode('EUNTRUSTED'))
  assert.equal(checkAnnouncement(encodeAnnouncement(s), trusted).ok, false)
  // claims a trusted publisher but signed with another key
  const forged: Announcement = { body: { ...s.body, publisher: hex(publisher) }, signature: s.signature }
  assert.throws(() => verify(forged, trusted), hasCode('EBADSIGNATURE'))
  const forged2: Announcement = {
    body: { ...a.body },
    signature: new Uint8Array(edSign(null, announcementSigningBytes(a.body), stranger))
  }
  assert.throws(() => verify(forged2, trusted), hasCode('EBADSIGNATURE'))
  // any field changed after signing
  for (const change of [{ number: 5 }, { newBytes: 1 }, { newChunks: 0 }, { image: 'x' }, { time: 1 }, { cid: randomCid() }, { parents: [] }]) {
    const t: Announcement = { body: { ...a.body, ...change }, signature: a.signature }
    assert.throws(() => verify(decodeAnnouncement(encodeAnnouncement(t)), trusted), hasCode('EBADSIGNATURE'), JSON.stringify(Object.keys(change)))
  }
  // a version block signature is not an announcement signature
  const v = makeVersion(publisher, 'img', 1, [])
  const vraw = dagCbor.decode(v.bytes) as { s: Uint8Array }
  assert.throws(() => verify({ body: a.body, signature: vraw.s }, trusted), hasCode('EBADSIGNATURE'))
})

test('garbage and malformed envelopes are EPROTOCOL', () => {
  const a = signAnnouncement(body(), publisher)
  const good = dagCbor.decode(encodeAnnouncement(a)) as { b: Record<string, unknown>, s: Uint8Array }
  const withBody = (over: Record<string, unknown>): Uint8Array => dagCbor.encode({ b: { ...good.b, ...over }, s: good.s })
  const cases: Array<[string, Uint8Array]> = [
    ['empty', new Uint8Array(0)],
    ['not cbor', new Uint8Array([0xff, 0xfe, 0x00])],
    ['a list', dagCbor.encode([1, 2, 3])],
    ['extra field', dagCbor.encode({ ...good, x: 1 })],
    ['short signature', dagCbor.encode({ b: good.b, s: new Uint8Array(10) })],
    ['no body', dagCbor.encode({ s: good.s })],
    ['wrong context', withBody({ t: 'imgmesh-version-1' })],
    ['bad image', withBody({ image: '../../x' })],
    ['number 0', withBody({ number: 0 })],
    ['float bytes', withBody({ newBytes: 1.5 })],
    ['negative chunks', withBody({ newChunks: -1 })],
    ['bad publisher', withBody({ publisher: 'zz' })],
    ['cid string', withBody({ cid: 'bafy' })],
    ['parent not cid', withBody({ parents: [1] })],
    ['too many parents', withBody({ parents: Array.from({ length: 17 }, () => randomCid()) })],
    ['unknown body field', withBody({ extra: 1 })],
    ['version not bytes', dagCbor.encode({ ...good, v: 'x' })],
    ['too large', new Uint8Array(200 * 1024)]
  ]
  for (const [name, bytes] of cases) {
    assert.throws(() => decodeAnnouncement(bytes), hasCode('EPROTOCOL'), name)
    const r = checkAnnouncement(bytes, trusted)
    assert.equal(r.ok, false, name)
  }
})

test('fuzz: random and mutated bytes never crash decode/check', () => {
  const v = makeVersion(publisher, 'img', 2, [])
  const valid = encodeAnnouncement(signAnnouncement(body({ image: 'img', number: 2, cid: v.cid, parents: [] }), publisher, v.bytes))
  const safe = (bytes: Uint8Array): void => {
    const r = checkAnnouncement(bytes, trusted)
    if (!r.ok) assert.ok(r.error instanceof ImgmeshError)
    try { decodeAnnouncement(bytes) } catch (err) { if (!hasCode('EPROTOCOL')(err)) throw err }
  }
  fc.assert(fc.property(fc.uint8Array({ maxLength: 500 }), (bytes) => { safe(bytes) }), { numRuns: 1000 })
  fc.assert(fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (at, value, cut) => {
    const m = valid.slice()
    m[at % m.length] = value
    safe(m)
    safe(valid.subarray(0, cut % valid.length))
  }), { numRuns: 1000 })
})
