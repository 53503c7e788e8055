/**
 * The swarm node: one libp2p 3 node per agent, configured for a LAN cluster.
 *
 * - TCP transport, noise encryption, yamux multiplexing, identify, ping. Each TCP connection
 *   writes a batch with one system call (socket-writes.ts), and yamux streams send a window
 *   update once 64 KiB arrived, not after every frame (stream-window.ts). Noise reads its
 *   message lengths without an exception per socket read (noise-lengths.ts).
 * - The cluster key gates every connection. Default gate: the noise prologue
 *   (sha256("imgmesh-cluster-v1" || key)) — a peer with another key fails the handshake with
 *   an `EncryptionFailedError`/`InvalidCryptoExchangeError` before any protocol runs. The
 *   `pnet` gate (@libp2p/pnet, xsalsa20 under noise) is kept for measurement only; see
 *   simulations/bench-handshake.ts and docs/benchmarks.md.
 * - kad-dht in server mode under a private protocol (`/imgmesh/kad/1.0.0`) whose peer info
 *   mapper keeps LAN and loopback addresses (the default strips them).
 * - gossipsub with signed messages and IP colocation scoring off (many agents may share one
 *   address: tests on loopback, NAT'd racks). A copy of a message already seen (same sender
 *   and sequence number) is dropped before its signature is checked again.
 * - Discovery: a bootstrap list (redialled while the node has too few connections) and
 *   optional mDNS under a cluster-specific service tag; discovered peers are dialled. Every
 *   dial the node makes on its own goes through one queue, a few at a time (peer-dialer.ts),
 *   and a dial or an inbound handshake may take 30 s (a loaded machine, see there).
 * - The connection manager admits loopback and private ranges without the per-IP inbound
 *   rate limit (otherwise agents on one host or behind one address never connect).
 */
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import type { Libp2p, PeerId, PeerInfo, PrivateKey } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { kadDHT, type KadDHT, type KadDHTInit } from '@libp2p/kad-dht'
import { gossipsub, type GossipSub, type GossipsubOpts, type PublishResult } from '@libp2p/gossipsub'
import { mdns } from '@libp2p/mdns'
import { preSharedKey } from '@libp2p/pnet'
import { noiseCrypto } from './noise-crypto.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { ImgmeshError } from '../errors.ts'
import { createLogger } from '../logger.ts'
import { clusterKeyId, clusterPnetPsk, clusterPrologue, validateClusterKey } from './cluster-key.ts'
import { DIAL_TIMEOUT_MS, PeerDialer } from './peer-dialer.ts'
import { DEFAULT_PEERS, PeerKeeper } from './peer-keeper.ts'
import { coalescingProtector } from './socket-writes.ts'
import { useBatchedWindowUpdates } from './stream-window.ts'
import { useQuietLengthDecoding } from './noise-lengths.ts'

const log = createLogger('swarm')

export const DHT_PROTOCOL = '/imgmesh/kad/1.0.0'
/** Gossip messages from this size on are worth an IDONTWANT to mesh peers (the library: 512 bytes). */
const IDONTWANT_MIN_BYTES = 64 * 1024
/**
 * A smaller gossip mesh than the library's (D 6, 4-12; gossip to at least 6 peers outside the
 * mesh, or a quarter of them). Each node receives a message about once per mesh peer and passes
 * it to each of its own, so the mesh degree sets what every status costs every node; in a
 * 50-client testbed deploy gossipsub was 12% of all CPU, most of it forwarding statuses and
 * sending IHAVEs; with this mesh, and statuses sent to it only (publishToMesh), a 50-client
 * deploy took 10.5-11.9 T_min instead of 12.2-12.6 (docs/benchmarks.md). Announcements and
 * assignments are still sent to every connected subscriber at once, IHAVE gossip still offers
 * what a mesh peer missed, and peers exchange their heads on every new connection and whenever
 * a deploy names a version one of them does not know (version-sync.ts).
 */
