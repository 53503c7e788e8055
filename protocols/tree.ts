/**
 * Tree blocks: one dag-cbor block per directory, entries sorted by name bytes, every attribute
 * a Linux tree has. Decoding validates everything, so a hostile block cannot name a path
 * outside the target (empty, `.`, `..`, `/` or NUL in a name) or smuggle malformed fields.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { ImgmeshError } from '../node/errors.ts'
import { writeTreeBlock } from './tree-cbor.ts'
import { MAX_BLOCK_SIZE } from './blocks/messages.ts'

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'socket'
export const ENTRY_TYPES: readonly EntryType[] = ['file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'socket']

/**
 * A run of file content: `cid` absent means a hole (zeros, kept sparse). With `offset`, the run
 * is `length` bytes of the block `cid` from `offset` on (small files packed into one chunk);
 * without it, it is the whole block.
 */
export interface Segment { length: number, cid?: CID, offset?: number }

export interface TreeEntry {
  name: Uint8Array
  type: EntryType
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number
  uid: number
  gid: number
  mtimeSec: number
  mtimeNsec: number
  /** Extended attributes sorted by name (security.capability, system.posix_acl_*, user.*...). */
  xattrs: Array<[string, Uint8Array]>
  /** file: byte size. */
  size?: number
  /** file: content segments (absent when inline). */
  segments?: Segment[]
  /** file: small content kept in the tree block itself. */
  inline?: Uint8Array
  /** symlink: target bytes; hardlink: path of the first link, relative to the image root. */
  link?: Uint8Array
  /** char/block device numbers. */
  major?: number
  minor?: number
  /** dir: CID of its tree block. */
  tree?: CID
}

export const TREE_FORMAT_VERSION = 1
/** Largest tree block accepted (a directory of ~100k entries). */
export const MAX_TREE_BLOCK = 32 * 1024 * 1024
const MAX_NAME = 255
const MAX_LINK = 4096
const MAX_XATTR_VALUE = 64 * 1024

const SLASH = 0x2f

function fail (why: string): never {
  throw new ImgmeshError('EBADTREE', `invalid tree block: ${why}`)
}

export function compareNames (a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b)
}

/** A single path component is safe when it is non-empty, not `.`/`..`, and has no `/` or NUL. */
export function isSafeName (name: Uint8Array): boolean {
  if (name.length === 0 || name.length > MAX_NAME) return false
  if (name.length === 1 && name[0] === 0x2e) return false
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return false
  for (const b of name) if (b === SLASH || b === 0) return false
  return true
}

/** A relative path (hardlink target): safe components joined by single slashes. */
export function isSafeRelativePath (path: Uint8Array): boolean {
  if (path.length === 0 || path.length > MAX_LINK) return false
  let start = 0
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === SLASH) {
      if (!isSafeName(path.subarray(start, i))) return false
      start = i + 1
    }
  }
  return true
}

/**
 * The content a segment names within its block: the whole block, or the packed run at its
 * offset. Null when the block does not have the bytes the tree says (a wrong block, or a
 * hostile tree).
 */
export function segmentContent (segment: Segment, block: Uint8Array): Uint8Array | null {
  if (segment.offset === undefined) return block.length === segment.length ? block : null
  const end = segment.offset + segment.length
  return end <= block.length ? block.subarray(segment.offset, end) : null
}

function encodeEntry (e: TreeEntry): Record<string, unknown> {
  const out: Record<string, unknown> = { n: e.name, t: e.type, m: e.mode, u: e.uid, g: e.gid, s: e.mtimeSec, ns: e.mtimeNsec }
  if (e.xattrs.length > 0) out.x = e.xattrs.map(([k, v]) => [k, v])
  if (e.size !== undefined) out.z = e.size
  if (e.segments !== undefined) out.c = e.segments.map(s => s.cid === undefined ? [s.length] : s.offset === undefined ? [s.length, s.cid] : [s.length, s.cid, s.offset])
  if (e.inline !== undefined) out.i = e.inline
  if (e.link !== undefined) out.l = e.link
  if (e.major !== undefined) out.r = [e.major, e.minor ?? 0]
  if (e.tree !== undefined) out.d = e.tree
  return out
}

