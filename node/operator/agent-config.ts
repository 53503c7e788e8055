/**
 * The agent's configuration file (`/etc/imgmesh/agent.yaml`) and environment variables.
 *
 * Every option of `imgmesh agent` can be given three ways; the first found wins:
 *   1. a command-line flag            --upload-limit 50M
 *   2. an environment variable        IMGMESH_UPLOAD_LIMIT=50M
 *   3. the config file                upload-limit: 50M
 * then the built-in default. The file is a small, strict subset of YAML: `key: value` lines,
 * `# comments`, lists as `[a, b]` or as `- item` lines under `key:`, quoted or bare strings,
 * true/false, numbers. Unknown keys and malformed lines are errors (with the line number), so a
 * typo does not silently fall back to a default.
 *
 * With yargs: `.option('config', { config: true, configParser: agentConfigParser(), default: DEFAULT_AGENT_CONFIG })`
 * applies file and environment values below the command line.
 */
import { readFileSync } from 'node:fs'
import { ImgmeshError, isErrno } from '../errors.ts'

export const DEFAULT_AGENT_CONFIG = '/etc/imgmesh/agent.yaml'

type Kind = 'string' | 'list' | 'number' | 'boolean'

export interface AgentConfigKey {
  key: string
  kind: Kind
  env: string
  /** Shown in the sample config. */
  help: string
  /** Example value for the sample config (commented out unless `set`). */
  example: string
  /** Written uncommented in the sample config. */
  set?: boolean
}

/** Every option of `imgmesh agent` that the file and the environment may set. */
export const AGENT_CONFIG_KEYS: readonly AgentConfigKey[] = [
  { key: 'data-dir', kind: 'string', env: 'IMGMESH_DATA_DIR', help: 'Where blocks, refs, keys, the control socket and tokens live.', example: '/var/lib/imgmesh', set: true },
  { key: 'listen', kind: 'list', env: 'IMGMESH_LISTEN', help: 'libp2p listen multiaddrs (TCP). Peers dial these.', example: '[/ip4/0.0.0.0/tcp/4001]', set: true },
  { key: 'bootstrap', kind: 'list', env: 'IMGMESH_BOOTSTRAP', help: 'Peers to join through, each ending in /p2p/<peer id> (`imgmesh keys` on that node prints it). Redialled while the node has few peers.', example: '[/ip4/10.0.0.1/tcp/4001/p2p/12D3KooW...]' },
  { key: 'mdns', kind: 'boolean', env: 'IMGMESH_MDNS', help: 'Find peers of the same cluster on the LAN by mDNS (multicast on every interface).', example: 'true', set: true },
  { key: 'api', kind: 'string', env: 'IMGMESH_API', help: 'Control socket path for the CLI (default: agent.sock in the data dir).', example: '/run/imgmesh/agent.sock' },
  { key: 'peers', kind: 'number', env: 'IMGMESH_PEERS', help: 'Connections the agent dials up to and keeps topped up; it accepts up to three times as many. More cost CPU on every node without making a deployment faster.', example: '16' },
  { key: 'max-in-flight', kind: 'number', env: 'IMGMESH_MAX_IN_FLIGHT', help: 'Block requests in flight per peer while fetching.', example: '32' },
  { key: 'upload-limit', kind: 'string', env: 'IMGMESH_UPLOAD_LIMIT', help: 'Cap on what this node uploads to peers, bytes per second (suffixes k, M, G). Unset: no cap.', example: '50M' },
  { key: 'group', kind: 'list', env: 'IMGMESH_GROUP', help: 'Groups this node belongs to; assignments (`imgmesh assign`) name groups. The first group with an assignment wins.', example: '[lab1]' },
  { key: 'target', kind: 'string', env: 'IMGMESH_TARGET', help: 'Where assigned images are applied (/ for the node\'s own root). Unset: assignments are staged only.', example: '/' },
  { key: 'hook-timeout', kind: 'number', env: 'IMGMESH_HOOK_TIMEOUT', help: 'Seconds a pre/post-apply hook may run.', example: '300' },
  { key: 'keep', kind: 'number', env: 'IMGMESH_KEEP', help: 'Versions kept per image by the agent\'s periodic garbage collection (deployed, previous and assigned ones are always kept).', example: '5' },
  { key: 'dashboard', kind: 'string', env: 'IMGMESH_DASHBOARD', help: 'Serve the web dashboard on HOST:PORT (127.0.0.1:8080 keeps it local; :8080 for every interface). Unset: no dashboard.', example: '127.0.0.1:8080' },
  { key: 'dashboard-actions', kind: 'boolean', env: 'IMGMESH_DASHBOARD_ACTIONS', help: 'Allow assign and rollback from the dashboard, with the bearer token in dashboard.token (data dir, mode 0600). Default: read-only.', example: 'false' },
  { key: 'dashboard-host', kind: 'list', env: 'IMGMESH_DASHBOARD_HOST', help: 'Host names the dashboard answers to besides IP addresses, localhost and this host\'s name (DNS-rebinding guard).', example: '[imgmesh.example.org]' },
  { key: 'metrics', kind: 'string', env: 'IMGMESH_METRICS', help: 'Serve Prometheus /metrics alone on HOST:PORT. With a dashboard, /metrics is also served there.', example: '127.0.0.1:9464' },
  { key: 'status-interval', kind: 'number', env: 'IMGMESH_STATUS_INTERVAL', help: 'Seconds between two gossiped node status messages (the swarm view of the dashboards).', example: '5' },
  { key: 'verbose', kind: 'boolean', env: 'IMGMESH_VERBOSE', help: 'Log what happens (info level; IMGMESH_LOG=debug for more). Logs are JSON lines when stderr is not a terminal (journald).', example: 'false' }
]