const GOSSIP_DEGREE = { D: 4, Dlo: 3, Dhi: 8, Dlazy: 3, gossipFactor: 0.1 }

/** gossipsub's publish as the implementation has it: the exported interface omits the options. */
type PublishWithOptions = (topic: string, data: Uint8Array, opts: { floodPublish: boolean }) => Promise<PublishResult>

/**
 * Publishes to the topic's mesh only. A plain publish also floods the message to every
 * connected peer subscribed to the topic (up to `maxConnections`); for messages that are many
 * and not urgent, such as node statuses, the mesh is enough.
 */
export async function publishToMesh (pubsub: GossipSub, topic: string, data: Uint8Array): Promise<PublishResult> {
  const publish = pubsub.publish.bind(pubsub) as PublishWithOptions
  return await publish(topic, data, { floodPublish: false })
}

/**
 * Inbound connections accepted per remote IP address per second. The library's 5 is meant for
 * public networks; 50 agents started into one LAN swarm at once, or many on one host, exceed it,
 * while the cluster key keeps outsiders out in the handshake.
 */
const INBOUND_PER_HOST_PER_SECOND = 100
/** Inbound handshakes under way at once (the library: 10). */
const INBOUND_PENDING = 32

export type ClusterGate = 'prologue' | 'pnet'

// A type alias, not an interface: libp2p's ServiceMap needs an index signature.
export type SwarmServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
}

export type SwarmLibp2p = Libp2p<SwarmServices>

export interface MdnsOptions {
  /** Query interval in ms (default 10 s). */
  interval?: number
}

export interface SwarmNodeOptions {
  /** This node's identity (ed25519), see peer-key.ts. */
  privateKey: PrivateKey
  /** The 32-byte cluster key, see cluster-key.ts. */
  clusterKey: Uint8Array
  /** Listen multiaddrs. Default: `/ip4/127.0.0.1/tcp/0` (the agent passes its LAN addresses). */
  listen?: string[]
  /** Addresses to announce instead of the listen addresses (e.g. behind a port forward). */
  announce?: string[]
  /** Bootstrap peers: multiaddrs ending in /p2p/<peer id>. */
  bootstrap?: string[]
  /**
   * Connections this node dials up to, from its bootstrap list and the peers discovery finds
   * (default DEFAULT_PEERS, see peer-keeper.ts); kept topped up as connections close.
   */
  peers?: number
  /** How often the node tops its connections up (ms, default 10 s). */
  topUpInterval?: number
  /** mDNS discovery on the LAN. Off unless set (it multicasts on every interface). */
  mdns?: boolean | MdnsOptions
  /** How the cluster key gates connections (default 'prologue'). */
  gate?: ClusterGate
  /** Multiaddrs (with /ipcidr) always admitted, beyond maxConnections too. Default: none. */
  allow?: string[]
  /**
   * Open connections at most, inbound ones included: above it, inbound connections are refused
   * and the library prunes the least valued (default: 3 × peers, at least 32).
   */
  maxConnections?: number
  /** Overrides of the kad-dht settings. */
  dht?: Partial<KadDHTInit>
  /** Overrides of the gossipsub settings. */
  gossip?: Partial<GossipsubOpts>
  /** yamux: streams the remote may open before our side finished setting up (default 64). */
  maxEarlyStreams?: number
  /** Do not start the node (default: started). */
  start?: boolean
}

export interface SwarmNode {
  readonly libp2p: SwarmLibp2p
  readonly peerId: PeerId
  /** Fingerprint of the cluster key (never the key). */
  readonly clusterId: string
  readonly gate: ClusterGate
  /** The queue every dial of this node should go through. */
  readonly dialer: PeerDialer
  /** Keeps the node connected to about `peers` others (peer-keeper.ts). */
  readonly keeper: PeerKeeper
  /** Dialable addresses, each ending in /p2p/<peer id>. */
  multiaddrs: () => Multiaddr[]
  /** Stops timers, discovery and the libp2p node; safe to call twice. */
  stop: () => Promise<void>
}