export function encodeTree (entries: readonly TreeEntry[]): Uint8Array {
  const sorted = [...entries].sort((a, b) => compareNames(a.name, b.name))
  return writeTreeBlock(TREE_FORMAT_VERSION, sorted)
}

/** The tree block as the general DAG-CBOR encoder writes it (what writeTreeBlock must equal). */
export function encodeTreeGeneric (entries: readonly TreeEntry[]): Uint8Array {
  const sorted = [...entries].sort((a, b) => compareNames(a.name, b.name))
  return dagCbor.encode({ v: TREE_FORMAT_VERSION, e: sorted.map(encodeEntry) })
}

function isUint (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max
}

/** `what` names the field in the error message; a function is called only on error. */
type FieldName = string | (() => string)
const named = (what: FieldName): string => typeof what === 'string' ? what : what()

function asBytes (v: unknown, what: FieldName): Uint8Array {
  if (!(v instanceof Uint8Array)) fail(`${named(what)} must be bytes`)
  return v
}

function asCid (v: unknown, what: FieldName): CID {
  const cid = CID.asCID(v)
  if (cid === null) fail(`${named(what)} must be a CID`)
  if (cid.version !== 1 || cid.multihash.code !== 0x12) fail(`${named(what)} must be a CIDv1 sha2-256`)
  return cid
}

/** Fields every entry may have; each type adds its own below. */
const COMMON_FIELDS: ReadonlySet<string> = new Set(['n', 't', 'm', 'u', 'g', 's', 'ns', 'x'])
const NO_FIELDS: readonly string[] = []
const FILE_FIELDS: readonly string[] = ['z']
const INLINE_FILE_FIELDS: readonly string[] = ['z', 'i']
const CHUNKED_FILE_FIELDS: readonly string[] = ['z', 'c']
const DIR_FIELDS: readonly string[] = ['d']
const LINK_FIELDS: readonly string[] = ['l']
const DEVICE_FIELDS: readonly string[] = ['r']

