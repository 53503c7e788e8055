/**
 * Tree and version block formats (protocols/tree.ts, protocols/version.ts): exact round trips of
 * every entry type, and property/fuzz tests with hostile input. Whatever bytes come in, the
 * decoders return a valid value or throw an ImgmeshError with their own code (EBADTREE;
 * EBADVERSION or EBADSIGNATURE), never another exception, and return quickly. A signed version
 * block that was changed in any way never verifies.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import fc from 'fast-check'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { ImgmeshError, type ErrorCode } from '../node/errors.ts'
import {
  ENTRY_TYPES, MAX_TREE_BLOCK, compareNames, decodeTree, encodeTree, encodeTreeGeneric, entriesEqual, isSafeName, isSafeRelativePath, sameContent, segmentContent,
  type EntryType, type Segment, type TreeEntry
} from '../protocols/tree.ts'
import { writeTreeEntry } from '../protocols/tree-cbor.ts'
import {
  MAX_VERSION_BLOCK, decodeVersion, encodeVersion, publicKeyToHex, signVersion, signingBytes, type SignedVersion, type VersionBody
} from '../protocols/version.ts'

const RAW = 0x55
const DAG_CBOR = 0x71
/** A single decode of a small block takes microseconds; this only catches runaway loops. */
const SLOW_MS = 1000

const { privateKey, publicKey } = generateKeyPairSync('ed25519')
const AUTHOR = publicKeyToHex(publicKey)
const stranger = generateKeyPairSync('ed25519')

function cidOf (seed: Uint8Array, codec = RAW): CID {
  const digest = new Uint8Array(32)
  for (let i = 0; i < 32; i++) digest[i] = seed[i % Math.max(seed.length, 1)] ?? i
  return CID.createV1(codec, Digest.create(0x12, digest))
}

const b = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'))

/** Comparable form: CIDs as strings, bytes as hex (Buffer and Uint8Array alike). */
function normalize (v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => {
    const cid = CID.asCID(x)
    if (cid !== null) return `cid:${cid.toString()}`
    if (x instanceof Uint8Array) return `bytes:${Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString('hex')}`
    if (typeof x === 'object' && x !== null && (x as { type?: unknown }).type === 'Buffer' && Array.isArray((x as { data?: unknown }).data)) {
      return `bytes:${Buffer.from((x as { data: number[] }).data).toString('hex')}`
    }
    return x
  }))
}

function hasCode (err: unknown, codes: readonly ErrorCode[]): boolean {
  return err instanceof ImgmeshError && codes.includes(err.code)
}

const TREE_CODES: readonly ErrorCode[] = ['EBADTREE']
const VERSION_CODES: readonly ErrorCode[] = ['EBADVERSION', 'EBADSIGNATURE']

let slowest = 0

/** Decodes; returns the value or null after a permitted error. Anything else fails the test. */
function attempt<T> (decode: (bytes: Uint8Array) => T, bytes: Uint8Array, codes: readonly ErrorCode[]): T | null {
  const t0 = performance.now()
  try {
    return decode(bytes)
  } catch (err) {
    if (!hasCode(err, codes)) {
      assert.fail(`${decode.name} threw ${(err as Error)?.name} ${(err as { code?: string })?.code ?? ''}: ${(err as Error)?.message} on ${Buffer.from(bytes).toString('hex').slice(0, 200)}`)
    }
    return null
  } finally {
    slowest = Math.max(slowest, performance.now() - t0)
  }
}

/** The invariants every decoded tree satisfies. */
function assertValidTree (entries: TreeEntry[]): void {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]
    assert.ok(isSafeName(e.name), 'unsafe name decoded')
    if (i > 0) assert.ok(compareNames(entries[i - 1].name, e.name) < 0, 'entries not strictly sorted')
    assert.ok(ENTRY_TYPES.includes(e.type))
    assert.ok(Number.isInteger(e.mode) && e.mode >= 0 && e.mode <= 0o7777)
    assert.ok(Number.isInteger(e.mtimeNsec) && e.mtimeNsec >= 0 && e.mtimeNsec < 1e9)
    if (e.type === 'file') {
      assert.ok(e.size !== undefined && Number.isSafeInteger(e.size))
      assert.ok((e.inline === undefined) !== (e.segments === undefined), 'a file has inline content or segments')
      if (e.inline !== undefined) assert.equal(e.inline.length, e.size)
      else assert.equal(e.segments!.reduce((n, s) => n + s.length, 0), e.size)
    }
    if (e.type === 'dir') assert.ok(e.tree !== undefined)
    if (e.type === 'hardlink') assert.ok(isSafeRelativePath(e.link!))
    if (e.type === 'symlink') assert.ok(e.link !== undefined && e.link.length > 0 && !e.link.includes(0))
  }
  // A decoded tree encodes and decodes to itself.
  assert.deepEqual(normalize(decodeTree(encodeTree(entries))), normalize(entries))
}

// ---------------------------------------------------------------------------------------------
// Fixed examples

