/**
 * Version announcements, gossiped on the swarm's announce topic (gossipsub, signed messages).
 *
 *     envelope = dag-cbor {b: body, s: signature (64 bytes), v?: version block bytes}
 *     body     = {t: "imgmesh-announce-1", image, number, cid, parents, newChunks, newBytes,
 *                 publisher, time}
 *
 * The publisher signs (ed25519) the canonical dag-cbor encoding of the body map, `t` included,
 * so an announcement signature can never be mistaken for the signature of anything else.
 * `publisher` is the signer's ed25519 public key (64 hex chars); `newChunks`/`newBytes` are
 * the delta summary (content chunks and bytes not in the parents); `time` is the publisher's
 * clock in ms. The optional `v` carries the signed version block itself (<= 64 KiB), so a
 * receiver can check and store it without fetching.
 *
 * `decodeAnnouncement` checks structure (EPROTOCOL); `verifyAnnouncement` checks trust and
 * signatures. Replays (a number not newer than the known head) are the caller's check.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { createPublicKey, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto'
import { ImgmeshError } from '../../node/errors.ts'
import { protocolError } from '../blocks/frame.ts'
import { versionCidOf } from '../heads/heads.ts'
import { MAX_VERSION_BLOCK, decodeVersion, isValidImageName, publicKeyFromHex, publicKeyToHex, type SignedVersion } from '../version.ts'

/** One topic for the whole swarm: the cluster key already separates swarms. */
export const ANNOUNCE_TOPIC = '/imgmesh/announce/1'
export const MAX_ANNOUNCEMENT = MAX_VERSION_BLOCK + 8 * 1024
const CONTEXT = 'imgmesh-announce-1'
const MAX_PARENTS = 16
const HEX_KEY = /^[0-9a-f]{64}$/

export interface AnnouncementBody {
  image: string
  number: number
  /** The version block's CID. */
  cid: CID
  parents: CID[]
  /** Content chunks and bytes of this version that are in none of its parents. */
  newChunks: number
  newBytes: number
  /** Signer's ed25519 public key, 64 hex characters. */
  publisher: string
  /** Publisher's clock, ms since the epoch. */
  time: number
}

export interface Announcement {
  body: AnnouncementBody
  signature: Uint8Array
  /** The signed version block, optional. */
  version?: Uint8Array
}

export interface VerifiedAnnouncement {
  announcement: Announcement
  /** The decoded version block when the announcement carried one. */
  version?: SignedVersion
}

