/**
 * Swarm-wide node status: every agent publishes its status (status-message.ts) every few seconds
 * on its cluster's status topic and keeps a table of every node it heard from, with when it was
 * last seen and the apparent clock offset. Entries not refreshed within `expireMs` are dropped.
 *
 * Every agent handles every node's status (several copies of each, one per mesh peer), so the
 * pace follows the swarm's size: the interval is at least `SHARE_MS` per known node (the swarm
 * as a whole publishes about two statuses a second at most: an idle 21-node swarm used 5% of a
 * CPU per agent at 5 s, mostly on status gossip, and 2% paced), and a status that did not
 * change since the last one sent (apart from its clock fields) goes out only every
 * `UNCHANGED_EVERY` intervals. Staleness and expiry stretch with the pace.
 *
 * While the node moves blocks, a status whose only news is progress (bytes, rates, percentages)
 * goes out every `BUSY_EVERY` intervals; a change of state (a transfer begun, finished or failed,
 * a version deployed) still goes out at the next interval. During a deploy every node's
 * progress changes all the time, so every node published at the full pace while the swarm had
 * the least CPU to spare: on the testbed (20 clients on two cores) status gossip took about a
 * tenth of the agents' CPU, and a deploy with statuses every 60 s took 5.28 and 4.72 T_min
 * against 6.28 and 5.69 (docs/benchmarks.md).
 *
 * Incoming messages are validated before gossipsub forwards them: signed (StrictSign), at most
 * MAX_STATUS_BYTES, well formed, speaking only for their signer, not older than what the table
 * holds for that peer and not more often than every `minGapMs` per peer (otherwise ignored, not
 * forwarded). A malformed one is rejected, which scores the sender down.
 */
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { Agent } from '../agent/agent.ts'
import { createLogger } from '../logger.ts'
import { publishToMesh } from '../swarm/libp2p-node.ts'
import { STATUS_TOPIC, decodeStatus, encodeStatus, type NodeStatus } from './status-message.ts'
import { collectStatus, HeldCache, RateMeter } from './agent-view.ts'

const log = createLogger('status')

export interface NodeEntry {
  status: NodeStatus
  /** Local clock, ms since the epoch, when the newest status arrived. */
  lastSeen: number
  /** Our clock minus the sender's clock at arrival (ms); includes the gossip delay. */
  offsetMs: number
  self: boolean
}

export interface StatusGossipOptions {
  /** How often this node publishes its status (default 5 s). */
  intervalMs?: number
  /** Nodes not heard from for this long leave the table (default 6 intervals, at least 30 s). */
  expireMs?: number
  /** Groups to report when the agent has no update manager. */
  groups?: string[]
  /** At most this many nodes are kept (default 10,000). */
  maxNodes?: number
}

/** Each known node adds this much to the publish interval. */
export const SHARE_MS = 500
/** An unchanged status is published every this many intervals. */
export const UNCHANGED_EVERY = 3
/** While blocks move, a status that only reports progress is published every this many intervals. */
export const BUSY_EVERY = 4
/** Block traffic (up plus down, bytes per second) above which the node counts as moving blocks. */
const BUSY_BYTES_PER_SECOND = 256 * 1024

/**
 * Whether a turn of the status timer publishes. `changed`: the status differs from the last one
 * sent (clock fields aside); `stateChanged`: and not only in its progress figures; `busy`: the
 * node moves blocks now. A change of state goes out at once; while busy, progress alone waits
 * for BUSY_EVERY intervals; otherwise a change goes out at once and an unchanged status every
 * UNCHANGED_EVERY intervals.
 */
export function shouldPublish (o: { sinceMs: number, intervalMs: number, busy: boolean, changed: boolean, stateChanged: boolean }): boolean {
  if (o.stateChanged) return true
  if (o.busy && o.sinceMs < BUSY_EVERY * o.intervalMs - SHARE_MS) return false
  return o.changed || o.sinceMs >= UNCHANGED_EVERY * o.intervalMs - SHARE_MS
}

/** What a status says apart from its clock fields and its progress figures. */
function stateOf (s: NodeStatus): string {
  return JSON.stringify([s.state, s.error, s.assigned, s.staged, s.deployed, s.groups,
    s.transfers.map(t => [t.image, t.number, t.target, t.state]),
    s.held.map(h => [h.image, h.number, h.percent === 100])])
}

export function statusTopic (clusterId: string): string { return `${STATUS_TOPIC}/${clusterId.slice(0, 16)}` }

export class StatusGossip {
  readonly agent: Agent
  readonly topic: string
  readonly intervalMs: number
  readonly expireMs: number
  readonly meter: RateMeter
  readonly held: HeldCache
  private readonly table = new Map<string, NodeEntry>()
  private readonly listeners = new Set<() => void>()
  private readonly groups: string[] | undefined
  private readonly maxNodes: number
  private readonly minGapMs: number
  private timer: NodeJS.Timeout | undefined
  /** What the last status sent said, without its clock fields (and without progress), and when it went out. */
  private lastSent = ''
  private lastSentState = ''
  private lastSentAt = 0
  private publishing: Promise<void> | null = null
  private stopped = false
  rejected = 0
  received = 0

  constructor (agent: Agent, opts: StatusGossipOptions = {}) {
    this.agent = agent
    this.topic = statusTopic(agent.identity.clusterId)
    this.intervalMs = opts.intervalMs ?? 5000
    this.expireMs = opts.expireMs ?? Math.max(30_000, 6 * this.intervalMs)
    this.groups = opts.groups
    this.maxNodes = opts.maxNodes ?? 10_000
    this.minGapMs = Math.min(500, this.intervalMs / 2)
    this.meter = new RateMeter(agent)
    this.held = new HeldCache(agent, Math.min(2000, this.intervalMs))
  }

