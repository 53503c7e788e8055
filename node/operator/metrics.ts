/**
 * Prometheus metrics of one agent, with prom-client on a registry of its own (several agents in
 * one process, as in tests, do not share counters). Counters mirror the agent's own counters at
 * scrape time; deploy durations are observed as deploy jobs finish; the store size is measured
 * by walking the block directory at most once a minute, in the background.
 *
 * Served at /metrics on the dashboard server, or alone with startMetricsServer (`--metrics ADDR`).
 */
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Agent } from '../agent/agent.ts'
import { createLogger } from '../logger.ts'
import type { StatusGossip } from './status-gossip.ts'
import { HeldCache } from './agent-view.ts'
import { listenOn, parseListen } from './listen.ts'
import { connectedPeerCount } from '../swarm/connected-peers.ts'

const log = createLogger('metrics')

export const DEPLOY_BUCKETS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]

export interface AgentMetrics {
  readonly registry: Registry
  readonly contentType: string
  render: () => Promise<string>
  stop: () => void
}

export interface MetricsOptions {
  /** Node status table, for the swarm-wide gauges. */
  gossip?: StatusGossip
  /** Process metrics (CPU, RSS, event loop lag, GC) with the imgmesh_ prefix (default true). */
  processMetrics?: boolean
}

/** Keeps a prom-client counter equal to an external monotonic counter. */
function mirror (c: Counter, read: () => number, labels: Record<string, string> = {}): () => void {
  let last = 0
  c.inc(labels, 0) // a labelled series shows from the first scrape, at 0
  return () => {
    const v = read()
    if (v > last) { c.inc(labels, v - last); last = v }
  }
}