function entry (name: string, type: EntryType, extra: Partial<TreeEntry> = {}): TreeEntry {
  return { name: b(name), type, mode: 0o644, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 123_456_789, xattrs: [], ...extra }
}

const ALL_TYPES: TreeEntry[] = [
  entry('small', 'file', { size: 3, inline: b('abc') }),
  entry('empty', 'file', { size: 0, inline: new Uint8Array() }),
  entry('big', 'file', { size: 200_000, segments: [{ length: 70_000, cid: cidOf(b('c1')) }, { length: 100_000 }, { length: 30_000, cid: cidOf(b('c2')) }] }),
  entry('all-hole', 'file', { size: 1 << 30, segments: [{ length: 1 << 30 }] }),
  entry('setuid', 'file', { mode: 0o4755, uid: 1000, gid: 4294967295, size: 1, inline: b('x'), xattrs: [['security.capability', b('\x01\x00\x00\x02')], ['user.note', b('hi')]] }),
  entry('sub', 'dir', { mode: 0o1777, tree: cidOf(b('tree'), DAG_CBOR) }),
  entry('link', 'symlink', { mode: 0o777, link: b('../../etc/passwd') }),
  entry('again', 'hardlink', { link: b('sub/deeper/first') }),
  entry('tty', 'char', { mode: 0o620, major: 4, minor: 1 }),
  entry('sda', 'block', { mode: 0o660, major: 8, minor: 0x7ffff }),
  entry('pipe', 'fifo', { mode: 0o600 }),
  entry('sock', 'socket', { mode: 0o755 }),
  entry('new\nline and space', 'file', { size: 1, inline: b('y') }),
  entry('caf\xe9-latin1-\xff', 'file', { size: 1, inline: b('z') }),
  entry('old', 'file', { mtimeSec: -86_400, mtimeNsec: 0, size: 1, inline: b('o') }),
  entry('packed', 'file', { size: 5000, segments: [{ length: 5000, cid: cidOf(b('pack')), offset: 0 }] }),
  entry('packed-later', 'file', { size: 700, segments: [{ length: 700, cid: cidOf(b('pack')), offset: 5000 }] })
]

test('every entry type round-trips exactly, sorted by name bytes', () => {
  const shuffled = [...ALL_TYPES].reverse()
  const block = encodeTree(shuffled)
  const decoded = decodeTree(block)
  const sorted = [...ALL_TYPES].sort((x, y) => compareNames(x.name, y.name))
  assert.deepEqual(normalize(decoded), normalize(sorted))
  assert.deepEqual(Buffer.from(encodeTree(decoded)), Buffer.from(block), 're-encoding gives the same bytes')
  for (let i = 0; i < decoded.length; i++) {
    assert.ok(entriesEqual(decoded[i], sorted[i]))
    assert.ok(sameContent(decoded[i], sorted[i]))
  }
  assertValidTree(decoded)
})

test('a packed run is its bytes of the block; a block without them gives null', () => {
  const block = b('0123456789')
  const rawCid = cidOf(block)
  assert.equal(Buffer.from(segmentContent({ length: 4, cid: rawCid, offset: 3 }, block)!).toString(), '3456')
  assert.equal(Buffer.from(segmentContent({ length: 10, cid: rawCid, offset: 0 }, block)!).toString(), '0123456789')
  assert.equal(segmentContent({ length: 4, cid: rawCid, offset: 7 }, block), null)
  assert.equal(segmentContent({ length: 10, cid: rawCid }, block), block)
  assert.equal(segmentContent({ length: 9, cid: rawCid }, block), null, 'a whole-block segment must be the whole block')
})

test('an empty directory is a valid tree', () => {
  assert.deepEqual(decodeTree(encodeTree([])), [])
})

test('equal entries compare equal; content and metadata changes are told apart', () => {
  const a = ALL_TYPES[2]
  assert.ok(entriesEqual(a, { ...a }))
  assert.ok(!entriesEqual(a, { ...a, mode: 0o600 }))
  assert.ok(sameContent(a, { ...a, mode: 0o600 }))
  const packed = ALL_TYPES.find(e => Buffer.from(e.name).toString() === 'packed')!
  const elsewhere = { ...packed, segments: [{ ...packed.segments![0], offset: 1 }] }
  const whole = { ...packed, segments: [{ length: packed.size!, cid: packed.segments![0].cid }] }
  assert.ok(!entriesEqual(packed, elsewhere) && !sameContent(packed, elsewhere), 'another run of the same pack is other content')
  assert.ok(!entriesEqual(packed, whole) && !sameContent(packed, whole), 'a run at offset 0 is not the whole block')
  const moved: Segment[] = [{ length: 70_000, cid: cidOf(b('c1')) }, { length: 100_000, cid: cidOf(b('zz')) }, { length: 30_000, cid: cidOf(b('c2')) }]
  assert.ok(!sameContent(a, { ...a, segments: moved }))
  assert.ok(!sameContent(ALL_TYPES[0], { ...ALL_TYPES[0], inline: b('abd') }))
  // What the encoding leaves out does not count: a minor without a major, an absent minor as 0.
  const fifo = ALL_TYPES[10]
  assert.ok(entriesEqual(fifo, { ...fifo, minor: 3 }))
  const tty = ALL_TYPES[8]
  assert.ok(entriesEqual({ ...tty, minor: 0 }, { ...tty, minor: undefined }))
  assert.ok(!entriesEqual(tty, { ...tty, minor: 2 }))
  assert.ok(!entriesEqual(fifo, { ...fifo, major: 0 }))
  assert.ok(!entriesEqual(ALL_TYPES[4], { ...ALL_TYPES[4], xattrs: ALL_TYPES[4].xattrs.slice(1) }))
  assert.ok(!entriesEqual(ALL_TYPES[5], { ...ALL_TYPES[5], tree: cidOf(b('other'), DAG_CBOR) }))
})

