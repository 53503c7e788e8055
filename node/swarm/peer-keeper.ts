/**
 * Keeps a node connected to about `peers` others, not to every node it hears of.
 *
 * Every connection costs both ends CPU even when nothing moves (pings, gossip, the DHT, noise
 * and yamux frames for each), and a block exchange has no use for more neighbours than it can
 * keep busy: in the swarm simulator a 50-client deployment is as fast with 10 neighbours per
 * client as with a full mesh (1.24 against 1.35 T_min). So the node dials candidates (its
 * bootstrap list, in random order so that 50 nodes with the same list do not all dial its first
 * entries, then peers found by discovery) until it has `peers` connections or dials under way,
 * and tops up when a connection closes or a dial fails. A candidate whose dial failed is left
 * alone for RETRY_AFTER_PERIODS top-up periods while others are tried. Inbound connections are accepted up to the
 * connection manager's maxConnections; the keeper closes none.
 */
import type { Connection, Libp2p, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { PeerDialer } from './peer-dialer.ts'
import { connectedPeerCount } from './connected-peers.ts'

/** Default connections a node dials up to. */
export const DEFAULT_PEERS = 16
/** How often the keeper tops up on its own. */
export const TOP_UP_INTERVAL_MS = 10_000
/** A candidate whose dial failed is not tried again for this many top-up periods (30 s). */
export const RETRY_AFTER_PERIODS = 3

interface Candidate {
  id: PeerId
  addrs: Multiaddr[]
  failedAt: number
}

export interface PeerKeeperOptions {
  /** Connections to keep (default DEFAULT_PEERS). */
  peers?: number
  /** Top-up period in ms (default TOP_UP_INTERVAL_MS). */
  intervalMs?: number
}

export class PeerKeeper {
  readonly peers: number
  private readonly libp2p: Libp2p
  private readonly dialer: PeerDialer
  private readonly intervalMs: number
  /** In the order they are tried: the bootstrap list shuffled, then discovered peers. */
  private readonly candidates = new Map<string, Candidate>()
  private timer: NodeJS.Timeout | undefined
  private running = false
  private readonly onClose = (evt: CustomEvent<Connection>): void => {
    // A connection the other side closed at once (it was full and pruned it) counts as a
    // failed dial, so the keeper does not dial the same peer again and again.
    const c = this.candidates.get(evt.detail.remotePeer.toString())
    if (c !== undefined && Date.now() - evt.detail.timeline.open < this.intervalMs) c.failedAt = Date.now()
    this.topUp()
  }

  constructor (libp2p: Libp2p, dialer: PeerDialer, opts: PeerKeeperOptions = {}) {
    this.libp2p = libp2p
    this.dialer = dialer
    this.peers = Math.max(1, opts.peers ?? DEFAULT_PEERS)
    this.intervalMs = opts.intervalMs ?? TOP_UP_INTERVAL_MS
  }

  /** Adds candidates; bootstrap lists are shuffled first. */
  add (list: Array<{ id: PeerId, addrs: Multiaddr[] }>, shuffle = false): void {
    const order = shuffle ? shuffled(list) : list
    for (const c of order) {
      if (c.id.equals(this.libp2p.peerId)) continue
      const key = c.id.toString()
      const known = this.candidates.get(key)
      if (known !== undefined) {
        if (c.addrs.length > 0) known.addrs = c.addrs
        continue
      }
      this.candidates.set(key, { id: c.id, addrs: c.addrs, failedAt: 0 })
    }
    this.topUp()
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.libp2p.addEventListener('connection:close', this.onClose)
    this.timer = setInterval(() => { this.topUp() }, this.intervalMs)
    this.timer.unref()
    this.topUp()
  }

  stop (): void {
    this.running = false
    this.libp2p.removeEventListener('connection:close', this.onClose)
    if (this.timer !== undefined) clearInterval(this.timer)
  }

  /** Whether the node has (or is dialling) fewer than `peers` peers. */
  wantsMore (): boolean {
    return connectedPeerCount(this.libp2p) + this.dialer.size < this.peers
  }

  /** Dials candidates until connected and dialling peers reach `peers`. */
  topUp (): void {
    if (!this.running || this.libp2p.status !== 'started') return
    const now = Date.now()
    for (const c of this.candidates.values()) {
      if (!this.wantsMore()) return
      if (now - c.failedAt < RETRY_AFTER_PERIODS * this.intervalMs) continue
      if (this.dialer.has(c.id) || this.libp2p.getConnections(c.id).length > 0) continue
      void this.dialer.dial(c.id, c.addrs, 'keeper').then((outcome) => {
        if (outcome.connected) return
        c.failedAt = Date.now()
        this.topUp()
      })
    }
  }
}

function shuffled<T> (list: T[]): T[] {
  const out = [...list]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const t = out[i]; out[i] = out[j]; out[j] = t
  }
  return out
}
