/**
 * The dials a node makes on its own (bootstrap peers, discovered peers, DHT providers, the
 * operator's `dial`), a few at a time.
 *
 * An agent started into a formed swarm learns of every peer at once (a bootstrap list of 50,
 * an mDNS answer per host). Dialled all together on a loaded machine, each noise handshake
 * waits for a CPU behind the others and may miss its timeout on both sides, and every retry
 * starts the same race again. A queue that runs DIALS_AT_ONCE dials, each allowed
 * DIAL_TIMEOUT_MS, connects them one after another instead.
 *
 * One dial per peer: asking again for a peer already queued or being dialled returns the same
 * promise. A queued dial to a peer that got connected meanwhile (it dialled us) is skipped.
 */
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { createLogger } from '../logger.ts'

const log = createLogger('swarm:dialer')

/** Dials running at once (the library's own queue would run 100). */
export const DIALS_AT_ONCE = 4
/** How long one dial may take, handshake included (the library: 10 s, 6 s per address). */
export const DIAL_TIMEOUT_MS = 30_000

export interface PeerDialerOptions {
  atOnce?: number
  timeoutMs?: number
}

/** How a dial ended: connected, or why not. */
export interface DialOutcome {
  connected: boolean
  error?: string
}

interface Job {
  peer: PeerId
  addrs: Multiaddr[]
  why: string
  done: (outcome: DialOutcome) => void
}

const CONNECTED: DialOutcome = Object.freeze({ connected: true })

export class PeerDialer {
  private readonly libp2p: Libp2p
  private readonly atOnce: number
  private readonly timeoutMs: number
  private readonly queue: Job[] = []
  private readonly pending = new Map<string, Promise<DialOutcome>>()
  private running = 0
  private stopped = false

  constructor (libp2p: Libp2p, opts: PeerDialerOptions = {}) {
    this.libp2p = libp2p
    this.atOnce = Math.max(1, opts.atOnce ?? DIALS_AT_ONCE)
    this.timeoutMs = opts.timeoutMs ?? DIAL_TIMEOUT_MS
  }

  /** Dials queued or running. */
  get size (): number {
    return this.pending.size
  }

  /** Dials running now (at most the `atOnce` given). */
  get active (): number {
    return this.running
  }

  /** Whether a dial to this peer is queued or running. */
  has (peer: PeerId): boolean {
    return this.pending.has(peer.toString())
  }

  /**
   * Queues a dial to `peer` (at `addrs` if given, else at what the peer store knows). Resolves
   * once connected, or with the reason if the dial failed, timed out or was dropped by stop();
   * never rejects. `why` is for the log.
   */
  async dial (peer: PeerId, addrs: Multiaddr[] = [], why = 'dial'): Promise<DialOutcome> {
    if (peer.equals(this.libp2p.peerId)) return { connected: false, error: 'that is this node' }
    if (this.libp2p.getConnections(peer).length > 0) return CONNECTED
    const key = peer.toString()
    const known = this.pending.get(key)
    if (known !== undefined) return await known
    if (this.stopped) return { connected: false, error: 'the node is stopping' }
    const promise = new Promise<DialOutcome>(resolve => {
      this.queue.push({ peer, addrs, why, done: resolve })
    }).finally(() => { this.pending.delete(key) })
    this.pending.set(key, promise)
    this.pump()
    return await promise
  }

  /** Drops every queued dial; running ones end with the node. */
  stop (): void {
    this.stopped = true
    for (const job of this.queue.splice(0)) job.done({ connected: false, error: 'the node is stopping' })
  }

  private pump (): void {
    while (!this.stopped && this.running < this.atOnce && this.queue.length > 0) {
      const job = this.queue.shift() as Job
      if (this.libp2p.getConnections(job.peer).length > 0) { job.done(CONNECTED); continue }
      this.running++
      const target = job.addrs.length > 0 ? job.addrs : job.peer
      this.libp2p.dial(target, { signal: AbortSignal.timeout(this.timeoutMs) })
        .then(() => {
          log.debug('dialled', { peer: job.peer.toString(), why: job.why })
          job.done(CONNECTED)
        }, (err: unknown) => {
          const error = err instanceof Error ? err.message : String(err)
          log.debug('dial failed', { peer: job.peer.toString(), why: job.why, error })
          job.done({ connected: false, error })
        })
        .finally(() => {
          this.running--
          this.pump()
        })
    }
  }
}
