/**
 * `imgmesh doctor`: checks what an agent needs and says what to fix. Each check gives ok, warn,
 * fail or skip with a one-line detail and, when not ok, the fix. Any fail makes the command
 * exit 1. Checks: Node.js version (this one and the `node` on PATH), config file, data dir
 * (exists, writable, not group/world-writable), key files (present, mode 0600), cluster key,
 * trusted publishers, the running agent and its peers (control socket), clock offset to the
 * peers (from the gossiped node status, through the agent's operator socket), free disk space.
 */
import { access, stat, statfs } from 'node:fs/promises'
import { constants, existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { ControlClient } from '../control/control-api.ts'
import { clusterKeyId, loadClusterKey } from '../swarm/cluster-key.ts'
import { TrustList } from '../keys/trust.ts'
import { CLUSTER_KEY, PEER_KEY } from '../agent/node-identity.ts'
import { DEFAULT_AGENT_CONFIG, loadAgentConfig } from './agent-config.ts'
import { queryLocalApi, type NodeEntry, type OperatorInfo } from './local-api.ts'

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip'
export interface Check { check: string, status: CheckStatus, detail: string, fix?: string }

export interface DoctorOptions {
  dataDir: string
  /** Config file to check (default /etc/imgmesh/agent.yaml, skipped when absent). */
  config?: string
  /** Minimum free bytes on the data dir's filesystem before it fails (default 1 GiB). */
  minFreeBytes?: number
  /** Clock offset to peers that is flagged (ms, default 2000). */
  maxSkewMs?: number
  /** `node` on PATH is checked too (default true). */
  checkPathNode?: boolean
}

const GiB = 1024 ** 3

function fmt (n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++ }
  return `${i === 0 ? n : n.toFixed(1)} ${u[i]}`
}

export function nodeVersionCheck (version = process.versions.node, execPath = process.execPath): Check {
  const [major, minor] = version.split('.').map(Number)
  if (major > 22 || (major === 22 && minor >= 18)) return { check: 'node', status: 'ok', detail: `Node.js ${version} (${execPath})` }
  if (major === 22) return { check: 'node', status: 'warn', detail: `Node.js ${version}: type stripping needs 22.18 or newer to run without flags`, fix: 'npm ci installs Node 22 into node_modules/.bin; run imgmesh through npx or that binary' }
  return { check: 'node', status: 'fail', detail: `Node.js ${version} is too old (libp2p 3 needs Node 22)`, fix: 'npm ci installs Node 22 into node_modules/.bin; run imgmesh through npx or that binary' }
}

