/**
 * CIDs read off the wire, one instance per distinct CID. A swarm names the same few thousand
 * blocks again and again (in WANT, BLOCK, DONT_HAVE and CANCEL, and every HAVE names its
 * version). Decoding a CID and then printing it as a map key cost about 4 µs each time. A lookup
 * here costs about 0.2 µs, and a CID instance keeps its string form (multiformats caches it), so
 * each later `toString()` of it is free as well.
 *
 * Only CIDs that decoded cleanly and are version 1 are kept, keyed by their exact bytes, so a
 * lookup returns what decoding those bytes would. The table is bounded: it is emptied when it
 * holds MAX_CIDS. A version's pieces can be put in before they come (rememberCids).
 */
import { CID } from 'multiformats/cid'
import { protocolError, type Cursor } from './frame.ts'

/** Largest CID accepted on the wire, in bytes. */
export const MAX_CID_LENGTH = 128
/** CIDs kept before the table starts again (a few MiB at most). */
export const MAX_CIDS = 16384

const table = new Map<string, CID>()

/** The bytes as a string of one char per byte (a map key; CIDs are short). */
function keyOf (bytes: Uint8Array): string {
  return String.fromCharCode.apply(null, bytes as unknown as number[])
}

/** One length-prefixed CIDv1 from c; EPROTOCOL if it is not one. */
export function readCid (c: Cursor): CID {
  const view = c.take(c.varint(MAX_CID_LENGTH))
  const key = keyOf(view)
  const known = table.get(key)
  if (known !== undefined) return known
  // copy: a CID is kept (want lists, maps) and must not pin the receive buffer
  let cid: CID
  try {
    cid = CID.decode(view.slice())
  } catch (err) {
    throw protocolError(`bad CID (${(err as Error).message})`)
  }
  if (cid.version !== 1) throw protocolError('only CIDv1 is accepted')
  if (table.size >= MAX_CIDS) table.clear()
  table.set(key, cid)
  return cid
}

/**
 * Puts CIDs this node already holds as objects (the pieces of a version it serves or fetches,
 * decoded with its tree) into the table, so that the wire's copies of them are never decoded.
 * Only CIDv1 are taken, and only while the table has room: these never empty it.
 */
export function rememberCids (cids: Iterable<CID>): void {
  for (const cid of cids) {
    if (table.size >= MAX_CIDS) return
    if (cid.version !== 1 || cid.bytes.length > MAX_CID_LENGTH) continue
    const key = keyOf(cid.bytes)
    if (!table.has(key)) table.set(key, cid)
  }
}

/** How many CIDs the table holds (for tests). */
export function cidTableSize (): number {
  return table.size
}
