/**
 * One logger per component. Quiet by default: only warnings and errors are shown unless
 * IMGMESH_LOG (or --verbose, which sets it) names a level or a list of components.
 * Output is JSON lines when stderr is not a TTY, short text lines otherwise.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error'

const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export interface Logger {
  debug: (msg: string, fields?: Record<string, unknown>) => void
  info: (msg: string, fields?: Record<string, unknown>) => void
  warn: (msg: string, fields?: Record<string, unknown>) => void
  error: (msg: string, fields?: Record<string, unknown>) => void
  enabled: (level: Level) => boolean
}

interface LogConfig { level: Level, components: Set<string> | null, json: boolean, silent: boolean }

function readConfig (): LogConfig {
  const spec = process.env.IMGMESH_LOG ?? ''
  let level: Level = 'warn'
  let components: Set<string> | null = null
  for (const part of spec.split(',').map(s => s.trim()).filter(s => s !== '')) {
    if (part in order) level = part as Level
    else { components ??= new Set(); components.add(part) }
  }
  if (components !== null && spec.split(',').every(p => !(p.trim() in order))) level = 'debug'
  return {
    level,
    components,
    json: process.env.IMGMESH_LOG_FORMAT === 'json' || (process.env.IMGMESH_LOG_FORMAT !== 'text' && process.stderr.isTTY !== true),
    silent: process.env.IMGMESH_LOG === 'silent'
  }
}

let config = readConfig()

/** Re-reads IMGMESH_LOG; the CLI calls it after applying --verbose. */
export function reconfigureLogging (): void { config = readConfig() }

export function createLogger (component: string): Logger {
  const enabled = (level: Level): boolean => {
    if (config.silent) return false
    if (order[level] >= order.warn) return true
    if (order[level] < order[config.level]) return false
    return config.components === null || config.components.has(component) || config.components.has(component.split(':')[0])
  }
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (!enabled(level)) return
    if (config.json) {
      process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, component, msg, ...fields }, jsonSafe) + '\n')
    } else {
      const extra = fields === undefined ? '' : ' ' + Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v, jsonSafe)}`).join(' ')
      process.stderr.write(`${level === 'warn' ? 'warning' : level} [${component}] ${msg}${extra}\n`)
    }
  }
  return {
    debug: (m, f) => { emit('debug', m, f) },
    info: (m, f) => { emit('info', m, f) },
    warn: (m, f) => { emit('warn', m, f) },
    error: (m, f) => { emit('error', m, f) },
    enabled
  }
}

function jsonSafe (_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString()
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex')
  if (value instanceof Error) return { message: value.message, code: (value as { code?: unknown }).code }
  return value
}
