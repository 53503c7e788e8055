/**
 * The systemd unit of the agent and its installation (`imgmesh install-service`): the unit goes
 * to /etc/systemd/system/imgmesh-agent.service, the sample config to /etc/imgmesh/agent.yaml
 * (never over an existing one unless forced). The unit runs the CLI with the Node.js that runs
 * this command (Node 22; the system's `node` may be older).
 */
import { mkdir, writeFile, access, realpath } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULT_AGENT_CONFIG, sampleAgentConfig } from './agent-config.ts'
import { ImgmeshError } from '../errors.ts'

export const UNIT_NAME = 'imgmesh-agent.service'
export const DEFAULT_UNIT_DIR = '/etc/systemd/system'

export interface UnitOptions {
  /** Node.js binary (default: the one running now). */
  node?: string
  /** The imgmesh CLI script (default: cli/imgmesh.ts of this checkout). */
  cli?: string
  /** Config file the agent reads (default /etc/imgmesh/agent.yaml). */
  config?: string
}

export async function defaultCliPath (): Promise<string> {
  const p = fileURLToPath(new URL('../../cli/imgmesh.ts', import.meta.url))
  return await realpath(p).catch(() => p)
}

function quote (arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : '"' + arg.replace(/(["\\$`])/g, '\\$1') + '"'
}

export async function systemdUnit (opts: UnitOptions = {}): Promise<string> {
  const node = opts.node ?? await realpath(process.execPath).catch(() => process.execPath)
  const cli = opts.cli ?? await defaultCliPath()
  const config = opts.config ?? DEFAULT_AGENT_CONFIG
  return `# imgmesh agent, written by \`imgmesh install-service\`.
# Options live in ${config} (every option documented there); flags added to ExecStart and
# IMGMESH_* variables (Environment= or an EnvironmentFile) override it.
[Unit]
Description=imgmesh agent (peer-to-peer OS image store, swarm and deploys)
Documentation=file://${join(cli, '..', '..', 'docs', 'operations.md')}
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
Type=simple
ExecStart=${quote(node)} ${quote(cli)} agent --config ${quote(config)}
# JSON log lines to the journal (quiet by default; IMGMESH_LOG=info or verbose: true for more).
Environment=IMGMESH_LOG_FORMAT=json
Restart=on-failure
RestartSec=5s
# SIGTERM: the agent closes its swarm connections and sockets; a deploy in progress resumes
# at the next start (nothing half-written is left under a real name).
KillSignal=SIGTERM
TimeoutStopSec=30s
LimitNOFILE=65536
# The agent writes whole root filesystems (owners, device nodes, capabilities) into its
# targets, so it runs as root without filesystem sandboxing; it keeps its keys and tokens
# in the data dir with mode 0600.
UMask=0022

[Install]
WantedBy=multi-user.target
`
}

export interface InstallOptions extends UnitOptions {
  /** Where the unit goes (default /etc/systemd/system). */
  unitDir?: string
  /** Write the sample config here when no file exists there (default: the `config` path). */
  writeConfig?: boolean
  /** Replace an existing config file. */
  force?: boolean
}

export interface InstallResult { unit: string, config: string, configWritten: boolean, next: string[] }

async function exists (p: string): Promise<boolean> {
  try { await access(p); return true } catch { return false }
}

export async function installService (opts: InstallOptions = {}): Promise<InstallResult> {
  const unitDir = opts.unitDir ?? DEFAULT_UNIT_DIR
  const config = opts.config ?? DEFAULT_AGENT_CONFIG
  const unit = join(unitDir, UNIT_NAME)
  try {
    await mkdir(unitDir, { recursive: true })
    await writeFile(unit, await systemdUnit({ ...opts, config }), { mode: 0o644 })
  } catch (err) {
    throw new ImgmeshError('EIO', `cannot write ${unit}: ${(err as Error).message} (run as root, or --unit-dir DIR)`, { path: unit, cause: err })
  }
  let configWritten = false
  if (opts.writeConfig !== false && (opts.force === true || !(await exists(config)))) {
    try {
      await mkdir(join(config, '..'), { recursive: true })
      await writeFile(config, sampleAgentConfig(), { mode: 0o644 })
      configWritten = true
    } catch (err) {
      throw new ImgmeshError('EIO', `cannot write ${config}: ${(err as Error).message}`, { path: config, cause: err })
    }
  }
  const name = UNIT_NAME.replace(/\.service$/, '')
  return {
    unit,
    config,
    configWritten,
    next: unitDir === DEFAULT_UNIT_DIR
      ? [`edit ${config} (bootstrap, group, target, dashboard)`, `systemctl daemon-reload && systemctl enable --now ${name}`, `journalctl -u ${name} -f`, 'imgmesh doctor']
      : [`copy ${unit} to ${DEFAULT_UNIT_DIR}/, then: systemctl daemon-reload && systemctl enable --now ${name}`]
  }
}
