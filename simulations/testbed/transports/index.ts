/** The transports the testbed knows, by name, in the order they run. */
import { bittorrentTransport } from './bittorrent.ts'
import { imgmeshTransport, imgmeshPlainTransport } from './imgmesh.ts'
import { multicastTransport } from './multicast.ts'
import { rsyncTransport } from './rsync.ts'
import type { Transport } from './types.ts'

export const TRANSPORTS: readonly Transport[] = [imgmeshTransport, imgmeshPlainTransport, rsyncTransport, multicastTransport, bittorrentTransport]

export function transportByName (name: string): Transport {
  const t = TRANSPORTS.find(x => x.name === name)
  if (t === undefined) throw new Error(`unknown transport ${name}; known: ${TRANSPORTS.map(x => x.name).join(', ')}`)
  return t
}
