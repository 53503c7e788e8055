/**
 * Operator commands: `install-service` (systemd unit + sample config) and `doctor` (checks and
 * fixes). Also the agent's operator options (dashboard, metrics, status gossip, config file) and
 * their start-up, for the `agent` command to use:
 *
 *   builder:  (c) => agentOperatorOptions(c.option(...))
 *   handler:  const operator = await startOperatorForArgs(agent, a)  ...  await operator.stop()
 */
import type { Argv } from 'yargs'
import type { Agent } from '../../node/agent/agent.ts'
import { DEFAULT_AGENT_CONFIG, agentConfigParser, sampleAgentConfig } from '../../node/operator/agent-config.ts'
import { startOperatorSurface, type OperatorSurface } from '../../node/operator/surface.ts'
import { installService, systemdUnit, DEFAULT_UNIT_DIR, UNIT_NAME } from '../../node/operator/systemd.ts'
import { formatChecks, runDoctor } from '../../node/operator/doctor.ts'
import { ImgmeshError } from '../../node/errors.ts'
import { emit } from '../output.ts'
import type { GlobalArgs } from '../imgmesh.ts'

export interface OperatorArgs {
  config?: string
  dashboard?: string
  dashboardActions: boolean
  dashboardHost?: string[]
  metrics?: string
  statusInterval: number
}

/** The agent command's operator options, and its config file (/etc/imgmesh/agent.yaml + IMGMESH_* variables). */
export function agentOperatorOptions<T> (c: Argv<T>): Argv<T & OperatorArgs> {
  return c
    .option('config', {
      type: 'string',
      default: process.env.IMGMESH_CONFIG ?? DEFAULT_AGENT_CONFIG,
      config: true,
      configParser: agentConfigParser(),
      describe: 'config file (YAML subset; every option of this command; env IMGMESH_CONFIG). Flags beat IMGMESH_* variables, which beat the file'
    })
    .option('dashboard', { type: 'string', describe: 'serve the web dashboard on HOST:PORT (e.g. 127.0.0.1:8080)' })
    .option('dashboard-actions', { type: 'boolean', default: false, describe: 'allow assign/rollback from the dashboard, with the token in dashboard.token (data dir)' })
    .option('dashboard-host', { type: 'string', array: true, describe: 'host name the dashboard answers to (besides IPs, localhost, this host\'s name)' })
    .option('metrics', { type: 'string', describe: 'serve Prometheus /metrics on HOST:PORT (also on the dashboard server when there is one)' })
    .option('status-interval', { type: 'number', default: 5, describe: 'seconds between two gossiped node status messages' }) as unknown as Argv<T & OperatorArgs>
}

/** Starts the operator surface for the `agent` command's arguments. */
export async function startOperatorForArgs (agent: Agent, a: OperatorArgs & { group?: string[] }): Promise<OperatorSurface> {
  if (!(a.statusInterval >= 0.2 && a.statusInterval <= 3600)) throw new ImgmeshError('EBADARG', '--status-interval must be between 0.2 and 3600 seconds')
  const surface = await startOperatorSurface(agent, {
    ...(a.dashboard === undefined ? {} : { dashboard: a.dashboard }),
    dashboardActions: a.dashboardActions,
    ...(a.dashboardHost === undefined ? {} : { dashboardHosts: a.dashboardHost }),
    ...(a.metrics === undefined ? {} : { metrics: a.metrics }),
    ...(a.group === undefined ? {} : { groups: a.group }),
    ...(a.config === undefined ? {} : { configFile: a.config }),
    statusIntervalMs: Math.round(a.statusInterval * 1000)
  })
  if (surface.dashboard !== null) {
    process.stdout.write(`dashboard ${surface.dashboard.url}${surface.dashboard.token === null ? '' : ` (actions: token in ${agent.store.dataDir}/dashboard.token)`}\n`)
  }
  if (surface.metricsUrl !== null) process.stdout.write(`metrics ${surface.metricsUrl}\n`)
  return surface
}

export function serviceCommands (y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command('install-service', 'write a systemd unit for the agent and a documented sample config (/etc/imgmesh/agent.yaml)', (c) => c
      .option('print', { type: 'boolean', default: false, describe: 'print the unit instead of writing it' })
      .option('print-config', { type: 'boolean', default: false, describe: 'print the sample config instead of writing anything' })
      .option('unit-dir', { type: 'string', default: DEFAULT_UNIT_DIR, describe: `where ${UNIT_NAME} goes` })
      .option('config', { type: 'string', default: DEFAULT_AGENT_CONFIG, describe: 'config file the unit points the agent at (the sample is written there when absent)' })
      .option('sample', { type: 'boolean', default: true, describe: 'write the sample config when none exists (--no-sample: do not)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing config file with the sample' }),
    async (a) => {
      if (a.printConfig) { process.stdout.write(sampleAgentConfig()); return }
      if (a.print) {
        const unit = await systemdUnit({ config: a.config })
        if (a.json) emit(a, { unit: UNIT_NAME, text: unit }, () => '')
        else process.stdout.write(unit)
        return
      }
      const r = await installService({ unitDir: a.unitDir, config: a.config, writeConfig: a.sample, force: a.force })
      emit(a, r, () => [
        `wrote ${r.unit}`,
        r.configWritten ? `wrote ${r.config} (sample: every option documented)` : a.sample ? `kept ${r.config} (exists; --force replaces it with the sample)` : 'no sample config written (--no-sample)',
        'next:',
        ...r.next.map(s => `  ${s}`)
      ])
    })
    .command('doctor', 'check this node (Node.js, config, data dir and keys, agent and peers, clock, disk) and say what to fix', (c) => c
      .option('config', { type: 'string', describe: `agent config file to check (default ${DEFAULT_AGENT_CONFIG} when present)` })
      .option('min-free', { type: 'number', default: 1, describe: 'GiB of free disk below which the check fails' }),
    async (a) => {
      const checks = await runDoctor({ dataDir: a.dataDir, ...(a.config === undefined ? {} : { config: a.config }), minFreeBytes: a.minFree * 1024 ** 3 })
      const failed = checks.some(c => c.status === 'fail')
      emit(a, { ok: !failed, checks }, () => formatChecks(checks))
      if (failed) process.exitCode = 1
    })
}