/**
 * Keeps every TCP address a peer reports on IPv4/IPv6, including loopback and private ranges
 * (the kad-dht default strips those, which on a LAN leaves the routing table empty), but drops
 * unspecified addresses (0.0.0.0, ::) that nobody can dial.
 */
export function lanPeerInfoMapper (peer: PeerInfo): PeerInfo {
  return {
    ...peer,
    multiaddrs: peer.multiaddrs.filter(ma => {
      const components = ma.getComponents()
      const ip = components[0]
      if (ip === undefined || (ip.name !== 'ip4' && ip.name !== 'ip6')) return false
      if (ip.value === '0.0.0.0' || ip.value === '::') return false
      return components.some(c => c.name === 'tcp')
    })
  }
}

/**
 * Gossip's quick duplicate check: sender and sequence number, the same pair gossipsub's own
 * message id is made of under StrictSign. Without it every copy a node receives (one from each
 * mesh peer: up to 10 in an 11-node swarm) had its ed25519 signature checked before being found
 * a duplicate, about a quarter of an idle agent's CPU. Only messages that passed validation
 * enter the cache, so a forged copy cannot shadow the real one.
 */
export function gossipFastMessageId (msg: { from?: Uint8Array, seqno?: Uint8Array, topic: string }): string {
  if (msg.from === undefined || msg.seqno === undefined) return 'unsigned'
  return `${msg.topic}\n${Buffer.from(msg.from).toString('base64')}\n${Buffer.from(msg.seqno).toString('base64')}`
}

/** The mDNS service tag of a cluster, so agents of other clusters on the LAN are not even dialled. */
export function mdnsServiceTag (clusterId: string): string {
  return `_imgmesh-${clusterId.slice(0, 12)}._udp.local`
}

function peerIdOfAddr (addr: string): PeerId {
  let ma: Multiaddr
  try {
    ma = multiaddr(addr)
  } catch (err) {
    throw new ImgmeshError('EBADARG', `bootstrap address ${addr} is not a multiaddr`, { cause: err })
  }
  const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
  if (id === undefined) throw new ImgmeshError('EBADARG', `bootstrap address ${addr} does not end in /p2p/<peer id>`)
  return peerIdFromString(id)
}

