/**
 * Heads sync, `/imgmesh/heads/1.0.0`: when two agents connect, the dialer opens a stream and
 * each side sends one frame listing the newest versions it knows per image, then closes its
 * write end. An agent that was down during an announcement catches up this way.
 *
 *     frame = varint(len) dag-cbor {heads: [{image, number, cid, version?}]}
 *
 * `version`, when present, is the signed version block itself (so the receiver can check the
 * signature and trust at once, without another round trip). The decoder checks the structure
 * and that a version block hashes to its CID; `verifyHead` checks the signature and trust.
 * Several heads per image are allowed (concurrent publishers), but not the same CID twice.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { createHash } from 'node:crypto'
import type { AbortOptions, MessageStream } from '@libp2p/interface'
import { ImgmeshError } from '../../node/errors.ts'
import { FrameDecoder, framed, protocolError, sendParts, streamSource } from '../blocks/frame.ts'
import { MAX_VERSION_BLOCK, decodeVersion, isValidImageName, type SignedVersion } from '../version.ts'

export const HEADS_PROTOCOL = '/imgmesh/heads/1.0.0'
export const MAX_HEADS = 1024
export const MAX_HEADS_FRAME = 4 * 1024 * 1024

const DAG_CBOR_CODE = 0x71
const SHA2_256_CODE = 0x12

export interface Head {
  image: string
  number: number
  /** CID of the version block (dag-cbor, sha2-256). */
  cid: CID
  /** The signed version block, optional. */
  version?: Uint8Array
}

export interface HeadsMessage { heads: Head[] }

function isVersionNumber (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1
}

function checkVersionCid (cid: CID): void {
  if (cid.version !== 1 || cid.code !== DAG_CBOR_CODE || cid.multihash.code !== SHA2_256_CODE) {
    throw protocolError(`head ${cid.toString()} is not a dag-cbor sha2-256 CIDv1`)
  }
}

/** The CID a version block must have. */
export function versionCidOf (bytes: Uint8Array): CID {
  return CID.createV1(DAG_CBOR_CODE, Digest.create(SHA2_256_CODE, createHash('sha256').update(bytes).digest()))
}

function checkHead (h: Head): void {
  if (!isValidImageName(h.image)) throw protocolError(`bad image name in head: ${JSON.stringify(h.image)}`)
  if (!isVersionNumber(h.number)) throw protocolError(`bad version number in head: ${JSON.stringify(h.number)}`)
  checkVersionCid(h.cid)
  if (h.version !== undefined) {
    if (h.version.length > MAX_VERSION_BLOCK) throw protocolError('version block in head too large')
    if (versionCidOf(h.version).toString() !== h.cid.toString()) throw protocolError(`version block does not hash to ${h.cid.toString()}`)
  }
}

function checkHeads (heads: Head[]): void {
  if (heads.length > MAX_HEADS) throw protocolError(`${heads.length} heads (limit ${MAX_HEADS})`)
  const seen = new Set<string>()
  for (const h of heads) {
    checkHead(h)
    const key = h.cid.toString()
    if (seen.has(key)) throw protocolError(`head ${key} listed twice`)
    seen.add(key)
  }
}

/** The dag-cbor body (no length prefix). Throws EPROTOCOL if the message breaks a rule or limit. */
export function encodeHeads (msg: HeadsMessage): Uint8Array {
  checkHeads(msg.heads)
  const heads = msg.heads.map(h => h.version === undefined
    ? { image: h.image, number: h.number, cid: h.cid }
    : { image: h.image, number: h.number, cid: h.cid, version: h.version })
  const bytes = dagCbor.encode({ heads })
  if (bytes.length > MAX_HEADS_FRAME) throw protocolError(`heads message of ${bytes.length} bytes exceeds ${MAX_HEADS_FRAME}`)
  return bytes
}