function decodeEntry (raw: unknown, index: number): TreeEntry {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`entry ${index} is not a map`)
  const r = raw as Record<string, unknown>
  const name = asBytes(r.n, `entry ${index} name`)
  if (!isSafeName(name)) fail(`entry ${index} has an unsafe name ${JSON.stringify(Buffer.from(name).toString('latin1'))}`)
  // built only for an error message: a tree holds thousands of entries, and a deploy decodes
  // every one of them before its first piece moves
  const label = (): string => `entry ${JSON.stringify(Buffer.from(name).toString('latin1'))}`
  const type = r.t
  if (typeof type !== 'string' || !(ENTRY_TYPES as readonly string[]).includes(type)) fail(`${label()} has unknown type`)
  if (!isUint(r.m, 0o7777)) fail(`${label()} has a bad mode`)
  if (!isUint(r.u, 0xffffffff) || !isUint(r.g, 0xffffffff)) fail(`${label()} has a bad owner`)
  if (typeof r.s !== 'number' || !Number.isInteger(r.s)) fail(`${label()} has a bad mtime`)
  if (!isUint(r.ns, 999_999_999)) fail(`${label()} has a bad mtime nsec`)
  const entry: TreeEntry = { name, type: type as EntryType, mode: r.m, uid: r.u, gid: r.g, mtimeSec: r.s, mtimeNsec: r.ns, xattrs: [] }
  if (r.x !== undefined) {
    if (!Array.isArray(r.x)) fail(`${label()} xattrs must be a list`)
    let prev = ''
    for (const pair of r.x as unknown[]) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string') fail(`${label()} has a bad xattr`)
      const key = pair[0]
      if (key.length === 0 || key.length > 255 || key.includes('\0') || key <= prev) fail(`${label()} has a bad or unsorted xattr name`)
      const value = asBytes(pair[1], () => `${label()} xattr`)
      if (value.length > MAX_XATTR_VALUE) fail(`${label()} xattr too large`)
      entry.xattrs.push([key, value])
      prev = key
    }
  }
  let extra: readonly string[] = NO_FIELDS
  switch (entry.type) {
    case 'file': {
      if (!isUint(r.z)) fail(`${label()} has a bad size`)
      entry.size = r.z
      extra = FILE_FIELDS
      if (r.i !== undefined) {
        entry.inline = asBytes(r.i, () => `${label()} inline content`)
        if (entry.inline.length !== entry.size) fail(`${label()} inline content does not match its size`)
        if (r.c !== undefined) fail(`${label()} has both inline and chunked content`)
        extra = INLINE_FILE_FIELDS
      } else {
        if (!Array.isArray(r.c)) fail(`${label()} has no content list`)
        let total = 0
        entry.segments = (r.c as unknown[]).map((seg, i) => {
          if (!Array.isArray(seg) || seg.length < 1 || seg.length > 3 || !isUint(seg[0]) || seg[0] === 0) fail(`${label()} segment ${i} is malformed`)
          total += seg[0]
          if (seg.length === 1) return { length: seg[0] }
          const cid = asCid(seg[1], () => `${label()} segment ${i}`)
          if (seg.length === 2) return { length: seg[0], cid }
          if (!isUint(seg[2]) || seg[2] + seg[0] > MAX_BLOCK_SIZE) fail(`${label()} segment ${i} lies outside any block`)
          return { length: seg[0], cid, offset: seg[2] }
        })
        if (total !== entry.size) fail(`${label()} segments do not add up to its size`)
        extra = CHUNKED_FILE_FIELDS
      }
      break
    }
    case 'dir':
      entry.tree = asCid(r.d, () => `${label()} subtree`)
      extra = DIR_FIELDS
      break
    case 'symlink':
      entry.link = asBytes(r.l, () => `${label()} symlink target`)
      if (entry.link.length === 0 || entry.link.length > MAX_LINK || entry.link.includes(0)) fail(`${label()} has a bad symlink target`)
      extra = LINK_FIELDS
      break
    case 'hardlink':
      entry.link = asBytes(r.l, () => `${label()} hardlink path`)
      if (!isSafeRelativePath(entry.link)) fail(`${label()} has an unsafe hardlink path`)
      extra = LINK_FIELDS
      break
    case 'char':
    case 'block':
      if (!Array.isArray(r.r) || r.r.length !== 2 || !isUint(r.r[0], 0xffffffff) || !isUint(r.r[1], 0xffffffff)) fail(`${label()} has bad device numbers`)
      entry.major = r.r[0]
      entry.minor = r.r[1]
      extra = DEVICE_FIELDS
      break
    case 'fifo':
    case 'socket':
      break
  }
  for (const key of Object.keys(r)) if (!COMMON_FIELDS.has(key) && !extra.includes(key)) fail(`${label()} has unexpected field ${key}`)
  return entry
}