export async function createSwarmNode (opts: SwarmNodeOptions): Promise<SwarmNode> {
  const clusterKey = validateClusterKey(opts.clusterKey)
  const clusterId = clusterKeyId(clusterKey)
  const gate: ClusterGate = opts.gate ?? 'prologue'
  const bootstrapList = opts.bootstrap ?? []
  const bootstrapPeers = bootstrapList.map(a => ({ addr: multiaddr(a), id: peerIdOfAddr(a) }))
  const mdnsOpts: MdnsOptions | null = opts.mdns === true ? {} : opts.mdns === false || opts.mdns === undefined ? null : opts.mdns

  const peerDiscovery: NonNullable<Libp2pOptions<SwarmServices>['peerDiscovery']> = []
  if (mdnsOpts !== null) peerDiscovery.push(mdns({ serviceTag: mdnsServiceTag(clusterId), interval: mdnsOpts.interval ?? 10_000 }))

  const peers = Math.max(1, opts.peers ?? DEFAULT_PEERS)
  if (!useBatchedWindowUpdates()) log.warn('yamux streams have no sendWindowUpdate: window updates left to the library')
  if (!useQuietLengthDecoding()) log.warn('LengthPrefixedDecoder has no decode: noise message lengths left to the library')
  const libp2p = await createLibp2p<SwarmServices>({
    privateKey: opts.privateKey,
    start: false,
    addresses: {
      listen: opts.listen ?? ['/ip4/127.0.0.1/tcp/0'],
      ...(opts.announce === undefined ? {} : { announce: opts.announce })
    },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto, ...(gate === 'prologue' ? { prologueBytes: clusterPrologue(clusterKey) } : {}) })],
    // Every connection writes each batch with one system call (socket-writes.ts); the pnet gate
    // runs after that, on the same connection.
    connectionProtector: coalescingProtector(gate === 'pnet' ? preSharedKey({ psk: clusterPnetPsk(clusterKey) }) : undefined),
    streamMuxers: [yamux({ maxEarlyStreams: opts.maxEarlyStreams ?? 64 })],
    peerDiscovery,
    connectionManager: {
      allow: [...(opts.allow ?? [])],
      maxConnections: opts.maxConnections ?? Math.max(32, 3 * peers),
      inboundConnectionThreshold: INBOUND_PER_HOST_PER_SECOND,
      maxIncomingPendingConnections: INBOUND_PENDING,
      dialTimeout: DIAL_TIMEOUT_MS,
      addressDialTimeout: DIAL_TIMEOUT_MS,
      inboundUpgradeTimeout: DIAL_TIMEOUT_MS
    },
    // No connection monitor. It opened a ping stream on every connection every interval to
    // learn a round-trip time nothing here reads, and each stream cost a protocol negotiation
    // and a peer-store update on both sides: two thirds of an idle agent's CPU with 40
    // connections (0.97-1.09% of a CPU per agent in a 50-agent swarm, 0.33-0.39% without).
    // Closing a connection on a failed ping closed live connections of busy agents (545 in one
    // 20-client testbed run), so it closed nothing already. yamux still pings each connection
    // every 30 s for its round trip; a peer that dies closes its sockets (the kernel does), and
    // a fetch moves the requests a silent peer does not answer to others.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: false,
        peerInfoMapper: lanPeerInfoMapper,
        logPrefix: 'imgmesh:dht',
        datastorePrefix: '/imgmesh-dht',
        metricsPrefix: 'imgmesh_dht',
        ...opts.dht
      }),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        fallbackToFloodsub: false,
        floodPublish: true,
        fastMsgIdFn: gossipFastMessageId,
        // No IDONTWANT for our messages (statuses, announcements, assignments: a few KiB at most).
        // With the library's 512 bytes every status received sent one to each mesh peer, each
        // its own write: 0.8% of all CPU in a 50-client testbed deploy.
        idontwantMinDataSize: IDONTWANT_MIN_BYTES,
        ...GOSSIP_DEGREE,
        ...opts.gossip,
        scoreParams: {
          IPColocationFactorWeight: 0,
          ...opts.gossip?.scoreParams
        }
      })
    }
  })

  const dialer = new PeerDialer(libp2p)
  const keeper = new PeerKeeper(libp2p, dialer, { peers, intervalMs: opts.topUpInterval })
  const onDiscovery = (evt: CustomEvent<PeerInfo>): void => {
    keeper.add([{ id: evt.detail.id, addrs: evt.detail.multiaddrs }])
  }
  libp2p.addEventListener('peer:discovery', onDiscovery)

  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    keeper.stop()
    libp2p.removeEventListener('peer:discovery', onDiscovery)
    dialer.stop()
    await libp2p.stop()
  }

  // Bootstrap peers go into the peer store (so that other parts find their addresses) and to the
  // keeper, in random order; it dials them once the node has started.
  // keeper first: merging fires peer:discovery, which would add them in list order.
  keeper.add(bootstrapPeers.map(p => ({ id: p.id, addrs: [p.addr] })), true)
  for (const p of bootstrapPeers) {
    if (!p.id.equals(libp2p.peerId)) await libp2p.peerStore.merge(p.id, { multiaddrs: [p.addr] })
  }
  libp2p.addEventListener('start', () => { keeper.start() }, { once: true })
  if (opts.start !== false) {
    try {
      await libp2p.start()
    } catch (err) {
      await stop().catch(() => {})
      throw err
    }
    log.info('swarm node started', { peer: libp2p.peerId.toString(), cluster: clusterId, gate, addrs: libp2p.getMultiaddrs().map(a => a.toString()) })
  }

  return {
    libp2p,
    peerId: libp2p.peerId,
    clusterId,
    gate,
    dialer,
    keeper,
    multiaddrs: () => libp2p.getMultiaddrs(),
    stop
  }
}
