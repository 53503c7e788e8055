/**
 * What each peer told us it holds of a version: the HAVEs that come back on our own streams to
 * it. The HAVE updates we send a peer leave out the pieces it already has, and a peer that has
 * every piece hears nothing more: it will never ask us for them. In a swarm most pieces reach a
 * peer from someone else before we could tell it we have them, and every HAVE is a message to
 * encrypt, frame and read on both ends, once per peer per 100 ms.
 *
 * Bounded: pieces of versions up to MAX_TRACKED_PIECES (larger ones are not tracked and every
 * HAVE goes out), and the last MAX_VERSIONS_PER_PEER versions per peer.
 */
import type { HaveSet } from '../../protocols/blocks/messages.ts'
import { Bitfield } from '../fetch/bitfield.ts'

export const MAX_TRACKED_PIECES = 1 << 20
export const MAX_VERSIONS_PER_PEER = 2

export class PeerPieces {
  /** Per peer: per version key, what it holds (insertion order = oldest first). */
  private readonly byPeer = new Map<string, Map<string, Bitfield | 'all'>>()

  /**
   * Records a HAVE from peer about version (pieceCount as the message said): added to what it
   * said before, or, with `replace` (the HAVE a peer asks with: all it holds now, maybe less
   * than before after a GC), instead of it.
   */
  note (peer: string, version: string, pieceCount: number, have: HaveSet, replace = false): void {
    let versions = this.byPeer.get(peer)
    if (versions === undefined) { versions = new Map(); this.byPeer.set(peer, versions) }
    let known = replace ? undefined : versions.get(version)
    if (replace) versions.delete(version)
    if (have.kind === 'all') {
      known = 'all'
    } else {
      if (known === 'all') return
      if (pieceCount <= 0 || pieceCount > MAX_TRACKED_PIECES) return
      if (known === undefined || known.size !== pieceCount) known = new Bitfield(pieceCount)
      if (have.kind === 'bitmap') {
        const b = new Bitfield(pieceCount, have.bitmap)
        for (let i = 0; i < pieceCount; i++) if (b.has(i)) known.set(i)
      } else {
        for (const i of have.indexes) known.set(i)
      }
    }
    versions.delete(version)
    versions.set(version, known)
    while (versions.size > MAX_VERSIONS_PER_PEER) versions.delete(versions.keys().next().value as string)
  }

  /** Whether peer said it holds every piece of version. */
  hasAll (peer: string, version: string): boolean {
    return this.byPeer.get(peer)?.get(version) === 'all'
  }

  /** Whether peer said it holds piece i of a version of pieceCount pieces. */
  has (peer: string, version: string, pieceCount: number, i: number): boolean {
    const known = this.byPeer.get(peer)?.get(version)
    if (known === undefined) return false
    if (known === 'all') return true
    return known.size === pieceCount && known.has(i)
  }

  /** How many pieces of `set` (of a version of set.size pieces) peer is not known to hold. */
  countLacking (peer: string, version: string, set: Bitfield): number {
    const known = this.byPeer.get(peer)?.get(version)
    if (known === 'all') return 0
    if (known === undefined || known.size !== set.size) return set.cardinality
    const a = set.bytes
    const b = known.bytes
    let n = 0
    for (let k = 0; k < a.length; k++) {
      let d = a[k] & ~b[k]
      while (d !== 0) { d &= d - 1; n++ }
    }
    return n
  }

  forget (peer: string): void { this.byPeer.delete(peer) }
}
