/**
 * The web dashboard an agent serves (`imgmesh agent --dashboard 127.0.0.1:8080`): one static page
 * (dashboard.html: inline CSS, JS and SVG, nothing fetched from elsewhere) fed by JSON and a
 * server-sent event stream.
 *
 *   GET  /                    the page (Content-Security-Policy: only this origin, inline code by nonce)
 *   GET  /api/state           snapshot: this node, every node of the swarm, images, throughput history
 *   GET  /api/events          SSE: `nodes` when the table changes, `sample` every second, `images` on change
 *   GET  /metrics             Prometheus text format (when metrics are on)
 *   POST /api/actions/assign  { group, image, number?, policy, at? }     actions enabled + bearer token
 *   POST /api/actions/rollback { target }                                 actions enabled + bearer token
 *
 * Read-only unless `actions` is set; actions need `Authorization: Bearer <token>`, the token being
 * the one given or the content of `dashboard.token` in the data dir (created 0600 when missing).
 * A bearer header, not a cookie, so another site cannot make a browser act with it. Requests whose
 * Host is a name other than localhost, this host's name or `allowedHosts` are refused, which keeps
 * DNS-rebinding pages from reading the dashboard.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile, writeFile, chmod } from 'node:fs/promises'
import { hostname } from 'node:os'
import { isIP } from 'node:net'
import { join } from 'node:path'
import type { Agent } from '../agent/agent.ts'
import { ImgmeshError, isErrno } from '../errors.ts'
import { createLogger } from '../logger.ts'
import type { StatusGossip, NodeEntry } from './status-gossip.ts'
import { ThroughputHistory } from './throughput.ts'
import { ImageCatalog, type ImageInfo } from './image-catalog.ts'
import type { AgentMetrics } from './metrics.ts'
import { updatesOf, type RollbackLike } from './agent-view.ts'
import { listenOn, parseListen } from './listen.ts'

const log = createLogger('dashboard')
export const DASHBOARD_TOKEN_FILE = 'dashboard.token'
const PAGE = new URL('./dashboard.html', import.meta.url)
const MAX_SSE_CLIENTS = 64
const MAX_BODY = 64 * 1024

export interface DashboardOptions {
  /** HOST:PORT (default 127.0.0.1:8080; port 0 picks one). */
  listen?: string
  /** Allow assign/rollback from the page (default false: read-only). */
  actions?: boolean
  /** Bearer token for actions (default: dashboard.token in the data dir, created when missing). */
  token?: string
  /** Serve /metrics on this server too. */
  metrics?: AgentMetrics
  /** Host names accepted in the Host header besides IP literals, localhost and this host's name. */
  allowedHosts?: string[]
}

export interface Dashboard {
  /** http://host:port/ */
  url: string
  /** The actions token (null when actions are off). */
  token: string | null
  stop: () => Promise<void>
}

export interface NodeView extends Omit<NodeEntry['status'], 'v'> {
  lastSeen: number
  age: number
  offsetMs: number
  self: boolean
}

function nodeView (n: NodeEntry): NodeView {
  const { v: _v, ...s } = n.status
  return { ...s, lastSeen: n.lastSeen, age: Math.max(0, (Date.now() - n.lastSeen) / 1000), offsetMs: n.offsetMs, self: n.self }
}

/** Reads the dashboard token of a data dir, creating it (0600) when missing. */
export async function dashboardToken (dataDir: string): Promise<string> {
  const file = join(dataDir, DASHBOARD_TOKEN_FILE)
  try {
    const t = (await readFile(file, 'utf8')).trim()
    if (t.length >= 16) return t
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new ImgmeshError('EIO', `cannot read ${file}: ${(err as Error).message}`, { path: file, cause: err })
  }
  const t = randomBytes(24).toString('base64url')
  await writeFile(file, t + '\n', { mode: 0o600 })
  await chmod(file, 0o600)
  return t
}

function hostAllowed (header: string | undefined, allowed: Set<string>): boolean {
  if (header === undefined || header === '') return false
  let h = header.toLowerCase()
  if (h.startsWith('[')) h = h.slice(1, h.indexOf(']'))
  else if (h.includes(':')) h = h.slice(0, h.lastIndexOf(':'))
  return isIP(h) !== 0 || allowed.has(h)
}