function rawEntry (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = { n: b(name), t: 'file', m: 0o644, u: 0, g: 0, s: 1, ns: 0, z: 1, i: b('A') }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete base[k]
    else base[k] = v
  }
  return base
}

const rawCid = cidOf(b('r'))
const hostileTrees: Array<[string, unknown]> = [
  ['a name of ..', { v: 1, e: [rawEntry('..')] }],
  ['a name of .', { v: 1, e: [rawEntry('.')] }],
  ['a slash in a name', { v: 1, e: [rawEntry('a/../../x')] }],
  ['a NUL in a name', { v: 1, e: [rawEntry('a\0b')] }],
  ['an empty name', { v: 1, e: [rawEntry('')] }],
  ['a name over 255 bytes', { v: 1, e: [rawEntry('n'.repeat(256))] }],
  ['a text name', { v: 1, e: [{ ...rawEntry('a'), n: 'a' }] }],
  ['repeated names', { v: 1, e: [rawEntry('a'), rawEntry('a')] }],
  ['unsorted names', { v: 1, e: [rawEntry('b'), rawEntry('a')] }],
  ['an unknown type', { v: 1, e: [rawEntry('a', { t: 'door' })] }],
  ['an unknown entry field', { v: 1, e: [rawEntry('a', { q: 1 })] }],
  ['a field of another type', { v: 1, e: [rawEntry('a', { l: b('x') })] }],
  ['mode with file type bits', { v: 1, e: [rawEntry('a', { m: 0o100644 })] }],
  ['a negative uid', { v: 1, e: [rawEntry('a', { u: -1 })] }],
  ['a gid over 32 bits', { v: 1, e: [rawEntry('a', { g: 2 ** 32 })] }],
  ['a fractional mtime', { v: 1, e: [rawEntry('a', { s: 1.5 })] }],
  ['nanoseconds of a full second', { v: 1, e: [rawEntry('a', { ns: 1_000_000_000 })] }],
  ['inline content of another size', { v: 1, e: [rawEntry('a', { z: 5 })] }],
  ['both inline and chunks', { v: 1, e: [rawEntry('a', { c: [[1, rawCid]] })] }],
  ['neither inline nor chunks', { v: 1, e: [rawEntry('a', { i: undefined })] }],
  ['chunks that do not add up', { v: 1, e: [rawEntry('a', { i: undefined, z: 10, c: [[4, rawCid], [5]] })] }],
  ['a zero-length chunk', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[0], [1, rawCid]] })] }],
  ['a packed run past the largest block', { v: 1, e: [rawEntry('a', { i: undefined, z: 10, c: [[10, rawCid, 4 * 1024 * 1024 - 9]] })] }],
  ['a packed run at a negative offset', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[1, rawCid, -1]] })] }],
  ['a packed run at a fractional offset', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[1, rawCid, 0.5]] })] }],
  ['a packed hole', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[1, null, 0]] })] }],
  ['a segment of four fields', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[1, rawCid, 0, 0]] })] }],
  ['a chunk that is not a CID', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[1, b('not a cid')]] })] }],
  ['a CIDv0 chunk', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[1, CID.createV0(Digest.create(0x12, new Uint8Array(32)))]] })] }],
  ['a chunk hashed with identity', { v: 1, e: [rawEntry('a', { i: undefined, z: 1, c: [[1, CID.createV1(RAW, Digest.create(0x00, b('a')))]] })] }],
  ['a directory without subtree', { v: 1, e: [rawEntry('a', { t: 'dir', z: undefined, i: undefined })] }],
  ['an empty symlink target', { v: 1, e: [rawEntry('a', { t: 'symlink', z: undefined, i: undefined, l: new Uint8Array() })] }],
  ['a NUL in a symlink target', { v: 1, e: [rawEntry('a', { t: 'symlink', z: undefined, i: undefined, l: b('a\0b') })] }],
  ['a hardlink out of the tree', { v: 1, e: [rawEntry('a', { t: 'hardlink', z: undefined, i: undefined, l: b('../etc/passwd') })] }],
  ['an absolute hardlink', { v: 1, e: [rawEntry('a', { t: 'hardlink', z: undefined, i: undefined, l: b('/etc/passwd') })] }],
  ['a hardlink with an empty component', { v: 1, e: [rawEntry('a', { t: 'hardlink', z: undefined, i: undefined, l: b('a//b') })] }],
  ['device numbers over 32 bits', { v: 1, e: [rawEntry('a', { t: 'char', z: undefined, i: undefined, r: [2 ** 32, 0] })] }],
  ['one device number', { v: 1, e: [rawEntry('a', { t: 'block', z: undefined, i: undefined, r: [8] })] }],
  ['unsorted xattrs', { v: 1, e: [rawEntry('a', { x: [['user.b', b('1')], ['user.a', b('2')]] })] }],
  ['repeated xattrs', { v: 1, e: [rawEntry('a', { x: [['user.a', b('1')], ['user.a', b('2')]] })] }],
  ['an xattr value over 64 KiB', { v: 1, e: [rawEntry('a', { x: [['user.a', new Uint8Array(65537)]] })] }],
  ['format version 2', { v: 2, e: [] }],
  ['no entry list', { v: 1 }],
  ['entries that are not maps', { v: 1, e: [[1, 2]] }],
  ['a list at the top', [1, { v: 1, e: [] }]],
  ['a bare CID', rawCid],
  ['an extra field beside the entry list', { v: 1, e: [], w: 1 }],
  ['an mtime too large for an integer', { v: 1, e: [rawEntry('a', { s: 1e300 })] }]
]

