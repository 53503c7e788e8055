/**
 * The operator surface of a running agent, started after Agent.start and stopped before
 * agent.stop(): node status gossip (always: every agent tells the swarm what it does), and when
 * asked, the web dashboard and the Prometheus metrics (on the dashboard server and/or alone);
 * and always a read-only local socket (operator.sock in the data dir) for `imgmesh doctor`.
 */
import type { Agent } from '../agent/agent.ts'
import { createLogger } from '../logger.ts'
import { StatusGossip } from './status-gossip.ts'
import { startDashboard, type Dashboard } from './dashboard.ts'
import { createAgentMetrics, startMetricsServer, type AgentMetrics } from './metrics.ts'
import { startLocalApi } from './local-api.ts'

const log = createLogger('operator')

export interface OperatorOptions {
  /** Dashboard HOST:PORT (absent: no dashboard). */
  dashboard?: string
  /** Allow assign/rollback from the dashboard, with a bearer token. */
  dashboardActions?: boolean
  /** Token for dashboard actions (default: dashboard.token in the data dir). */
  dashboardToken?: string
  /** Extra host names the dashboard answers to (besides IPs, localhost, this host's name). */
  dashboardHosts?: string[]
  /** Metrics HOST:PORT for a /metrics-only server. With a dashboard, /metrics is served there too. */
  metrics?: string
  /** Groups reported in the node status when the agent has no update manager. */
  groups?: string[]
  /** How often the node status is gossiped (ms, default 5000). */
  statusIntervalMs?: number
  /** When a silent node leaves the table (ms, default max(30 s, 6 intervals)). */
  statusExpireMs?: number
  /** The config file the agent was started with (told to `imgmesh doctor`). */
  configFile?: string
}

export interface OperatorSurface {
  readonly gossip: StatusGossip
  readonly dashboard: Dashboard | null
  readonly metrics: AgentMetrics | null
  /** URL of the separate metrics server, when one runs. */
  readonly metricsUrl: string | null
  stop: () => Promise<void>
}

export async function startOperatorSurface (agent: Agent, opts: OperatorOptions = {}): Promise<OperatorSurface> {
  const gossip = new StatusGossip(agent, { intervalMs: opts.statusIntervalMs, expireMs: opts.statusExpireMs, groups: opts.groups })
  let dashboard: Dashboard | null = null
  let metrics: AgentMetrics | null = null
  let metricsServer: { url: string, stop: () => Promise<void> } | null = null
  let local: { stop: () => Promise<void> } | null = null
  const stop = async (): Promise<void> => {
    await local?.stop().catch(() => {})
    await dashboard?.stop().catch(() => {})
    await metricsServer?.stop().catch(() => {})
    metrics?.stop()
    await gossip.stop().catch(() => {})
  }
  try {
    await gossip.start()
    if (opts.dashboard !== undefined || opts.metrics !== undefined) metrics = createAgentMetrics(agent, { gossip })
    if (opts.metrics !== undefined && metrics !== null) {
      metricsServer = await startMetricsServer(metrics, opts.metrics)
      log.info('metrics listening', { url: metricsServer.url })
    }
    if (opts.dashboard !== undefined) {
      dashboard = await startDashboard(agent, gossip, {
        listen: opts.dashboard,
        actions: opts.dashboardActions === true,
        ...(opts.dashboardToken === undefined ? {} : { token: opts.dashboardToken }),
        ...(opts.dashboardHosts === undefined ? {} : { allowedHosts: opts.dashboardHosts }),
        ...(metrics === null ? {} : { metrics })
      })
    }
    local = await startLocalApi(agent.store.dataDir, gossip, () => ({ peer: agent.identity.peerId, dashboard: dashboard?.url ?? null, metrics: metricsServer?.url ?? (dashboard === null ? null : dashboard.url + 'metrics'), statusIntervalMs: gossip.intervalMs, config: opts.configFile ?? null }))
  } catch (err) {
    await stop()
    throw err
  }
  return { gossip, dashboard, metrics, metricsUrl: metricsServer?.url ?? null, stop }
}
