/**
 * The agent's local control API: HTTP on a unix socket inside the data dir, so several agents
 * with different data dirs run side by side and the CLI finds its own. Every request carries
 * the token from `control.token` (mode 0600): only whoever can read the data dir drives the agent.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile, writeFile, rm, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { ImgmeshError, isErrno, type ErrorCode } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('control')
export const SOCKET_NAME = 'agent.sock'
export const TOKEN_NAME = 'control.token'
const MAX_BODY = 1024 * 1024

export type Handler = (body: Record<string, unknown>, events: EventSink) => Promise<unknown>
/** Streams progress lines to the caller while a long request runs. */
export interface EventSink { event: (value: unknown) => void }

export interface ControlServer { socket: string, close: () => Promise<void> }

export const API_FILE = 'agent.api'

/** The control socket of a data dir: the default one, or where `agent --api PATH` put it. */
export async function controlSocketOf (dataDir: string): Promise<string> {
  try {
    const custom = (await readFile(join(dataDir, API_FILE), 'utf8')).trim()
    if (custom !== '') return custom
  } catch {}
  return join(dataDir, SOCKET_NAME)
}

export async function startControlServer (dataDir: string, handlers: Record<string, Handler>, socketPath?: string): Promise<ControlServer> {
  const socket = socketPath ?? join(dataDir, SOCKET_NAME)
  if (socketPath !== undefined) await writeFile(join(dataDir, API_FILE), socketPath + '\n', { mode: 0o600 })
  else await rm(join(dataDir, API_FILE), { force: true })
  const tokenFile = join(dataDir, TOKEN_NAME)
  const token = randomBytes(32).toString('hex')
  await writeFile(tokenFile, token + '\n', { mode: 0o600 })
  await chmod(tokenFile, 0o600)
  if (await agentAlive(socket)) throw new ImgmeshError('ECONFLICT', `an agent already runs on ${dataDir}`)
  await rm(socket, { force: true })
  const expected = Buffer.from(token)
  const server: Server = createServer((req, res) => { void handle(req, res) })
  async function handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const given = Buffer.from(String(req.headers.authorization ?? '').replace(/^Bearer /, ''))
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'EBADARG', message: 'bad control token' } }))
      return
    }
    const name = (req.url ?? '').replace(/^\/v1\//, '')
    const handler = handlers[name]
    if (req.method !== 'POST' || handler === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'EBADARG', message: `unknown request ${name}` } }))
      return
    }
    let body: Record<string, unknown>
    try {
      body = await readBody(req)
    } catch (err) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'EBADARG', message: (err as Error).message } }))
      return
    }
    // Newline-delimited JSON: {event} lines while working, then one {result} or {error} line.
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    const sink: EventSink = { event: (value) => { res.write(JSON.stringify({ event: value }) + '\n') } }
    try {
      const result = await handler(body, sink)
      res.end(JSON.stringify({ result: result ?? null }) + '\n')
    } catch (err) {
      const code = err instanceof ImgmeshError ? err.code : 'EIO'
      log.debug('request failed', { name, error: (err as Error).message })
      res.end(JSON.stringify({ error: { code, message: (err as Error).message } }) + '\n')
    }
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socket, () => { server.off('error', reject); resolve() })
  })
  await chmod(socket, 0o600)
  return {
    socket,
    close: async () => {
      await new Promise<void>(resolve => { server.close(() => { resolve() }); server.closeAllConnections() })
      await rm(socket, { force: true })
      await rm(tokenFile, { force: true })
      if (socketPath !== undefined) await rm(join(dataDir, API_FILE), { force: true })
    }
  }
}

async function readBody (req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0
  const parts: Buffer[] = []
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY) throw new Error('request too large')
    parts.push(chunk as Buffer)
  }
  const text = Buffer.concat(parts).toString('utf8')
  if (text === '') return {}
  const value = JSON.parse(text) as unknown
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('request body must be a JSON object')
  return value as Record<string, unknown>
}

async function agentAlive (socket: string): Promise<boolean> {
  return await new Promise(resolve => {
    const req = request({ socketPath: socket, path: '/v1/ping', method: 'POST', timeout: 1000, agent: false }, (res) => { res.resume(); resolve(true) })
    req.on('error', () => { resolve(false) })
    req.on('timeout', () => { req.destroy(); resolve(false) })
    req.end()
  })
}

/** The CLI's side: finds the agent of a data dir; null when none runs. */
export class ControlClient {
  readonly socket: string
  private readonly token: string

  private constructor (socket: string, token: string) { this.socket = socket; this.token = token }

  static async find (dataDir: string): Promise<ControlClient | null> {
    const socket = await controlSocketOf(dataDir)
    let token: string
    try {
      token = (await readFile(join(dataDir, TOKEN_NAME), 'utf8')).trim()
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return null
      if (isErrno(err, 'EACCES')) throw new ImgmeshError('ENOAGENT', `cannot read the agent's control token in ${dataDir} (run as root)`)
      throw err
    }
    if (!(await agentAlive(socket))) return null
    return new ControlClient(socket, token)
  }

  static async require (dataDir: string): Promise<ControlClient> {
    const c = await ControlClient.find(dataDir)
    if (c === null) throw new ImgmeshError('ENOAGENT', `no agent runs on ${dataDir}; start one with: imgmesh agent --data-dir ${dataDir}`)
    return c
  }

  /** Sends a request; onEvent gets each progress event; resolves with the result or throws the agent's error. */
  async call<T> (name: string, body: Record<string, unknown> = {}, onEvent?: (e: unknown) => void): Promise<T> {
    return await new Promise<T>((resolve, reject) => {
      const payload = JSON.stringify(body)
      // A connection of its own (agent: false), not one kept alive from an earlier call: the
      // agent closes an idle kept-alive connection after 5 s, and an agent busy for longer did
      // so with this request already sent on it (read ECONNRESET).
      const req = request({ socketPath: this.socket, path: `/v1/${name}`, method: 'POST', agent: false, headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
        let buffer = ''
        let settled = false
        res.setEncoding('utf8')
        res.on('data', (d: string) => {
          buffer += d
          let nl: number
          while ((nl = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, nl)
            buffer = buffer.slice(nl + 1)
            if (line.trim() === '') continue
            const msg = JSON.parse(line) as { event?: unknown, result?: unknown, error?: { code: ErrorCode, message: string } }
            if (msg.event !== undefined) onEvent?.(msg.event)
            else if (msg.error !== undefined) { settled = true; reject(new ImgmeshError(msg.error.code, msg.error.message)) } else { settled = true; resolve(msg.result as T) }
          }
        })
        res.on('end', () => { if (!settled) reject(new ImgmeshError('ENOAGENT', 'the agent closed the connection without an answer')) })
      })
      req.on('error', (err) => { reject(new ImgmeshError('ENOAGENT', `cannot reach the agent: ${err.message}`)) })
      req.end(payload)
    })
  }
}