for (const [label, value] of hostileTrees) {
  test(`decodeTree rejects ${label} with EBADTREE`, () => {
    assert.throws(() => decodeTree(dagCbor.encode(value)), (err: unknown) => hasCode(err, TREE_CODES))
  })
}

test('decodeTree rejects blocks over 32 MiB before decoding them', () => {
  const t0 = performance.now()
  assert.throws(() => decodeTree(new Uint8Array(MAX_TREE_BLOCK + 1)), (err: unknown) => hasCode(err, TREE_CODES))
  assert.ok(performance.now() - t0 < SLOW_MS)
})

test('decodeTree and decodeVersion reject deep nesting and huge declared lengths with their own codes', () => {
  const deep = new Uint8Array(60_000).fill(0x81)
  deep[deep.length - 1] = 0
  const inputs = [deep, ...['9bffffffffffffffff', 'bbffffffffffffffff', '5bffffffffffffffff', '7bffffffffffffffff', 'a26176016165ff', ''].map(h => new Uint8Array(Buffer.from(h, 'hex')))]
  for (const bytes of inputs) {
    assert.throws(() => decodeTree(bytes), (err: unknown) => hasCode(err, TREE_CODES))
    assert.throws(() => decodeVersion(bytes), (err: unknown) => hasCode(err, VERSION_CODES))
  }
})

function body (extra: Partial<VersionBody> = {}): VersionBody {
  return {
    image: 'debian12-hpc',
    number: 7,
    parents: [cidOf(b('p1'), DAG_CBOR), cidOf(b('p2'), DAG_CBOR)],
    tree: cidOf(b('tree'), DAG_CBOR),
    root: { mode: 0o755, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 5, xattrs: [['user.a', b('v')]] },
    created: '2026-11-23T10:00:00.000Z',
    author: AUTHOR,
    message: 'kernel 6.1.0-27, new ssh keys',
    stats: { files: 5328, dirs: 700, entries: 6800, bytes: 202_000_000, chunks: 6311, chunkBytes: 197_000_000 },
    ...extra
  }
}

test('a signed version round-trips and verifies', () => {
  const signed = signVersion(body(), privateKey)
  const bytes = encodeVersion(signed)
  const decoded = decodeVersion(bytes)
  assert.deepEqual(normalize(decoded.body), normalize(signed.body))
  assert.deepEqual(Buffer.from(decoded.signature), Buffer.from(signed.signature))
  assert.deepEqual(Buffer.from(encodeVersion(decoded)), Buffer.from(bytes))
  assert.deepEqual(Buffer.from(signingBytes(decoded.body)), Buffer.from(signingBytes(signed.body)))
})

test('a version signed by another key than its author does not verify', () => {
  const forged = signVersion(body(), stranger.privateKey)
  assert.throws(() => decodeVersion(encodeVersion(forged)), (err: unknown) => hasCode(err, ['EBADSIGNATURE']))
  const claimed = signVersion(body({ author: publicKeyToHex(stranger.publicKey) }), privateKey)
  assert.throws(() => decodeVersion(encodeVersion(claimed)), (err: unknown) => hasCode(err, ['EBADSIGNATURE']))
})

test('a version whose body changed after signing does not verify', () => {
  const signed = signVersion(body(), privateKey)
  for (const changed of [body({ number: 8 }), body({ message: 'other' }), body({ parents: [] }), body({ tree: cidOf(b('x'), DAG_CBOR) }),
    body({ root: { ...body().root, mode: 0o4755 } }), body({ stats: { ...body().stats, bytes: 1 } })]) {
    assert.throws(() => decodeVersion(encodeVersion({ body: changed, signature: signed.signature })), (err: unknown) => hasCode(err, ['EBADSIGNATURE']))
  }
})

