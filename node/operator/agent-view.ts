/**
 * What the operator surface reads from a running agent, in one place: its own node status (the
 * message it gossips), upload/download rates sampled from the block exchange counters, and the
 * versions it holds (cached: scanning a partial version touches every piece).
 *
 * The update manager (groups, assignments, staging) is read structurally, so this module keeps
 * compiling whether or not the agent has one.
 */
import { hostname } from 'node:os'
import type { Agent, VersionHeld } from '../agent/agent.ts'
import { listTargetStates } from '../target/target-state.ts'
import { MAX_DEPLOYED, MAX_HELD, MAX_TRANSFERS, type NodeState, type NodeStatus, type Transfer } from './status-message.ts'
import { connectedPeerCount } from '../swarm/connected-peers.ts'

/** The part of the agent's update manager the operator surface uses. */
export interface UpdatesView {
  groups: string[]
  target: string | null
  assignment: { image: string, number?: number, policy: string } | null
  desired: { image: string, number: number } | null
  deployed: { image: string, number: number } | null
  state: string
  error: string | null
}
export interface UpdatesLike {
  status: () => Promise<UpdatesView>
  assign?: (body: { group: string, image: string, number?: number, policy: 'stage' | 'apply' | 'apply-at', at?: string }) => Promise<unknown>
}
export interface RollbackLike { rollback?: (target: string) => Promise<unknown> }

export function updatesOf (agent: Agent): UpdatesLike | null {
  const u = (agent as unknown as { updates?: UpdatesLike }).updates
  return u !== undefined && typeof u.status === 'function' ? u : null
}

/** Samples the agent's block-exchange byte counters once a second; rates over a sliding window. */
export class RateMeter {
  private readonly agent: Agent
  private readonly samples: Array<{ t: number, sent: number, received: number }> = []
  private readonly windowMs: number
  private timer: NodeJS.Timeout | undefined

  constructor (agent: Agent, windowMs = 3000) { this.agent = agent; this.windowMs = windowMs }

  start (): void {
    this.sample()
    this.timer = setInterval(() => { this.sample() }, 1000)
    this.timer.unref()
  }

  stop (): void { if (this.timer !== undefined) clearInterval(this.timer) }

  private sample (): void {
    const now = Date.now()
    this.samples.push({ t: now, sent: this.agent.exchange.bytesSent, received: this.agent.exchange.bytesReceived })
    while (this.samples.length > 2 && this.samples[0].t < now - this.windowMs) this.samples.shift()
  }

  /** Bytes per second up and down over the window (including what happened since the last sample). */
  rates (): { up: number, down: number } {
    const first = this.samples[0]
    if (first === undefined) return { up: 0, down: 0 }
    const dt = (Date.now() - first.t) / 1000
    if (dt < 0.2) return { up: 0, down: 0 }
    return {
      up: Math.max(0, (this.agent.exchange.bytesSent - first.sent) / dt),
      down: Math.max(0, (this.agent.exchange.bytesReceived - first.received) / dt)
    }
  }
}

/** agent.held() with a short cache (it scans partial versions piece by piece). */
export class HeldCache {
  private readonly agent: Agent
  private readonly ttlMs: number
  private value: VersionHeld[] = []
  private at = 0
  private pending: Promise<VersionHeld[]> | null = null

  constructor (agent: Agent, ttlMs = 2000) { this.agent = agent; this.ttlMs = ttlMs }

  async get (): Promise<VersionHeld[]> {
    if (Date.now() - this.at < this.ttlMs) return this.value
    this.pending ??= this.agent.held().then(v => { this.value = v; this.at = Date.now(); return v }).finally(() => { this.pending = null })
    return await this.pending
  }
}

export interface CollectOptions {
  meter: RateMeter
  held: HeldCache
  /** Groups to report when the agent has no update manager (e.g. from --group). */
  groups?: string[]
}

/** This node's status, as gossiped. */
export async function collectStatus (agent: Agent, opts: CollectOptions): Promise<NodeStatus> {
  const updates = updatesOf(agent)
  const u = updates === null ? null : await updates.status().catch(() => null)
  const transfers: Transfer[] = []
  let jobState: NodeState | null = null
  let jobError: string | undefined
  for (const j of agent.jobs.values()) {
    const p = j.fetcher.progress()
    if (j.state === 'fetching' || j.state === 'writing') jobState = 'applying'
    else if (j.state === 'failed' && jobState === null) { jobState = 'failed'; jobError = j.error }
    if (transfers.length < MAX_TRANSFERS) {
      transfers.push({ image: j.image, number: j.number, target: j.target.slice(0, 512), state: j.state, have: p.have, pieces: p.pieces, bytes: p.bytes, totalBytes: p.totalBytes, rate: j.state === 'fetching' || j.state === 'writing' ? p.rate : 0, peers: p.peers })
    }
  }
  let state: NodeState = 'idle'
  let error: string | undefined
  const us = u?.state
  if (us === 'staging' || us === 'applying' || us === 'failed' || us === 'staged') state = us
  if (us === 'failed') error = u?.error ?? undefined
  if (jobState === 'applying') state = 'applying'
  else if (jobState === 'failed' && state !== 'staging') { state = 'failed'; error = jobError }
  const held = await opts.held.get()
  const deployed = (await listTargetStates(agent.store.targetsDir).catch(() => []))
    .filter(s => s.deployed !== undefined)
    .slice(0, MAX_DEPLOYED)
    .map(s => ({ target: s.target.slice(0, 512), image: s.deployed!.image, number: s.deployed!.number }))
  const ex = agent.exchange
  const rates = opts.meter.rates()
  const status: NodeStatus = {
    v: 1,
    peer: agent.identity.peerId,
    host: hostname().slice(0, 255),
    groups: (u !== null && u.groups.length > 0 ? u.groups : opts.groups ?? []).slice(0, 16),
    time: Date.now(),
    uptime: (Date.now() - agent.startedAt) / 1000,
    state,
    assigned: u?.assignment === null || u?.assignment === undefined ? null : { image: u.assignment.image, policy: u.assignment.policy, ...(u.assignment.number === undefined ? {} : { number: u.assignment.number }) },
    staged: u?.desired !== null && u?.desired !== undefined && (us === 'staged' || us === 'applying' || us === 'applied') ? { image: u.desired.image, number: u.desired.number } : null,
    deployed,
    // Newest first, so a node holding many versions reports the ones that matter.
    held: held.slice().sort((a, b) => b.number - a.number).slice(0, MAX_HELD).map(h => ({ image: h.image, number: h.number, percent: h.complete ? 100 : Math.min(100, h.percent) })),
    transfers,
    traffic: { sent: ex.bytesSent, received: ex.bytesReceived, up: rates.up, down: rates.down, blocksServed: ex.blocksServed, blocksFetched: ex.blocksFetched, badBlocks: ex.badBlocks },
    peers: connectedPeerCount(agent.swarm.libp2p)
  }
  if (error !== undefined && error !== null) status.error = error.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 300)
  return status
}
