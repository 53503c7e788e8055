/** Content addresses: CIDv1 with sha2-256, raw codec for content chunks, dag-cbor for trees and versions. */
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

export const RAW_CODE = 0x55
export const DAG_CBOR_CODE = 0x71
export const SHA2_256_CODE = 0x12

export function sha256 (bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest()
}

export function cidFor (bytes: Uint8Array, codec: number = RAW_CODE): CID {
  return CID.createV1(codec, Digest.create(SHA2_256_CODE, sha256(bytes)))
}

/** True when bytes hash to the digest named by cid (only sha2-256 is accepted). */
export function matchesCid (cid: CID, bytes: Uint8Array): boolean {
  if (cid.multihash.code !== SHA2_256_CODE) return false
  const digest = sha256(bytes)
  const expected = cid.multihash.digest
  if (expected.length !== digest.length) return false
  for (let i = 0; i < digest.length; i++) if (digest[i] !== expected[i]) return false
  return true
}

/** Keys already made, per CID instance (the wire's CID table and the trees hand out the same instances). */
const keys = new WeakMap<CID, string>()

/** Key used by the store and by GC: the multihash bytes as base64url (codec-independent). */
export function blockKey (cid: CID): string {
  let key = keys.get(cid)
  if (key === undefined) {
    const m = cid.multihash.bytes
    key = Buffer.from(m.buffer, m.byteOffset, m.byteLength).toString('base64url')
    keys.set(cid, key)
  }
  return key
}

export { CID }