test('decodeVersion rejects malformed bodies with EBADVERSION', () => {
  const sig = new Uint8Array(64)
  const raw = (dagCbor.decode(encodeVersion(signVersion(body(), privateKey))) as { v: Record<string, unknown> }).v
  const cases: Array<Record<string, unknown>> = [
    { ...raw, image: '../etc' }, { ...raw, image: '' }, { ...raw, number: 0 }, { ...raw, number: -1 }, { ...raw, number: 1.5 },
    { ...raw, parents: [b('x')] }, { ...raw, parents: Array.from({ length: 17 }, () => rawCid) }, { ...raw, tree: 'bafy' },
    { ...raw, root: null }, { ...raw, root: { ...(raw.root as object), m: 0o10000 } }, { ...raw, root: { ...(raw.root as object), x: [['a']] } },
    { ...raw, created: 'yesterday' }, { ...raw, author: 'AB'.repeat(32) }, { ...raw, author: AUTHOR.slice(2) },
    { ...raw, message: 'm'.repeat(4097) }, { ...raw, stats: { ...(raw.stats as object), chunks: -1 } }, { ...raw, stats: undefined }
  ]
  for (const v of cases) {
    const clean = Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined))
    assert.throws(() => decodeVersion(dagCbor.encode({ v: clean, s: sig })), (err: unknown) => hasCode(err, ['EBADVERSION']), JSON.stringify(normalize(clean)))
  }
  assert.throws(() => decodeVersion(dagCbor.encode({ v: raw, s: new Uint8Array(63) })), (err: unknown) => hasCode(err, ['EBADVERSION']))
  assert.throws(() => decodeVersion(dagCbor.encode({ v: raw })), (err: unknown) => hasCode(err, ['EBADVERSION']))
  assert.throws(() => decodeVersion(new Uint8Array(MAX_VERSION_BLOCK + 1)), (err: unknown) => hasCode(err, ['EBADVERSION']))
})

// ---------------------------------------------------------------------------------------------
// Generators

const safeNameArb = fc.uint8Array({ minLength: 1, maxLength: 24 })
  .map(u => u.map(x => (x === 0 || x === 0x2f) ? 0x5f : x))
  .filter(isSafeName)
const cidArb = fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.constantFrom(RAW, DAG_CBOR))
  .map(([d, codec]) => CID.createV1(codec, Digest.create(0x12, d)))
const xattrsArb = fc.uniqueArray(
  fc.tuple(fc.string({ minLength: 1, maxLength: 30 }).filter(s => !s.includes('\0')), fc.uint8Array({ maxLength: 40 })),
  { maxLength: 3, selector: ([k]) => k }
).map(xs => xs.sort((x, y) => x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
const segmentsArb = fc.array(fc.tuple(fc.integer({ min: 1, max: 1 << 20 }), fc.option(cidArb, { nil: undefined }), fc.option(fc.integer({ min: 0, max: 3 << 20 }), { nil: undefined })), { maxLength: 6 })
  .map(ss => ss.map(([length, cid, offset]): Segment => cid === undefined ? { length } : offset === undefined ? { length, cid } : { length, cid, offset }))
const relPathArb = fc.array(safeNameArb, { minLength: 1, maxLength: 4 }).map(parts => {
  const out: number[] = []
  parts.forEach((p, i) => { if (i > 0) out.push(0x2f); out.push(...p) })
  return new Uint8Array(out)
}).filter(isSafeRelativePath)

const entryArb: fc.Arbitrary<TreeEntry> = fc.record({
  name: safeNameArb,
  type: fc.constantFrom(...ENTRY_TYPES),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.integer({ min: 0, max: 0xffffffff }),
  gid: fc.integer({ min: 0, max: 0xffffffff }),
  mtimeSec: fc.maxSafeInteger(),
  mtimeNsec: fc.integer({ min: 0, max: 999_999_999 }),
  xattrs: xattrsArb,
  inline: fc.uint8Array({ maxLength: 64 }),
  useInline: fc.boolean(),
  segments: segmentsArb,
  link: fc.uint8Array({ minLength: 1, maxLength: 60 }).filter(u => !u.includes(0)),
  rel: relPathArb,
  major: fc.integer({ min: 0, max: 0xffffffff }),
  minor: fc.integer({ min: 0, max: 0xffffffff }),
  tree: cidArb
}).map(r => {
  const e: TreeEntry = { name: r.name, type: r.type, mode: r.mode, uid: r.uid, gid: r.gid, mtimeSec: r.mtimeSec, mtimeNsec: r.mtimeNsec, xattrs: r.xattrs }
  switch (r.type) {
    case 'file':
      if (r.useInline) { e.inline = r.inline; e.size = r.inline.length } else { e.segments = r.segments; e.size = r.segments.reduce((n, s) => n + s.length, 0) }
      break
    case 'dir': e.tree = r.tree; break
    case 'symlink': e.link = r.link; break
    case 'hardlink': e.link = r.rel; break
    case 'char': case 'block': e.major = r.major; e.minor = r.minor; break
    default: break
  }
  return e
})
const treeArb = fc.uniqueArray(entryArb, { maxLength: 12, selector: e => Buffer.from(e.name).toString('hex') })

/** dag-cbor data model values (no undefined, NaN or infinities, which dag-cbor refuses). */
const { value: cborArb } = fc.letrec<{ value: unknown }>(tie => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null), fc.boolean(), fc.integer(), fc.maxSafeInteger(), fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.string({ maxLength: 20 }), fc.uint8Array({ maxLength: 40 }), cidArb,
    fc.constantFrom('file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'socket', 1, 0, -1, 0o7777, 0xffffffff),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('v', 'e', 'n', 't', 'm', 'u', 'g', 's', 'ns', 'x', 'z', 'c', 'i', 'l', 'r', 'd')), tie('value'), { maxKeys: 5 })
  )
}))

