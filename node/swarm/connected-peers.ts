/**
 * The peers this node has an open connection to, as peer id strings.
 *
 * `libp2p.getPeers()` builds a PeerSet and turns each entry back into a PeerId by decoding its
 * base58 string. The fetchers ask for their candidate peers several times a second while a
 * version loads, and in a 50-client testbed deploy that decoding was 1.4% of all CPU; the
 * connections' own PeerIds already carry their string form.
 */
import type { Libp2p } from '@libp2p/interface'

/** Distinct remote peers of the open connections, in connection order. */
export function connectedPeerIds (libp2p: Pick<Libp2p, 'getConnections'>): string[] {
  const seen = new Set<string>()
  for (const c of libp2p.getConnections()) {
    if (c.status !== 'open') continue
    seen.add(c.remotePeer.toString())
  }
  return [...seen]
}

/** How many distinct peers have an open connection. */
export function connectedPeerCount (libp2p: Pick<Libp2p, 'getConnections'>): number {
  return connectedPeerIds(libp2p).length
}