function pathNodeCheck (): Check {
  let v: string
  try { v = execFileSync('node', ['--version'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).trim() } catch {
    return { check: 'node on PATH', status: 'skip', detail: 'no `node` on PATH (the service uses the absolute path of Node 22)' }
  }
  const major = Number(v.replace(/^v/, '').split('.')[0])
  if (major >= 22) return { check: 'node on PATH', status: 'ok', detail: `${v}` }
  return { check: 'node on PATH', status: 'warn', detail: `\`node\` on PATH is ${v}: \`imgmesh\` run by its #! line would fail`, fix: 'use npx imgmesh, node_modules/.bin/node cli/imgmesh.ts, or the unit written by imgmesh install-service' }
}

async function configCheck (file: string, explicit: boolean): Promise<Check> {
  if (!existsSync(file)) {
    return explicit
      ? { check: 'config', status: 'fail', detail: `${file} does not exist`, fix: 'imgmesh install-service writes a documented sample' }
      : { check: 'config', status: 'skip', detail: `no ${file} (flags and IMGMESH_* variables only)` }
  }
  try {
    const c = loadAgentConfig(file)
    return { check: 'config', status: 'ok', detail: `${file}: ${Object.keys(c).length} option(s) set` }
  } catch (err) {
    return { check: 'config', status: 'fail', detail: (err as Error).message, fix: `fix ${file} (every option is documented in the sample: imgmesh install-service --print-config)` }
  }
}

async function dataDirChecks (dataDir: string): Promise<{ checks: Check[], initialised: boolean }> {
  const checks: Check[] = []
  let st
  try { st = await stat(dataDir) } catch {
    checks.push({ check: 'data dir', status: 'fail', detail: `${dataDir} does not exist`, fix: `imgmesh init --data-dir ${dataDir} (or --cluster-key FILE to join a cluster)` })
    return { checks, initialised: false }
  }
  if (!st.isDirectory()) {
    checks.push({ check: 'data dir', status: 'fail', detail: `${dataDir} is not a directory`, fix: 'point --data-dir (or data-dir in the config) at a directory' })
    return { checks, initialised: false }
  }
  try { await access(dataDir, constants.W_OK | constants.X_OK) } catch {
    checks.push({ check: 'data dir', status: 'fail', detail: `${dataDir} is not writable by uid ${process.getuid?.() ?? '?'}`, fix: 'run as root (the agent runs as root), or chown the data dir' })
    return { checks, initialised: false }
  }
  if ((st.mode & 0o022) !== 0) checks.push({ check: 'data dir', status: 'fail', detail: `${dataDir} is group- or world-writable (mode ${(st.mode & 0o7777).toString(8)})`, fix: `chmod go-w ${dataDir}` })
  else checks.push({ check: 'data dir', status: 'ok', detail: `${dataDir} (mode ${(st.mode & 0o7777).toString(8)}, owner uid ${st.uid})` })

  let initialised = true
  for (const name of [CLUSTER_KEY, PEER_KEY, 'publisher.key']) {
    const p = join(dataDir, name)
    let ks
    try { ks = await stat(p) } catch {
      if (name !== 'publisher.key') initialised = false
      checks.push({ check: name, status: 'fail', detail: `${p} is missing`, fix: name === CLUSTER_KEY ? `imgmesh init --cluster-key FILE --data-dir ${dataDir} (FILE: the cluster.key of any node of the cluster)` : `imgmesh init --data-dir ${dataDir}` })
      continue
    }
    if ((ks.mode & 0o077) !== 0) checks.push({ check: name, status: 'fail', detail: `${p} is readable by others (mode ${(ks.mode & 0o777).toString(8)})`, fix: `chmod 600 ${p}` })
    else checks.push({ check: name, status: 'ok', detail: `mode ${(ks.mode & 0o777).toString(8)}` })
  }
  if (existsSync(join(dataDir, CLUSTER_KEY))) {
    try {
      const key = await loadClusterKey(join(dataDir, CLUSTER_KEY))
      checks.push({ check: 'cluster key', status: 'ok', detail: `cluster ${clusterKeyId(key)} (every node must show the same id)` })
    } catch (err) {
      initialised = false
      checks.push({ check: 'cluster key', status: 'fail', detail: (err as Error).message, fix: 'copy the cluster.key of a working node again (imgmesh init --cluster-key FILE in a new data dir)' })
    }
  }
  try {
    const trust = await new TrustList(join(dataDir, 'trusted.json')).load()
    const n = trust.list().length
    checks.push(n === 0
      ? { check: 'trusted publishers', status: 'warn', detail: 'no publisher key is trusted: every version will be refused', fix: 'imgmesh keys trust <publisher key of the node that captures images>' }
      : { check: 'trusted publishers', status: 'ok', detail: `${n} key(s)` })
  } catch (err) {
    checks.push({ check: 'trusted publishers', status: 'fail', detail: (err as Error).message, fix: 'repair or remove trusted.json, then imgmesh keys trust KEY' })
  }
  return { checks, initialised }
}

async function agentChecks (dataDir: string, maxSkewMs: number): Promise<Check[]> {
  let client: ControlClient | null
  try { client = await ControlClient.find(dataDir) } catch (err) {
    return [{ check: 'agent', status: 'fail', detail: (err as Error).message, fix: 'run imgmesh doctor as root' }]
  }
  if (client === null) {
    return [
      { check: 'agent', status: 'warn', detail: `no agent runs on ${dataDir}`, fix: 'systemctl start imgmesh-agent (or imgmesh agent)' },
      { check: 'peers', status: 'skip', detail: 'needs a running agent' },
      { check: 'clock', status: 'skip', detail: 'needs a running agent' }
    ]
  }
  const checks: Check[] = []
  const s = await client.call<{ peerId: string, addresses: string[], peers: unknown[], banned?: unknown[] }>('status')
  checks.push({ check: 'agent', status: 'ok', detail: `peer ${s.peerId}, listening on ${s.addresses.length} address(es)` })
  checks.push(s.peers.length === 0
    ? { check: 'peers', status: 'warn', detail: 'the agent is connected to no peer', fix: 'give it a bootstrap address (bootstrap: in the config, /p2p/<id> from `imgmesh status` on another node), check that its TCP port is open, that both nodes share the cluster key, or turn on mdns on a LAN' }
    : { check: 'peers', status: 'ok', detail: `${s.peers.length} connected${(s.banned?.length ?? 0) > 0 ? `, ${s.banned!.length} banned for bad blocks` : ''}` })
  const nodes = await queryLocalApi<NodeEntry[]>(dataDir, 'nodes')
  if (nodes === null) {
    checks.push({ check: 'clock', status: 'skip', detail: 'the agent has no operator socket (older agent?)' })
  } else {
    const others = nodes.filter(n => !n.self)
    if (others.length === 0) checks.push({ check: 'clock', status: 'skip', detail: 'no peer status heard yet' })
    else {
      // The offset includes the gossip delay (milliseconds on a LAN); the median is robust to one bad clock.
      const offsets = others.map(n => n.offsetMs).sort((a, b) => a - b)
      const median = offsets[Math.floor(offsets.length / 2)]
      const worst = others.reduce((w, n) => Math.abs(n.offsetMs) > Math.abs(w.offsetMs) ? n : w)
      if (Math.abs(median) > maxSkewMs) checks.push({ check: 'clock', status: 'warn', detail: `this node's clock is ${(median / 1000).toFixed(1)} s off the median of ${others.length} peer(s)`, fix: 'run an NTP client (systemd-timesyncd, chrony): assignment times and apply-at schedules compare clocks' })
      else if (Math.abs(worst.offsetMs) > maxSkewMs) checks.push({ check: 'clock', status: 'warn', detail: `peer ${worst.status.host} (${worst.status.peer.slice(-8)}) is ${(-worst.offsetMs / 1000).toFixed(1)} s off this node`, fix: `run an NTP client on ${worst.status.host}` })
      else checks.push({ check: 'clock', status: 'ok', detail: `within ${(Math.max(...offsets.map(Math.abs)) / 1000).toFixed(2)} s of ${others.length} peer(s)` })
    }
  }
  return checks
}

async function diskCheck (dataDir: string, minFree: number): Promise<Check> {
  let s
  try { s = await statfs(existsSync(dataDir) ? dataDir : join(dataDir, '..')) } catch (err) {
    return { check: 'disk', status: 'skip', detail: `cannot statfs ${dataDir}: ${(err as Error).message}` }
  }
  const free = s.bavail * s.bsize
  const total = s.blocks * s.bsize
  const detail = `${fmt(free)} free of ${fmt(total)} on the data dir's filesystem`
  if (free < minFree) return { check: 'disk', status: 'fail', detail, fix: `free space (imgmesh rm NAME@N && imgmesh gc drops old versions) or move the data dir to a larger filesystem; at least ${fmt(minFree)} is needed` }
  if (free < 5 * GiB || free < total * 0.05) return { check: 'disk', status: 'warn', detail, fix: 'an image version needs its size in free space while it is fetched; drop old versions with imgmesh rm + imgmesh gc' }
  return { check: 'disk', status: 'ok', detail }
}

export async function runDoctor (opts: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = [nodeVersionCheck()]
  if (opts.checkPathNode !== false) checks.push(pathNodeCheck())
  // Without --config: the file the running agent was started with, else the default path.
  const running = opts.config === undefined ? await queryLocalApi<OperatorInfo>(opts.dataDir, 'info', 1000) : null
  const config = opts.config ?? running?.config ?? undefined
  checks.push(await configCheck(config ?? DEFAULT_AGENT_CONFIG, config !== undefined))
  const dd = await dataDirChecks(opts.dataDir)
  checks.push(...dd.checks)
  if (dd.initialised) checks.push(...await agentChecks(opts.dataDir, opts.maxSkewMs ?? 2000))
  else checks.push({ check: 'agent', status: 'skip', detail: 'the data dir is not initialised' })
  checks.push(await diskCheck(opts.dataDir, opts.minFreeBytes ?? GiB))
  return checks
}

/** Text lines for people: status, check, detail, then the fix indented. */
export function formatChecks (checks: Check[]): string[] {
  const label: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', skip: 'skip' }
  const width = Math.max(...checks.map(c => c.check.length))
  const out: string[] = []
  for (const c of checks) {
    out.push(`${label[c.status]}  ${c.check.padEnd(width)}  ${c.detail}`)
    if (c.fix !== undefined && c.status !== 'ok') out.push(`${' '.repeat(width + 8)}→ ${c.fix}`)
  }
  const fails = checks.filter(c => c.status === 'fail').length
  const warns = checks.filter(c => c.status === 'warn').length
  out.push(fails === 0 ? (warns === 0 ? 'all checks passed' : `no failure, ${warns} warning(s)`) : `${fails} check(s) failed, ${warns} warning(s)`)
  return out
}