/** Byte-level damage: flips, overwrites, insertions, deletions, truncation. */
type Mutation = { k: 'flip', at: number, bit: number } | { k: 'set', at: number, to: number } | { k: 'insert', at: number, bytes: Uint8Array } | { k: 'delete', at: number, n: number } | { k: 'cut', at: number }
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant('set' as const), at: fc.nat(), to: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ k: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 9 }) }),
  fc.record({ k: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 9 }) }),
  fc.record({ k: fc.constant('cut' as const), at: fc.nat() })
)

function mutate (input: Uint8Array, mutations: Mutation[]): Uint8Array {
  let out = Buffer.from(input)
  for (const m of mutations) {
    if (out.length === 0) break
    const at = m.at % out.length
    if (m.k === 'flip') out[at] ^= 1 << m.bit
    else if (m.k === 'set') out[at] = m.to
    else if (m.k === 'insert') out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)])
    else if (m.k === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(at + m.n)])
    else out = out.subarray(0, at)
  }
  return new Uint8Array(out)
}

// ---------------------------------------------------------------------------------------------
// Properties

test('property: any valid tree round-trips exactly and re-encodes to the same bytes', () => {
  fc.assert(fc.property(treeArb, entries => {
    const block = encodeTree(entries)
    const decoded = decodeTree(block)
    const sorted = [...entries].sort((x, y) => compareNames(x.name, y.name))
    assert.deepEqual(normalize(decoded), normalize(sorted))
    assert.deepEqual(Buffer.from(encodeTree(decoded)), Buffer.from(block))
  }), { numRuns: 300 })
})

/** A copy of an entry with fresh arrays (equal bytes, other objects). */
function cloneEntry (e: TreeEntry): TreeEntry {
  const out: TreeEntry = { ...e, name: new Uint8Array(e.name), xattrs: e.xattrs.map(([k, v]) => [k, new Uint8Array(v)]) }
  if (e.inline !== undefined) out.inline = new Uint8Array(e.inline)
  if (e.link !== undefined) out.link = new Uint8Array(e.link)
  if (e.segments !== undefined) out.segments = e.segments.map(s => s.cid === undefined ? { length: s.length } : { ...s, cid: CID.decode(s.cid.bytes) })
  if (e.tree !== undefined) out.tree = CID.decode(e.tree.bytes)
  return out
}

const ENTRY_FIELDS = ['name', 'type', 'mode', 'uid', 'gid', 'mtimeSec', 'mtimeNsec', 'xattrs', 'size', 'segments', 'inline', 'link', 'major', 'minor', 'tree'] as const

test('property: entriesEqual says equal exactly when the canonical encodings are equal', () => {
  fc.assert(fc.property(entryArb, entryArb, fc.subarray([...ENTRY_FIELDS]), (a, other, fields) => {
    // b: a copy of a with some fields taken from another entry (or removed where it has none).
    const copy = cloneEntry(a) as unknown as Record<string, unknown>
    for (const f of fields) {
      const v = (other as unknown as Record<string, unknown>)[f]
      if (v === undefined) delete copy[f]
      else copy[f] = v
    }
    const bEntry = copy as unknown as TreeEntry
    const same = Buffer.compare(writeTreeEntry(a), writeTreeEntry(bEntry)) === 0
    assert.equal(entriesEqual(a, bEntry), same)
    assert.equal(entriesEqual(bEntry, a), same)
    assert.ok(entriesEqual(a, cloneEntry(a)))
  }), { numRuns: 2000 })
})