/** Decodes and checks a heads body. Throws EPROTOCOL on anything malformed. */
export function decodeHeads (bytes: Uint8Array): HeadsMessage {
  if (bytes.length > MAX_HEADS_FRAME) throw protocolError(`heads message of ${bytes.length} bytes exceeds ${MAX_HEADS_FRAME}`)
  let raw: unknown
  try {
    raw = dagCbor.decode(bytes)
  } catch (err) {
    throw protocolError(`heads message is not dag-cbor (${(err as Error).message})`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw protocolError('heads message is not a map')
  const r = raw as Record<string, unknown>
  if (Object.keys(r).length !== 1 || !Array.isArray(r.heads)) throw protocolError('heads message must be {heads: [...]}')
  if (r.heads.length > MAX_HEADS) throw protocolError(`${r.heads.length} heads (limit ${MAX_HEADS})`)
  const heads = (r.heads as unknown[]).map((e): Head => {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw protocolError('head is not a map')
    const h = e as Record<string, unknown>
    for (const k of Object.keys(h)) if (k !== 'image' && k !== 'number' && k !== 'cid' && k !== 'version') throw protocolError(`unknown head field ${k}`)
    const cid = CID.asCID(h.cid)
    if (cid === null) throw protocolError('head cid is not a CID')
    if (typeof h.image !== 'string') throw protocolError('head image is not a string')
    if (h.version !== undefined && !(h.version instanceof Uint8Array)) throw protocolError('head version is not bytes')
    const head: Head = { image: h.image, number: h.number as number, cid }
    if (h.version !== undefined) head.version = h.version
    return head
  })
  checkHeads(heads)
  return { heads }
}

/**
 * Checks a head's version block: present, signed by its author, the author trusted, and the
 * image and number it claims. Returns the decoded version. Throws ENOVERSION (no block),
 * EBADVERSION, EBADSIGNATURE or EUNTRUSTED.
 */
export function verifyHead (head: Head, trusted: ReadonlySet<string>): SignedVersion {
  if (head.version === undefined) throw new ImgmeshError('ENOVERSION', `head ${head.image}@${head.number} carries no version block`)
  if (versionCidOf(head.version).toString() !== head.cid.toString()) throw new ImgmeshError('EBADVERSION', `version block does not hash to ${head.cid.toString()}`)
  const v = decodeVersion(head.version)
  if (!trusted.has(v.body.author)) throw new ImgmeshError('EUNTRUSTED', `version ${v.body.image}@${v.body.number} is signed by an untrusted key ${String(v.body.author)}`)
  if (v.body.image !== head.image || v.body.number !== head.number) {
    throw new ImgmeshError('EBADVERSION', `head claims ${head.image}@${head.number} but the version block is ${v.body.image}@${v.body.number}`)
  }
  return v
}

/** Writes the heads frame. */
export async function writeHeads (stream: MessageStream, msg: HeadsMessage, options?: AbortOptions): Promise<void> {
  await sendParts(stream, framed([encodeHeads(msg)]), options)
}

/**
 * Reads one heads frame from the stream (returns as soon as it is complete). Throws EPROTOCOL
 * on garbage or if the stream ends first, ETIMEOUT/EABORTED when `options.signal` fires (the
 * stream is aborted then).
 */
export async function readHeads (stream: MessageStream, options?: AbortOptions): Promise<HeadsMessage> {
  const signal = options?.signal
  signal?.throwIfAborted()
  const onAbort = (): void => { stream.abort(new ImgmeshError('ETIMEOUT', 'heads exchange timed out')) }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    const decoder = new FrameDecoder(MAX_HEADS_FRAME)
    for await (const chunk of streamSource(stream)) {
      const [frame] = decoder.push(chunk)
      if (frame !== undefined) return decodeHeads(frame.subarray())
    }
    if (signal?.aborted === true) throw new ImgmeshError('ETIMEOUT', 'heads exchange timed out')
    throw protocolError('stream ended before the heads message')
  } catch (err) {
    if (signal?.aborted === true && !(err instanceof ImgmeshError && err.code === 'EPROTOCOL')) {
      throw new ImgmeshError('ETIMEOUT', 'heads exchange timed out', { cause: err })
    }
    throw err
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}

/**
 * One side of the exchange: sends our heads, closes our write end, reads theirs. Both the
 * dialer and the handler call this on their end of the stream.
 */
export async function exchangeHeads (stream: MessageStream, local: HeadsMessage, options?: AbortOptions): Promise<HeadsMessage> {
  const reading = readHeads(stream, options)
  // The remote may end the stream while we still write: the read then fails before anyone
  // awaits it, which must not count as an unhandled rejection (it is awaited below).
  reading.catch(() => {})
  await writeHeads(stream, local, options)
  await stream.close(options)
  return await reading
}