async function readJsonBody (req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0
  const parts: Buffer[] = []
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY) throw new ImgmeshError('EBADARG', 'request too large')
    parts.push(chunk as Buffer)
  }
  let v: unknown
  try { v = JSON.parse(Buffer.concat(parts).toString('utf8') || '{}') } catch { throw new ImgmeshError('EBADARG', 'request body is not JSON') }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ImgmeshError('EBADARG', 'request body must be a JSON object')
  return v as Record<string, unknown>
}

export async function startDashboard (agent: Agent, gossip: StatusGossip, opts: DashboardOptions = {}): Promise<Dashboard> {
  const template = await readFile(PAGE, 'utf8')
  const actions = opts.actions === true
  const token = actions ? (opts.token ?? await dashboardToken(agent.store.dataDir)) : null
  const expected = token === null ? null : Buffer.from(token)
  const allowed = new Set(['localhost', hostname().toLowerCase(), hostname().toLowerCase().split('.')[0], ...(opts.allowedHosts ?? []).map(h => h.toLowerCase())])
  const history = new ThroughputHistory(gossip)
  const catalog = new ImageCatalog(agent)
  let images: ImageInfo[] = []
  let imagesJson = '[]'
  let imagesAt = 0
  const refreshImages = async (): Promise<boolean> => {
    images = await catalog.list(gossip.nodes())
    imagesAt = Date.now()
    const j = JSON.stringify(images)
    const changed = j !== imagesJson
    imagesJson = j
    return changed
  }
  await refreshImages().catch(() => {})
  history.start()

  const clients = new Set<ServerResponse>()
  const send = (res: ServerResponse, event: string, data: unknown): void => { res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`) }
  const broadcast = (event: string, data: unknown): void => {
    if (clients.size === 0) return
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
    for (const c of clients) c.write(frame)
  }
  // Node table changes are pushed at most once a second; images every 5 s when they changed.
  let nodesDirty = true
  const offChange = gossip.onChange(() => { nodesDirty = true })
  let imagesBusy = false
  const offSample = history.onSample((s) => {
    broadcast('sample', s)
    if (nodesDirty) { nodesDirty = false; broadcast('nodes', gossip.nodes().map(nodeView)) }
    if (!imagesBusy && Date.now() - imagesAt >= 5000) {
      imagesBusy = true
      refreshImages().then(changed => { if (changed) broadcast('images', images) }, () => {}).finally(() => { imagesBusy = false })
    }
  })
  const heartbeat = setInterval(() => { for (const c of clients) c.write(': keep-alive\n\n') }, 15_000)
  heartbeat.unref()

  const snapshot = (): Record<string, unknown> => ({
    self: { peer: agent.identity.peerId, cluster: agent.identity.clusterId, host: hostname(), addresses: agent.addresses() },
    actions,
    gossipIntervalMs: gossip.currentIntervalMs(),
    gossipStaleMs: gossip.currentStaleMs(),
    gossipExpireMs: gossip.currentExpireMs(),
    nodes: gossip.nodes().map(nodeView),
    images,
    history: history.samples
  })

  const json = (res: ServerResponse, code: number, value: unknown): void => {
    res.writeHead(code, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(value))
  }
  const authorised = (req: IncomingMessage): boolean => {
    if (expected === null) return false
    const given = Buffer.from(String(req.headers.authorization ?? '').replace(/^Bearer\s+/i, '').trim())
    return given.length === expected.length && timingSafeEqual(given, expected)
  }

  async function action (name: string, body: Record<string, unknown>): Promise<unknown> {
    if (name === 'assign') {
      const updates = updatesOf(agent)
      if (updates?.assign === undefined) throw new ImgmeshError('EBADARG', 'this agent has no update manager (assignments)')
      const policy = String(body.policy ?? 'stage')
      if (policy !== 'stage' && policy !== 'apply' && policy !== 'apply-at') throw new ImgmeshError('EBADARG', `unknown policy ${policy}`)
      const number = body.number === undefined || body.number === null || body.number === '' ? undefined : Number(body.number)
      if (number !== undefined && (!Number.isSafeInteger(number) || number < 1)) throw new ImgmeshError('EBADARG', 'bad version number')
      return await updates.assign({
        group: String(body.group ?? ''),
        image: String(body.image ?? ''),
        policy,
        ...(number === undefined ? {} : { number }),
        ...(body.at === undefined || body.at === null || body.at === '' ? {} : { at: String(body.at) })
      })
    }
    if (name === 'rollback') {
      const rb = (agent as unknown as RollbackLike).rollback
      if (typeof rb !== 'function') throw new ImgmeshError('EBADARG', 'this agent cannot roll back')
      if (typeof body.target !== 'string' || !body.target.startsWith('/')) throw new ImgmeshError('EBADARG', 'target must be an absolute path')
      return await rb.call(agent, body.target)
    }
    throw new ImgmeshError('EBADARG', `unknown action ${name}`)
  }

  async function handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!hostAllowed(req.headers.host, allowed)) { res.writeHead(421, { 'content-type': 'text/plain' }).end('unknown host name; start the agent with --dashboard-host NAME to allow it\n'); return }
    const path = (req.url ?? '/').split('?')[0]
    if (req.method === 'GET' && (path === '/' || path === '/index.html')) {
      const nonce = randomBytes(16).toString('base64')
      const csp = `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': csp, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' })
      res.end(template.replaceAll('{{NONCE}}', nonce))
      return
    }
    if (req.method === 'GET' && path === '/favicon.ico') { res.writeHead(204).end(); return }
    if (req.method === 'GET' && path === '/api/state') { json(res, 200, snapshot()); return }
    if (req.method === 'GET' && path === '/api/events') {
      if (clients.size >= MAX_SSE_CLIENTS) { json(res, 503, { error: { code: 'EBADARG', message: 'too many dashboard clients' } }); return }
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
      res.write('retry: 2000\n\n')
      send(res, 'state', snapshot())
      clients.add(res)
      req.on('close', () => { clients.delete(res) })
      return
    }
    if (req.method === 'GET' && path === '/metrics') {
      if (opts.metrics === undefined) { res.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are off (imgmesh agent --metrics)\n'); return }
      const text = await opts.metrics.render()
      res.writeHead(200, { 'content-type': opts.metrics.contentType, 'cache-control': 'no-store' }).end(text)
      return
    }
    const m = /^\/api\/actions\/([a-z]+)$/.exec(path)
    if (m !== null) {
      if (req.method !== 'POST') { json(res, 405, { error: { code: 'EBADARG', message: 'use POST' } }); return }
      if (!actions) { json(res, 403, { error: { code: 'EBADARG', message: 'the dashboard is read-only (start the agent with --dashboard-actions)' } }); return }
      if (!authorised(req)) { json(res, 401, { error: { code: 'EBADARG', message: 'bad or missing dashboard token' } }); return }
      try {
        const result = await action(m[1], await readJsonBody(req))
        log.info('dashboard action', { action: m[1] })
        json(res, 200, { result: result ?? null })
      } catch (err) {
        json(res, err instanceof ImgmeshError && err.code === 'EBADARG' ? 400 : 500, { error: { code: err instanceof ImgmeshError ? err.code : 'EIO', message: (err as Error).message } })
      }
      return
    }
    json(res, 404, { error: { code: 'EBADARG', message: `no such page ${path}` } })
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.warn('dashboard request failed', { error: (err as Error).message })
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
      res.end()
    })
  })
  let bound: string
  try {
    bound = await listenOn(server, parseListen(opts.listen ?? '127.0.0.1:8080'))
  } catch (err) {
    history.stop(); offChange(); offSample(); clearInterval(heartbeat)
    throw err
  }
  log.info('dashboard listening', { url: `http://${bound}/`, actions })
  return {
    url: `http://${bound}/`,
    token,
    stop: async () => {
      history.stop()
      offChange()
      offSample()
      clearInterval(heartbeat)
      for (const c of clients) c.end()
      clients.clear()
      await new Promise<void>(resolve => { server.close(() => { resolve() }); server.closeAllConnections() })
    }
  }
}