const versionBodyArb: fc.Arbitrary<VersionBody> = fc.record({
  image: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,20}$/),
  number: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  parents: fc.array(cidArb, { maxLength: 3 }),
  tree: cidArb,
  root: fc.record({ mode: fc.integer({ min: 0, max: 0o7777 }), uid: fc.nat(), gid: fc.nat(), mtimeSec: fc.maxSafeInteger(), mtimeNsec: fc.integer({ min: 0, max: 999_999_999 }), xattrs: xattrsArb }),
  created: fc.date({ min: new Date(0), max: new Date(4_102_444_800_000), noInvalidDate: true }).map(d => d.toISOString()),
  author: fc.constant(AUTHOR),
  message: fc.string({ maxLength: 100 }),
  stats: fc.record({ files: fc.nat(), dirs: fc.nat(), entries: fc.nat(), bytes: fc.maxSafeNat(), chunks: fc.nat(), chunkBytes: fc.maxSafeNat() })
})

test('property: any signed version round-trips and verifies', () => {
  fc.assert(fc.property(versionBodyArb, vb => {
    const signed = signVersion(vb, privateKey)
    const bytes = encodeVersion(signed)
    const decoded = decodeVersion(bytes)
    assert.deepEqual(normalize(decoded.body), normalize(vb))
    assert.deepEqual(Buffer.from(encodeVersion(decoded)), Buffer.from(bytes))
  }), { numRuns: 100 })
})

test('fuzz: random bytes decode to a valid value or fail with the decoder\'s own code', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), bytes => {
    const tree = attempt(decodeTree, bytes, TREE_CODES)
    if (tree !== null) assertValidTree(tree)
    attempt(decodeVersion, bytes, VERSION_CODES)
  }), { numRuns: 3000 })
})

test('fuzz: random dag-cbor values, alone or in place of tree fields, decode to a valid tree or EBADTREE', () => {
  fc.assert(fc.property(cborArb, value => {
    const bytes = dagCbor.encode(value)
    const tree = attempt(decodeTree, bytes, TREE_CODES)
    if (tree !== null) assertValidTree(tree)
    attempt(decodeVersion, bytes, VERSION_CODES)
  }), { numRuns: 1000 })
  // Valid trees with one field of one entry (or of the block) replaced, added or removed.
  fc.assert(fc.property(treeArb.filter(t => t.length > 0), fc.nat(), fc.constantFrom('v', 'e', 'n', 't', 'm', 'u', 'g', 's', 'ns', 'x', 'z', 'c', 'i', 'l', 'r', 'd', 'q'), fc.option(cborArb), fc.boolean(),
    (entries, which, key, value, top) => {
      const raw = dagCbor.decode(encodeTree(entries)) as { v: unknown, e: Array<Record<string, unknown>> } & Record<string, unknown>
      const target: Record<string, unknown> = top ? raw : raw.e[which % raw.e.length]
      if (value === null) delete target[key]
      else target[key] = value
      const tree = attempt(decodeTree, dagCbor.encode(raw), TREE_CODES)
      if (tree !== null) assertValidTree(tree)
    }), { numRuns: 1000 })
})

test('fuzz: damaged tree blocks decode to a valid tree or EBADTREE', () => {
  fc.assert(fc.property(treeArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (entries, mutations) => {
    const tree = attempt(decodeTree, mutate(encodeTree(entries), mutations), TREE_CODES)
    if (tree !== null) assertValidTree(tree)
  }), { numRuns: 1500 })
  // The fixed tree with every entry type, damaged at every byte.
  const block = encodeTree(ALL_TYPES)
  for (let at = 0; at < block.length; at++) {
    for (const mutation of [{ k: 'flip', at, bit: 0 }, { k: 'flip', at, bit: 7 }, { k: 'set', at, to: 0x2f }, { k: 'cut', at }, { k: 'delete', at, n: 1 }] as Mutation[]) {
      const tree = attempt(decodeTree, mutate(block, [mutation]), TREE_CODES)
      if (tree !== null) assertValidTree(tree)
    }
  }
})

test('fuzz: a damaged signed version block never verifies', () => {
  const isUnchanged = (damaged: Uint8Array, original: Uint8Array): boolean => Buffer.compare(damaged, original) === 0
  fc.assert(fc.property(versionBodyArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (vb, mutations) => {
    const original = encodeVersion(signVersion(vb, privateKey))
    const damaged = mutate(original, mutations)
    const decoded = attempt(decodeVersion, damaged, VERSION_CODES)
    if (decoded !== null) assert.ok(isUnchanged(damaged, original), `a damaged version verified: ${Buffer.from(damaged).toString('hex')}`)
  }), { numRuns: 1500 })
  // One fixed version, damaged at every byte in several ways.
  const original = encodeVersion(signVersion(body(), privateKey))
  for (let at = 0; at < original.length; at++) {
    for (const mutation of [{ k: 'flip', at, bit: 0 }, { k: 'flip', at, bit: 3 }, { k: 'flip', at, bit: 7 }, { k: 'set', at, to: 0 }, { k: 'cut', at }, { k: 'delete', at, n: 1 }, { k: 'insert', at, bytes: new Uint8Array([0]) }] as Mutation[]) {
      const damaged = mutate(original, [mutation])
      const decoded = attempt(decodeVersion, damaged, VERSION_CODES)
      if (decoded !== null) assert.ok(isUnchanged(damaged, original), `a damaged version verified (${JSON.stringify(mutation)})`)
    }
  }
})