  async start (): Promise<void> {
    const pubsub = this.agent.swarm.libp2p.services.pubsub
    pubsub.topicValidators.set(this.topic, (_peer, msg) => {
      if (msg.type !== 'signed') { this.rejected++; return TopicValidatorResult.Reject }
      let s: NodeStatus
      try { s = decodeStatus(msg.data, msg.from.toString()) } catch (err) {
        this.rejected++
        log.debug('rejected a node status', { from: msg.from.toString(), error: (err as Error).message })
        return TopicValidatorResult.Reject
      }
      const have = this.table.get(s.peer)
      if (have !== undefined && (s.time <= have.status.time || Date.now() - have.lastSeen < this.minGapMs)) return TopicValidatorResult.Ignore
      return TopicValidatorResult.Accept
    })
    pubsub.addEventListener('message', this.onMessage)
    pubsub.subscribe(this.topic)
    this.meter.start()
    await this.publishNow()
    this.schedule()
  }

  /** The publish interval now: the configured one, or longer in a large swarm. */
  currentIntervalMs (): number {
    return Math.max(this.intervalMs, this.table.size * SHARE_MS)
  }

  /** A status older than this is out of date: more than one unchanged (or busy) status turn has passed. */
  currentStaleMs (): number {
    return (Math.max(UNCHANGED_EVERY, BUSY_EVERY) + 1) * this.currentIntervalMs()
  }

  /** How long a silent node stays in the table now. */
  currentExpireMs (): number {
    return Math.max(this.expireMs, 2 * UNCHANGED_EVERY * this.currentIntervalMs())
  }

  private schedule (): void {
    if (this.stopped) return
    this.timer = setTimeout(() => {
      this.tick().catch(() => {}).finally(() => { this.schedule() })
    }, this.currentIntervalMs())
    this.timer.unref()
  }

  /**
   * One turn of the timer: publish if the status changed, or if it has not gone out for a while;
   * while blocks move, progress alone waits for BUSY_EVERY intervals.
   */
  private async tick (): Promise<void> {
    const sinceMs = Date.now() - this.lastSentAt
    const intervalMs = this.currentIntervalMs()
    const r = this.meter.rates()
    const busy = r.up + r.down > BUSY_BYTES_PER_SECOND
    await this.publishNow({ when: (c) => shouldPublish({ sinceMs, intervalMs, busy, ...c }) })
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.meter.stop()
    const pubsub = this.agent.swarm.libp2p.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    pubsub.topicValidators.delete(this.topic)
    try { pubsub.unsubscribe(this.topic) } catch {}
    await this.publishing?.catch(() => {})
    this.listeners.clear()
  }

  /** Called whenever the table changes (a status arrived, a node expired, ours was refreshed). */
  onChange (fn: () => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  private changed (): void {
    for (const fn of this.listeners) { try { fn() } catch {} }
  }

  private readonly onMessage = (evt: CustomEvent<{ topic: string, data: Uint8Array, type: string, from?: { toString: () => string } }>): void => {
    const m = evt.detail
    if (m.topic !== this.topic || m.type !== 'signed' || m.from === undefined) return
    let s: NodeStatus
    try { s = decodeStatus(m.data, m.from.toString()) } catch { return }
    if (s.peer === this.agent.identity.peerId) return
    const have = this.table.get(s.peer)
    if (have !== undefined && s.time <= have.status.time) return
    if (have === undefined && this.table.size >= this.maxNodes) return
    this.received++
    const now = Date.now()
    this.table.set(s.peer, { status: s, lastSeen: now, offsetMs: now - s.time, self: false })
    this.changed()
  }

  /**
   * Collects and publishes this node's status now (also refreshes our own table entry);
   * `when`: publishes only if it says yes, told whether the status changed since the last sent.
   */
  async publishNow (opts: { when?: (change: { changed: boolean, stateChanged: boolean }) => boolean } = {}): Promise<NodeStatus | null> {
    if (this.stopped) return null
    const run = (async (): Promise<NodeStatus | null> => {
      const s = await collectStatus(this.agent, { meter: this.meter, held: this.held, groups: this.groups })
      this.table.set(s.peer, { status: s, lastSeen: Date.now(), offsetMs: 0, self: true })
      this.expire()
      this.changed()
      if (this.stopped) return s
      const said = JSON.stringify({ ...s, time: 0, uptime: 0 })
      const state = stateOf(s)
      if (opts.when !== undefined && !opts.when({ changed: said !== this.lastSent, stateChanged: state !== this.lastSentState })) return s
      this.lastSent = said
      this.lastSentState = state
      this.lastSentAt = Date.now()
      try {
        await publishToMesh(this.agent.swarm.libp2p.services.pubsub, this.topic, encodeStatus(s))
      } catch (err) {
        log.debug('status publish failed', { error: (err as Error).message })
      }
      return s
    })()
    this.publishing = run.then(() => {}, () => {})
    try { return await run } catch (err) {
      log.debug('status collect failed', { error: (err as Error).message })
      return null
    }
  }

  private expire (): void {
    const cutoff = Date.now() - this.currentExpireMs()
    for (const [peer, e] of this.table) if (!e.self && e.lastSeen < cutoff) this.table.delete(peer)
  }

  /** Every known node, this one first, then by host name. */
  nodes (): NodeEntry[] {
    this.expire()
    return [...this.table.values()].sort((a, b) => a.self !== b.self ? (a.self ? -1 : 1) : a.status.host.localeCompare(b.status.host) || a.status.peer.localeCompare(b.status.peer))
  }

  self (): NodeEntry | undefined { return this.table.get(this.agent.identity.peerId) }
}