/** Decodes and validates a tree block. Throws EBADTREE on anything malformed or unsafe. */
export function decodeTree (bytes: Uint8Array): TreeEntry[] {
  if (bytes.length > MAX_TREE_BLOCK) fail('block too large')
  let raw: unknown
  try {
    raw = dagCbor.decode(bytes)
  } catch (err) {
    fail(`not dag-cbor (${(err as Error).message})`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('not a map')
  const r = raw as Record<string, unknown>
  if (r.v !== TREE_FORMAT_VERSION) fail(`unsupported format version ${String(r.v)}`)
  if (!Array.isArray(r.e)) fail('no entry list')
  const entries = (r.e as unknown[]).map(decodeEntry)
  for (let i = 1; i < entries.length; i++) {
    if (compareNames(entries[i - 1].name, entries[i].name) >= 0) fail('entries are not sorted or repeat a name')
  }
  // Only the canonical encoding is a tree block (no unknown fields, no other byte forms of it).
  let canonical: Uint8Array
  try { canonical = writeTreeBlock(TREE_FORMAT_VERSION, entries) } catch (err) { fail(`entries cannot be encoded (${(err as Error).message})`) }
  if (Buffer.compare(canonical, bytes) !== 0) fail('not the canonical encoding of its entries')
  return entries
}

function optionalBytesEqual (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.length === b.length && Buffer.compare(a, b) === 0
}

function optionalCidEqual (a: CID | undefined, b: CID | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return optionalBytesEqual(a.bytes, b.bytes)
}

/**
 * True when two entries describe the same thing (for dirs: same subtree CID too): exactly when
 * their canonical encodings (writeTreeEntry) are equal, field by field as the encoder writes
 * them, without encoding either (a deploy compares every entry of every changed directory).
 */
export function entriesEqual (a: TreeEntry, b: TreeEntry): boolean {
  if (a.type !== b.type || a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid || a.mtimeSec !== b.mtimeSec || a.mtimeNsec !== b.mtimeNsec || a.size !== b.size) return false
  if (!optionalBytesEqual(a.name, b.name) || !optionalBytesEqual(a.inline, b.inline) || !optionalBytesEqual(a.link, b.link) || !optionalCidEqual(a.tree, b.tree)) return false
  // Device numbers are written only with a major, the minor as 0 when absent.
  if ((a.major === undefined) !== (b.major === undefined)) return false
  if (a.major !== undefined && (a.major !== b.major || (a.minor ?? 0) !== (b.minor ?? 0))) return false
  if (a.xattrs.length !== b.xattrs.length) return false
  for (let i = 0; i < a.xattrs.length; i++) {
    if (a.xattrs[i][0] !== b.xattrs[i][0] || !optionalBytesEqual(a.xattrs[i][1], b.xattrs[i][1])) return false
  }
  if (a.segments === undefined || b.segments === undefined) return a.segments === b.segments
  if (a.segments.length !== b.segments.length) return false
  for (let i = 0; i < a.segments.length; i++) {
    if (a.segments[i].length !== b.segments[i].length || a.segments[i].offset !== b.segments[i].offset || !optionalCidEqual(a.segments[i].cid, b.segments[i].cid)) return false
  }
  return true
}

/** True when two file entries have the same content (ignoring metadata). */
export function sameContent (a: TreeEntry, b: TreeEntry): boolean {
  if (a.type !== b.type) return false
  if (a.type === 'file') {
    if (a.size !== b.size) return false
    if (a.inline !== undefined || b.inline !== undefined) return a.inline !== undefined && b.inline !== undefined && Buffer.compare(a.inline, b.inline) === 0
    const sa = a.segments ?? []
    const sb = b.segments ?? []
    if (sa.length !== sb.length) return false
    for (let i = 0; i < sa.length; i++) {
      if (sa[i].length !== sb[i].length || sa[i].offset !== sb[i].offset) return false
      if ((sa[i].cid === undefined) !== (sb[i].cid === undefined)) return false
      if (sa[i].cid !== undefined && !sa[i].cid!.equals(sb[i].cid)) return false
    }
    return true
  }
  if (a.type === 'symlink' || a.type === 'hardlink') return Buffer.compare(a.link ?? new Uint8Array(), b.link ?? new Uint8Array()) === 0
  if (a.type === 'char' || a.type === 'block') return a.major === b.major && a.minor === b.minor
  if (a.type === 'dir') return a.tree !== undefined && b.tree !== undefined && a.tree.equals(b.tree)
  return true
}