test('fuzz: a signed version with any field replaced by another value never verifies', () => {
  const fields = ['image', 'number', 'parents', 'tree', 'root', 'created', 'author', 'message', 'stats', 'root.m', 'root.u', 'root.g', 'root.s', 'root.ns', 'root.x']
  fc.assert(fc.property(versionBodyArb, fc.constantFrom(...fields), cborArb, (vb, field, value) => {
    const raw = dagCbor.decode(encodeVersion(signVersion(vb, privateKey))) as { v: Record<string, unknown>, s: Uint8Array }
    const inRoot = field.startsWith('root.')
    const holder = inRoot ? raw.v.root as Record<string, unknown> : raw.v
    const key = inRoot ? field.slice(5) : field
    if (Buffer.compare(dagCbor.encode(holder[key] ?? null), dagCbor.encode(value)) === 0) return
    holder[key] = value
    const decoded = attempt(decodeVersion, dagCbor.encode(raw), VERSION_CODES)
    assert.equal(decoded, null, `replacing ${field} verified`)
  }), { numRuns: 1500 })
})

test('no single decode took more than a second', () => {
  assert.ok(slowest < SLOW_MS, `slowest decode: ${slowest.toFixed(1)} ms`)
})

// The signature covers a re-encoding of the decoded body, so a block is accepted only when it is
// that canonical encoding: otherwise one signed body could travel under many CIDs.
test('a re-encoded signed version (other bytes, same body) does not verify', () => {
  const original = encodeVersion(signVersion(body(), privateKey))
  const raw = dagCbor.decode(original) as { v: Record<string, unknown>, s: Uint8Array }
  const hex = Buffer.from(original).toString('hex')
  const numberKey = '66' + Buffer.from('number').toString('hex')
  const variants: Array<[string, Uint8Array]> = [
    ['an extra body field', dagCbor.encode({ ...raw, v: { ...raw.v, extra: 1 } })],
    ['an extra top field', dagCbor.encode({ ...raw, x: 1 })],
    ['an extra root field', dagCbor.encode({ ...raw, v: { ...raw.v, root: { ...(raw.v.root as object), q: 1 } } })],
    ['map keys out of order', new Uint8Array(Buffer.concat([Buffer.from([0xa2]), dagCbor.encode('v'), dagCbor.encode(raw.v), dagCbor.encode('s'), dagCbor.encode(raw.s)]))],
    ['an integer as a float', new Uint8Array(Buffer.from(hex.replace(numberKey + '07', numberKey + 'fb401c000000000000'), 'hex'))]
  ]
  for (const [label, bytes] of variants) {
    assert.notDeepEqual(Buffer.from(bytes), Buffer.from(original))
    assert.throws(() => decodeVersion(bytes), (err: unknown) => hasCode(err, VERSION_CODES), label)
  }
})

test('a tree block with an unknown top-level field is rejected', () => {
  assert.throws(() => decodeTree(dagCbor.encode({ v: 1, e: [], extra: 1 })), (err: unknown) => hasCode(err, TREE_CODES))
})

test('the direct tree encoder writes the bytes of the general DAG-CBOR encoder', () => {
  const cases: TreeEntry[][] = [
    [],
    ALL_TYPES,
    // heads of every width: counts and lengths of 23, 24, 255, 256 and 65,536; integers up to 2^53 - 1
    [entry('n'.repeat(23), 'file', { size: 24, inline: new Uint8Array(24) })],
    [entry('n'.repeat(255), 'file', { size: 256, inline: new Uint8Array(256), uid: 255, gid: 256 })],
    [entry('wide', 'file', { size: 65_536, inline: new Uint8Array(65_536), mtimeSec: 2 ** 32, mtimeNsec: 65_535 })],
    [entry('far', 'file', { size: Number.MAX_SAFE_INTEGER, segments: [{ length: Number.MAX_SAFE_INTEGER }], mtimeSec: -(2 ** 40) })],
    [entry('many', 'file', { size: 300, segments: Array.from({ length: 300 }, (_, i) => i % 2 === 0 ? { length: 1 } : { length: 1, cid: cidOf(b(`s${i}`)) }) })],
    [entry('xattrs', 'file', { size: 0, inline: new Uint8Array(), xattrs: [['user.\u00e9t\u00e9', b('v')], ['user.\u{1f600}', new Uint8Array(30)]] })],
    Array.from({ length: 300 }, (_, i) => entry(`e${String(i).padStart(3, '0')}`, 'fifo', { mode: i }))
  ]
  for (const entries of cases) {
    assert.deepEqual(Buffer.from(encodeTree(entries)), Buffer.from(encodeTreeGeneric(entries)), `${entries.length} entries`)
  }
  fc.assert(fc.property(treeArb, entries => {
    assert.deepEqual(Buffer.from(encodeTree(entries)), Buffer.from(encodeTreeGeneric(entries)))
  }), { numRuns: 500 })
})