export type ConfigValue = string | number | boolean | string[]

function fail (file: string, line: number, why: string): never {
  throw new ImgmeshError('EBADARG', `${file}:${line}: ${why}`)
}

function scalar (text: string): string | number | boolean {
  const t = text.trim()
  if ((t.startsWith('"') && t.endsWith('"') && t.length >= 2)) {
    try { return JSON.parse(t) as string } catch { throw new Error(`bad quoted string ${t}`) }
  }
  if (t.startsWith('\'') && t.endsWith('\'') && t.length >= 2) return t.slice(1, -1).replaceAll('\'\'', '\'')
  if (/^(true|yes|on)$/i.test(t)) return true
  if (/^(false|no|off)$/i.test(t)) return false
  if (/^-?[0-9]+(\.[0-9]+)?$/.test(t)) return Number(t)
  return t
}

/** Strips a trailing comment that is not inside quotes. */
function stripComment (line: string): string {
  let quote: string | null = null
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]
    if (quote !== null) { if (ch === quote) quote = null; continue }
    if (ch === '"' || ch === '\'') quote = ch
    else if (ch === '#' && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i)
  }
  return line
}

function coerce (file: string, line: number, spec: AgentConfigKey, v: string | number | boolean | Array<string | number | boolean>): ConfigValue {
  switch (spec.kind) {
    case 'list': return (Array.isArray(v) ? v : [v]).map(String)
    case 'string':
      if (Array.isArray(v) || typeof v === 'boolean') fail(file, line, `${spec.key} takes one value`)
      return String(v)
    case 'number':
      if (typeof v !== 'number') fail(file, line, `${spec.key} takes a number`)
      return v
    case 'boolean':
      if (typeof v !== 'boolean') fail(file, line, `${spec.key} takes true or false`)
      return v
  }
}

