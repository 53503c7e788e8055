/**
 * Throughput over time for the dashboard chart: once a second, each known node's upload and
 * download rates (this node's measured now, the others' from their latest gossiped status) and
 * the swarm aggregate (sum over nodes). A ring buffer of the last `keep` samples.
 */
import type { StatusGossip } from './status-gossip.ts'

export interface ThroughputSample {
  /** ms since the epoch */
  t: number
  /** Swarm aggregate, bytes per second. */
  up: number
  down: number
  /** Per node (peer id): [up, down] bytes per second. */
  nodes: Record<string, [number, number]>
}

export class ThroughputHistory {
  private readonly gossip: StatusGossip
  private readonly keep: number
  readonly samples: ThroughputSample[] = []
  private readonly listeners = new Set<(s: ThroughputSample) => void>()
  private timer: NodeJS.Timeout | undefined

  constructor (gossip: StatusGossip, keep = 600) { this.gossip = gossip; this.keep = keep }

  start (everyMs = 1000): void {
    this.timer = setInterval(() => { this.sample() }, everyMs)
    this.timer.unref()
  }

  stop (): void { if (this.timer !== undefined) clearInterval(this.timer); this.listeners.clear() }

  onSample (fn: (s: ThroughputSample) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  sample (): ThroughputSample {
    const nodes: Record<string, [number, number]> = {}
    let up = 0
    let down = 0
    const mine = this.gossip.meter.rates()
    const stale = Math.max(this.gossip.currentStaleMs(), 10_000)
    for (const n of this.gossip.nodes()) {
      let r: [number, number]
      if (n.self) r = [mine.up, mine.down]
      else if (Date.now() - n.lastSeen > stale) r = [0, 0]
      else r = [n.status.traffic.up, n.status.traffic.down]
      nodes[n.status.peer] = [Math.round(r[0]), Math.round(r[1])]
      up += r[0]
      down += r[1]
    }
    const s: ThroughputSample = { t: Date.now(), up: Math.round(up), down: Math.round(down), nodes }
    this.samples.push(s)
    if (this.samples.length > this.keep) this.samples.splice(0, this.samples.length - this.keep)
    for (const fn of this.listeners) { try { fn(s) } catch {} }
    return s
  }
}
