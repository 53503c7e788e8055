/**
 * Version blocks: one immutable, signed snapshot of an image. The block is dag-cbor
 * {v: body, s: signature}; the signature (ed25519) covers the dag-cbor encoding of the body.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { createPublicKey, verify as edVerify, sign as edSign, type KeyObject } from 'node:crypto'
import { ImgmeshError } from '../node/errors.ts'

export interface VersionStats {
  files: number
  dirs: number
  entries: number
  /** Apparent size of all regular file content. */
  bytes: number
  /** Unique content chunks and their bytes. */
  chunks: number
  chunkBytes: number
}

/** Attributes of the image's top directory (its entries live in the tree block). */
export interface RootAttributes {
  mode: number
  uid: number
  gid: number
  mtimeSec: number
  mtimeNsec: number
  xattrs: Array<[string, Uint8Array]>
}

export interface VersionBody {
  image: string
  number: number
  parents: CID[]
  tree: CID
  root: RootAttributes
  /** ISO 8601 time of capture. */
  created: string
  /** Publisher's ed25519 public key, 64 hex characters. */
  author: string
  message: string
  stats: VersionStats
  /**
   * 'tree' (absent) for a filesystem tree; 'block' for a raw disk or partition image: the tree
   * then holds one file entry, `disk`, whose content is the device's bytes (zero ranges as holes).
   */
  kind?: 'tree' | 'block'
}

export const BLOCK_IMAGE_ENTRY = 'disk'

export interface SignedVersion { body: VersionBody, signature: Uint8Array }

export const MAX_VERSION_BLOCK = 64 * 1024
const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/

export function isValidImageName (name: string): boolean {
  return IMAGE_NAME.test(name)
}

function fail (why: string): never {
  throw new ImgmeshError('EBADVERSION', `invalid version block: ${why}`)
}

function bodyToRaw (b: VersionBody): Record<string, unknown> {
  const root = { m: b.root.mode, u: b.root.uid, g: b.root.gid, s: b.root.mtimeSec, ns: b.root.mtimeNsec, x: b.root.xattrs.map(([k, v]) => [k, v]) }
  const raw: Record<string, unknown> = { image: b.image, number: b.number, parents: b.parents, tree: b.tree, root, created: b.created, author: b.author, message: b.message, stats: { ...b.stats } }
  if (b.kind === 'block') raw.kind = 'block'
  return raw
}

export function signingBytes (body: VersionBody): Uint8Array {
  return dagCbor.encode(bodyToRaw(body))
}

export function signVersion (body: VersionBody, privateKey: KeyObject): SignedVersion {
  return { body, signature: new Uint8Array(edSign(null, signingBytes(body), privateKey)) }
}

export function encodeVersion (v: SignedVersion): Uint8Array {
  return dagCbor.encode({ v: bodyToRaw(v.body), s: v.signature })
}

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

export function publicKeyFromHex (hex: string): KeyObject {
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new ImgmeshError('EBADSIGNATURE', `not an ed25519 public key: ${hex}`)
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(hex, 'hex')]), format: 'der', type: 'spki' })
}

export function publicKeyToHex (key: KeyObject): string {
  const der = key.export({ format: 'der', type: 'spki' })
  return der.subarray(der.length - 32).toString('hex')
}

function isUint (v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER
}

function decodeRoot (raw: unknown): RootAttributes {
  if (typeof raw !== 'object' || raw === null) fail('missing root attributes')
  const r = raw as Record<string, unknown>
  if (!isUint(r.m) || r.m > 0o7777 || !isUint(r.u) || !isUint(r.g) || typeof r.s !== 'number' || !Number.isInteger(r.s) || !isUint(r.ns) || r.ns > 999_999_999) fail('bad root attributes')
  if (!Array.isArray(r.x)) fail('bad root xattrs')
  const xattrs = (r.x as unknown[]).map((p): [string, Uint8Array] => {
    if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== 'string' || !(p[1] instanceof Uint8Array)) fail('bad root xattr')
    return [p[0], p[1]]
  })
  return { mode: r.m, uid: r.u, gid: r.g, mtimeSec: r.s, mtimeNsec: r.ns, xattrs }
}

/** Decodes a version block and checks its signature against its author key. Trust is checked by the caller. */
export function decodeVersion (bytes: Uint8Array): SignedVersion {
  if (bytes.length > MAX_VERSION_BLOCK) fail('block too large')
  let raw: unknown
  try { raw = dagCbor.decode(bytes) } catch (err) { fail(`not dag-cbor (${(err as Error).message})`) }
  if (typeof raw !== 'object' || raw === null) fail('not a map')
  const r = raw as Record<string, unknown>
  if (!(r.s instanceof Uint8Array) || r.s.length !== 64) fail('missing or malformed signature')
  const b = r.v as Record<string, unknown> | undefined
  if (typeof b !== 'object' || b === null) fail('missing body')
  if (typeof b.image !== 'string' || !isValidImageName(b.image)) fail('bad image name')
  if (!isUint(b.number) || b.number < 1) fail('bad version number')
  if (!Array.isArray(b.parents) || b.parents.length > 16) fail('bad parents')
  const parents = (b.parents as unknown[]).map(p => { const c = CID.asCID(p); if (c === null) fail('parent is not a CID'); return c })
  const tree = CID.asCID(b.tree)
  if (tree === null) fail('tree is not a CID')
  const root = decodeRoot(b.root)
  if (typeof b.created !== 'string' || Number.isNaN(Date.parse(b.created))) fail('bad creation time')
  if (typeof b.author !== 'string' || !/^[0-9a-f]{64}$/.test(b.author)) fail('bad author key')
  if (typeof b.message !== 'string' || b.message.length > 4096) fail('bad message')
  const s = b.stats as Record<string, unknown> | undefined
  if (typeof s !== 'object' || s === null) fail('missing stats')
  for (const k of ['files', 'dirs', 'entries', 'bytes', 'chunks', 'chunkBytes']) if (!isUint(s[k])) fail(`bad stats.${k}`)
  if (b.kind !== undefined && b.kind !== 'block' && b.kind !== 'tree') fail('unknown kind')
  const body: VersionBody = {
    image: b.image,
    number: b.number,
    parents,
    tree,
    root,
    created: b.created,
    author: b.author,
    message: b.message,
    stats: { files: s.files as number, dirs: s.dirs as number, entries: s.entries as number, bytes: s.bytes as number, chunks: s.chunks as number, chunkBytes: s.chunkBytes as number }
  }
  if (b.kind === 'block') body.kind = 'block'
  // Only the canonical encoding is a version block: otherwise the same signed body could be
  // re-encoded (an extra field, keys out of order, an integer as a float) under another CID.
  if (Buffer.compare(encodeVersion({ body, signature: r.s }), bytes) !== 0) fail('not the canonical encoding of its content')
  const ok = edVerify(null, signingBytes(body), publicKeyFromHex(body.author), r.s)
  if (!ok) throw new ImgmeshError('EBADSIGNATURE', `version ${body.image}@${body.number} has a bad signature`)
  return { body, signature: r.s }
}