/** Parses the agent config file text (the YAML subset above) into option values keyed like the flags. */
export function parseAgentConfig (text: string, file = 'agent.yaml'): Record<string, ConfigValue> {
  const out: Record<string, ConfigValue> = {}
  const keys = new Map(AGENT_CONFIG_KEYS.map(k => [k.key, k]))
  let listKey: { spec: AgentConfigKey, line: number, items: string[] } | null = null
  const flush = (): void => {
    if (listKey !== null) { out[listKey.spec.key] = listKey.items; listKey = null }
  }
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1
    const raw = stripComment(lines[i]).replace(/\s+$/, '')
    if (raw.trim() === '' || raw.trim() === '---') continue
    const item = /^\s+-\s+(.*)$/.exec(raw) ?? /^-\s+(.*)$/.exec(raw)
    if (item !== null) {
      if (listKey === null) fail(file, n, 'a list item outside a list (write "key:" on the line before)')
      let v
      try { v = scalar(item[1]) } catch (err) { fail(file, n, (err as Error).message) }
      listKey.items.push(String(v))
      continue
    }
    flush()
    if (/^\s/.test(raw)) fail(file, n, 'unexpected indentation (only "- item" lines may be indented)')
    const m = /^([A-Za-z][A-Za-z0-9_-]*)\s*:(?:\s+(.*))?$/.exec(raw)
    if (m === null) fail(file, n, 'expected "key: value"')
    const key = m[1].replaceAll('_', '-')
    const spec = keys.get(key)
    if (spec === undefined) fail(file, n, `unknown option ${m[1]} (known: ${[...keys.keys()].join(', ')})`)
    if (key in out) fail(file, n, `${key} given twice`)
    const value = (m[2] ?? '').trim()
    if (value === '') {
      if (spec.kind !== 'list') fail(file, n, `${key} needs a value`)
      listKey = { spec, line: n, items: [] }
      continue
    }
    let v: string | number | boolean | Array<string | number | boolean>
    try {
      if (value.startsWith('[')) {
        if (!value.endsWith(']')) throw new Error('unterminated [list]')
        const inner = value.slice(1, -1).trim()
        v = inner === '' ? [] : inner.split(',').map(scalar)
      } else {
        v = scalar(value)
      }
    } catch (err) { fail(file, n, (err as Error).message) }
    out[key] = coerce(file, n, spec, v)
  }
  flush()
  return out
}

/** Option values from IMGMESH_* environment variables (lists: separated by commas or spaces). */
export function agentConfigFromEnv (env: NodeJS.ProcessEnv = process.env): Record<string, ConfigValue> {
  const out: Record<string, ConfigValue> = {}
  for (const spec of AGENT_CONFIG_KEYS) {
    const raw = env[spec.env]
    if (raw === undefined || raw.trim() === '') continue
    const where = `environment variable ${spec.env}`
    switch (spec.kind) {
      case 'list': out[spec.key] = raw.split(/[\s,]+/).filter(s => s !== ''); break
      case 'string': out[spec.key] = raw.trim(); break
      case 'number': {
        const n = Number(raw)
        if (!Number.isFinite(n)) throw new ImgmeshError('EBADARG', `${where} is not a number: ${raw}`)
        out[spec.key] = n
        break
      }
      case 'boolean': {
        const v = scalar(raw)
        if (typeof v !== 'boolean') throw new ImgmeshError('EBADARG', `${where} is not true or false: ${raw}`)
        out[spec.key] = v
        break
      }
    }
  }
  return out
}

/** Reads a config file; a missing file at the default path is no error (an empty config). */
export function loadAgentConfig (file: string, opts: { optional?: boolean } = {}): Record<string, ConfigValue> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if (isErrno(err, 'ENOENT') && opts.optional === true) return {}
    throw new ImgmeshError('EBADARG', `cannot read config file ${file}: ${(err as Error).message}`, { path: file, cause: err })
  }
  return parseAgentConfig(text, file)
}

/**
 * A yargs configParser: file values, overridden by environment variables; yargs puts both under
 * the command line. The default path may be absent.
 */
export function agentConfigParser (env: NodeJS.ProcessEnv = process.env): (path: string) => Record<string, ConfigValue> {
  return (path) => ({ ...loadAgentConfig(path, { optional: path === DEFAULT_AGENT_CONFIG }), ...agentConfigFromEnv(env) })
}

/** The sample /etc/imgmesh/agent.yaml: every option, documented, with its flag and variable. */
export function sampleAgentConfig (): string {
  const out = [
    '# imgmesh agent configuration (read by `imgmesh agent`, default path /etc/imgmesh/agent.yaml;',
    '# another file: imgmesh agent --config FILE, or IMGMESH_CONFIG=FILE).',
    '#',
    '# Each option can also be given as a flag (--name) or an environment variable (IMGMESH_NAME);',
    '# a flag beats the variable, which beats this file. Syntax: "key: value", lists as [a, b] or',
    '# as "- item" lines under "key:", # comments. Unknown keys are errors.',
    ''
  ]
  for (const k of AGENT_CONFIG_KEYS) {
    const words = k.help.split(' ')
    let line = '#'
    for (const w of words) {
      if (line.length + w.length + 1 > 96) { out.push(line); line = '#' }
      line += ' ' + w
    }
    out.push(line)
    out.push(`#   flag --${k.key}, environment ${k.env}`)
    out.push(`${k.set === true ? '' : '# '}${k.key}: ${k.example}`)
    out.push('')
  }
  return out.join('\n')
}
