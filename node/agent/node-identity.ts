/**
 * A node's identity in its data dir: the peer key (libp2p identity), the cluster key (shared by
 * every node of the swarm; gates every connection) and the publisher key (signs versions).
 */
import { join } from 'node:path'
import { copyFile, chmod } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import type { PrivateKey } from '@libp2p/interface'
import type { ImageStore } from '../image/image-store.ts'
import { loadOrCreatePeerKey, loadPeerKey, peerIdOf } from '../swarm/peer-key.ts'
import { createClusterKey, loadClusterKey, clusterKeyId } from '../swarm/cluster-key.ts'
import { ImgmeshError } from '../errors.ts'

export const PEER_KEY = 'peer.key'
export const CLUSTER_KEY = 'cluster.key'

export interface NodeIdentity {
  peerKey: PrivateKey
  peerId: string
  clusterKey: Uint8Array
  clusterId: string
  publisher: string
}

export interface InitResult {
  peerId: string
  publisher: string
  clusterKeyFile: string
  clusterId: string
  newCluster: boolean
  trusted: string[]
}

/** `imgmesh init`: creates what is missing; joins the cluster of clusterKeyFile when given. */
export async function initNode (store: ImageStore, opts: { clusterKeyFile?: string, trust?: string[] } = {}): Promise<InitResult> {
  const keyFile = join(store.dataDir, CLUSTER_KEY)
  let newCluster = false
  if (opts.clusterKeyFile !== undefined) {
    const given = await loadClusterKey(opts.clusterKeyFile)
    if (existsSync(keyFile)) {
      const have = await loadClusterKey(keyFile)
      if (Buffer.compare(have, given) !== 0) throw new ImgmeshError('ECONFLICT', `${store.dataDir} already belongs to another cluster (${clusterKeyId(have)}); use a new data dir`)
    } else {
      await copyFile(opts.clusterKeyFile, keyFile)
      await chmod(keyFile, 0o600)
    }
  } else if (!existsSync(keyFile)) {
    await createClusterKey(keyFile)
    newCluster = true
  }
  for (const k of opts.trust ?? []) await store.trust.add(k)
  // A new cluster trusts its first node's publisher key; a joining node trusts what it is told.
  const publisher = await store.publisherKey()
  if (newCluster) await store.trust.add(publisher.publicHex)
  const peerKey = await loadOrCreatePeerKey(join(store.dataDir, PEER_KEY))
  const clusterKey = await loadClusterKey(keyFile)
  return { peerId: peerIdOf(peerKey).toString(), publisher: publisher.publicHex, clusterKeyFile: keyFile, clusterId: clusterKeyId(clusterKey), newCluster, trusted: store.trust.list() }
}

export async function loadIdentity (store: ImageStore): Promise<NodeIdentity> {
  const keyFile = join(store.dataDir, CLUSTER_KEY)
  if (!existsSync(keyFile) || !existsSync(join(store.dataDir, PEER_KEY))) {
    throw new ImgmeshError('EBADARG', `${store.dataDir} is not initialised: run imgmesh init (or imgmesh init --cluster-key FILE to join a cluster)`)
  }
  const peerKey = await loadPeerKey(join(store.dataDir, PEER_KEY))
  const clusterKey = await loadClusterKey(keyFile)
  const publisher = await store.publisherKey()
  return { peerKey, peerId: peerIdOf(peerKey).toString(), clusterKey, clusterId: clusterKeyId(clusterKey), publisher: publisher.publicHex }
}