export function createAgentMetrics (agent: Agent, opts: MetricsOptions = {}): AgentMetrics {
  const registry = new Registry()
  const ex = agent.exchange
  // Scrapes are rare (every 15-60 s): held versions are read fresh each time.
  const held = new HeldCache(agent, 0)
  const syncs: Array<() => void> = []

  const bytesSent = new Counter({ name: 'imgmesh_bytes_sent_total', help: 'Bytes of block data sent to peers, by protocol', labelNames: ['protocol'], registers: [registry] })
  const bytesReceived = new Counter({ name: 'imgmesh_bytes_received_total', help: 'Bytes of block data received from peers, by protocol', labelNames: ['protocol'], registers: [registry] })
  syncs.push(mirror(bytesSent, () => ex.bytesSent, { protocol: 'blocks' }), mirror(bytesReceived, () => ex.bytesReceived, { protocol: 'blocks' }))
  const counters: Array<[string, string, () => number]> = [
    ['imgmesh_blocks_served_total', 'Blocks served to peers', () => ex.blocksServed],
    ['imgmesh_blocks_fetched_total', 'Blocks fetched from peers and verified', () => ex.blocksFetched],
    ['imgmesh_bad_blocks_total', 'Blocks received that did not hash to their CID (sender banned)', () => ex.badBlocks],
    ['imgmesh_rejected_announcements_total', 'Version announcements rejected (unsigned, untrusted, malformed)', () => agent.versions.rejected]
  ]
  if (opts.gossip !== undefined) {
    const g = opts.gossip
    counters.push(['imgmesh_rejected_node_status_total', 'Node status messages rejected', () => g.rejected])
  }
  for (const [name, help, read] of counters) syncs.push(mirror(new Counter({ name, help, registers: [registry] }), read))

  new Gauge({ name: 'imgmesh_peers', help: 'Connected peers', registers: [registry], collect () { this.set(connectedPeerCount(agent.swarm.libp2p)) } })
  new Gauge({ name: 'imgmesh_banned_peers', help: 'Peers banned for sending bad blocks', registers: [registry], collect () { this.set(ex.bannedPeers().length) } })
  new Gauge({
    name: 'imgmesh_info',
    help: 'This agent: peer id and cluster id (value 1)',
    labelNames: ['peer', 'cluster'],
    registers: [registry],
    collect () { this.set({ peer: agent.identity.peerId, cluster: agent.identity.clusterId.slice(0, 16) }, 1) }
  })
  new Gauge({
    name: 'imgmesh_versions_held',
    help: 'Image versions in the store, complete or partial',
    labelNames: ['state'],
    registers: [registry],
    async collect () {
      const v = await held.get().catch(() => [])
      this.set({ state: 'complete' }, v.filter(x => x.complete).length)
      this.set({ state: 'partial' }, v.filter(x => !x.complete).length)
    }
  })
  new Gauge({ name: 'imgmesh_images', help: 'Images with at least one version in the store', registers: [registry], async collect () { this.set((await agent.store.refs.images().catch(() => [])).length) } })

  // Store size: the blocks the store's index holds (packs other processes wrote included).
  const blocks = agent.store.blocks
  new Gauge({ name: 'imgmesh_store_bytes', help: 'Bytes the block store holds on disk (a block kept compressed counts its compressed bytes)', registers: [registry], collect () { this.set(blocks.stats().bytes) } })
  new Gauge({ name: 'imgmesh_store_blocks', help: 'Blocks in the store', registers: [registry], collect () { this.set(blocks.stats().blocks) } })

  // Deploys: running now, and how long finished ones took.
  const durations = new Histogram({ name: 'imgmesh_deploy_duration_seconds', help: 'Duration of deploys run by this agent, fetch and write, by result', labelNames: ['result'], buckets: DEPLOY_BUCKETS, registers: [registry] })
  new Gauge({ name: 'imgmesh_deploys_running', help: 'Deploys in progress', registers: [registry], collect () { this.set([...agent.jobs.values()].filter(j => j.state === 'fetching' || j.state === 'writing').length) } })
  const observed = new Set<string>()
  const jobKey = (j: { target: string, cid: string, started: number }): string => `${j.target}\0${j.cid}\0${j.started}`
  for (const j of agent.jobs.values()) if (j.state === 'done' || j.state === 'failed') observed.add(jobKey(j))
  const watchJobs = (): void => {
    for (const j of agent.jobs.values()) {
      if (j.state !== 'done' && j.state !== 'failed') continue
      const k = jobKey(j)
      if (observed.has(k)) continue
      observed.add(k)
      durations.observe({ result: j.state }, (Date.now() - j.started) / 1000)
    }
    if (observed.size > 10_000) observed.clear()
  }
  const jobTimer = setInterval(watchJobs, 250)
  jobTimer.unref()

  if (opts.gossip !== undefined) {
    const g = opts.gossip
    new Gauge({ name: 'imgmesh_swarm_nodes', help: 'Nodes whose status this agent heard recently (itself included)', registers: [registry], collect () { this.set(g.nodes().length) } })
    new Gauge({
      name: 'imgmesh_swarm_nodes_by_state',
      help: 'Nodes heard recently, by state',
      labelNames: ['state'],
      registers: [registry],
      collect () {
        const counts: Record<string, number> = { idle: 0, staging: 0, staged: 0, applying: 0, failed: 0 }
        for (const n of g.nodes()) counts[n.status.state] = (counts[n.status.state] ?? 0) + 1
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n)
      }
    })
  }

  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'imgmesh_' })

  return {
    registry,
    contentType: registry.contentType,
    render: async () => {
      watchJobs()
      for (const s of syncs) s()
      return await registry.metrics()
    },
    stop: () => { clearInterval(jobTimer) }
  }
}

/** `--metrics ADDR`: /metrics alone on its own HTTP server. */
export async function startMetricsServer (metrics: AgentMetrics, listen: string): Promise<{ url: string, stop: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') { res.writeHead(404).end('not found\n'); return }
    metrics.render().then(
      (text) => { res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' }).end(text) },
      (err: unknown) => { res.writeHead(500).end(String((err as Error).message) + '\n') }
    )
  })
  const addr = await listenOn(server, parseListen(listen))
  return {
    url: `http://${addr}/metrics`,
    stop: async () => { await new Promise<void>(resolve => { server.close(() => { resolve() }); server.closeAllConnections() }) }
  }
}