function isUint (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

function bodyToRaw (b: AnnouncementBody): Record<string, unknown> {
  return {
    t: CONTEXT,
    image: b.image,
    number: b.number,
    cid: b.cid,
    parents: b.parents,
    newChunks: b.newChunks,
    newBytes: b.newBytes,
    publisher: b.publisher,
    time: b.time
  }
}

function checkBody (b: AnnouncementBody): void {
  if (typeof b.image !== 'string' || !isValidImageName(b.image)) throw protocolError('announcement: bad image name')
  if (!isUint(b.number) || b.number < 1) throw protocolError('announcement: bad version number')
  if (CID.asCID(b.cid) === null || b.cid.version !== 1) throw protocolError('announcement: cid is not a CIDv1')
  if (!Array.isArray(b.parents) || b.parents.length > MAX_PARENTS) throw protocolError('announcement: bad parents')
  for (const p of b.parents) if (CID.asCID(p) === null) throw protocolError('announcement: parent is not a CID')
  if (!isUint(b.newChunks) || !isUint(b.newBytes)) throw protocolError('announcement: bad delta summary')
  if (typeof b.publisher !== 'string' || !HEX_KEY.test(b.publisher)) throw protocolError('announcement: bad publisher key')
  if (!isUint(b.time)) throw protocolError('announcement: bad time')
}

/** The bytes the signature covers: canonical dag-cbor of the body with its context tag. */
export function announcementSigningBytes (body: AnnouncementBody): Uint8Array {
  return dagCbor.encode(bodyToRaw(body))
}

/** Signs a body with the publisher's ed25519 key (body.publisher is set from the key). */
export function signAnnouncement (body: Omit<AnnouncementBody, 'publisher'> & { publisher?: string }, privateKey: KeyObject, version?: Uint8Array): Announcement {
  const full: AnnouncementBody = { ...body, publisher: publicKeyToHex(createPublicKey(privateKey)) }
  checkBody(full)
  const signature = new Uint8Array(edSign(null, announcementSigningBytes(full), privateKey))
  return version === undefined ? { body: full, signature } : { body: full, signature, version }
}

export function encodeAnnouncement (a: Announcement): Uint8Array {
  checkBody(a.body)
  if (!(a.signature instanceof Uint8Array) || a.signature.length !== 64) throw protocolError('announcement: bad signature')
  if (a.version !== undefined && a.version.length > MAX_VERSION_BLOCK) throw protocolError('announcement: version block too large')
  const env: Record<string, unknown> = { b: bodyToRaw(a.body), s: a.signature }
  if (a.version !== undefined) env.v = a.version
  return dagCbor.encode(env)
}

/** Decodes an envelope and checks its structure (not its signature). Throws EPROTOCOL. */
export function decodeAnnouncement (bytes: Uint8Array): Announcement {
  if (bytes.length > MAX_ANNOUNCEMENT) throw protocolError(`announcement of ${bytes.length} bytes is too large`)
  let raw: unknown
  try {
    raw = dagCbor.decode(bytes)
  } catch (err) {
    throw protocolError(`announcement is not dag-cbor (${(err as Error).message})`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw protocolError('announcement is not a map')
  const env = raw as Record<string, unknown>
  for (const k of Object.keys(env)) if (k !== 'b' && k !== 's' && k !== 'v') throw protocolError(`announcement: unknown field ${k}`)
  if (!(env.s instanceof Uint8Array) || env.s.length !== 64) throw protocolError('announcement: missing or malformed signature')
  if (env.v !== undefined && !(env.v instanceof Uint8Array)) throw protocolError('announcement: version is not bytes')
  const b = env.b
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw protocolError('announcement: missing body')
  const r = b as Record<string, unknown>
  const fields = ['t', 'image', 'number', 'cid', 'parents', 'newChunks', 'newBytes', 'publisher', 'time']
  for (const k of Object.keys(r)) if (!fields.includes(k)) throw protocolError(`announcement: unknown body field ${k}`)
  if (r.t !== CONTEXT) throw protocolError('announcement: wrong context tag')
  const cid = CID.asCID(r.cid)
  if (cid === null) throw protocolError('announcement: cid is not a CID')
  if (!Array.isArray(r.parents)) throw protocolError('announcement: bad parents')
  const parents = (r.parents as unknown[]).map(p => {
    const c = CID.asCID(p)
    if (c === null) throw protocolError('announcement: parent is not a CID')
    return c
  })
  const body: AnnouncementBody = {
    image: r.image as string,
    number: r.number as number,
    cid,
    parents,
    newChunks: r.newChunks as number,
    newBytes: r.newBytes as number,
    publisher: r.publisher as string,
    time: r.time as number
  }
  checkBody(body)
  const a: Announcement = { body, signature: env.s }
  if (env.v !== undefined) {
    if (env.v.length > MAX_VERSION_BLOCK) throw protocolError('announcement: version block too large')
    a.version = env.v
  }
  return a
}

/**
 * Checks an announcement against the trusted publisher keys: the publisher is trusted
 * (EUNTRUSTED) and signed the body (EBADSIGNATURE); a carried version block hashes to the
 * announced CID, is validly signed by a trusted author and says the same image, number and
 * parents (EBADVERSION / EBADSIGNATURE / EUNTRUSTED).
 */
export function verifyAnnouncement (a: Announcement, trusted: ReadonlySet<string>): VerifiedAnnouncement {
  const b = a.body
  if (!trusted.has(b.publisher)) throw new ImgmeshError('EUNTRUSTED', `announcement of ${b.image}@${b.number} is signed by an untrusted key ${b.publisher}`)
  let ok = false
  try {
    ok = edVerify(null, announcementSigningBytes(b), publicKeyFromHex(b.publisher), a.signature)
  } catch {
    ok = false
  }
  if (!ok) throw new ImgmeshError('EBADSIGNATURE', `announcement of ${b.image}@${b.number} has a bad signature`)
  if (a.version === undefined) return { announcement: a }
  if (versionCidOf(a.version).toString() !== b.cid.toString()) throw new ImgmeshError('EBADVERSION', `announced version block does not hash to ${b.cid.toString()}`)
  const v = decodeVersion(a.version)
  if (!trusted.has(v.body.author)) throw new ImgmeshError('EUNTRUSTED', `version ${v.body.image}@${v.body.number} is signed by an untrusted key ${v.body.author}`)
  const sameParents = v.body.parents.length === b.parents.length && v.body.parents.every((p, i) => p.toString() === b.parents[i].toString())
  if (v.body.image !== b.image || v.body.number !== b.number || !sameParents) {
    throw new ImgmeshError('EBADVERSION', `announcement says ${b.image}@${b.number} but its version block is ${v.body.image}@${v.body.number}`)
  }
  return { announcement: a, version: v }
}

/** Short name used by the brief and callers: throws on anything not acceptable. */
export const verify = verifyAnnouncement

export type AnnouncementCheck =
  | { ok: true, announcement: Announcement, version?: SignedVersion }
  | { ok: false, error: ImgmeshError }

/**
 * Decodes and verifies gossip bytes without throwing, for a gossipsub topic validator
 * (ok → Accept; not ok → Reject, which scores the sender down).
 */
export function checkAnnouncement (bytes: Uint8Array, trusted: ReadonlySet<string>): AnnouncementCheck {
  try {
    const v = verifyAnnouncement(decodeAnnouncement(bytes), trusted)
    return v.version === undefined ? { ok: true, announcement: v.announcement } : { ok: true, announcement: v.announcement, version: v.version }
  } catch (err) {
    if (err instanceof ImgmeshError) return { ok: false, error: err }
    return { ok: false, error: new ImgmeshError('EPROTOCOL', `announcement rejected: ${(err as Error).message}`, { cause: err }) }
  }
}
