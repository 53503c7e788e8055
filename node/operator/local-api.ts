/**
 * A small read-only socket next to the control socket (`operator.sock` in the data dir, mode
 * 0600) for local tools: `imgmesh doctor` reads the gossiped node table from it (to compare
 * clocks with the peers) and where the dashboard and metrics listen. GET /nodes, GET /info.
 */
import { createServer, request, type Server } from 'node:http'
import { chmod, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { StatusGossip, NodeEntry } from './status-gossip.ts'

export const OPERATOR_SOCKET = 'operator.sock'

export interface OperatorInfo { peer: string, dashboard: string | null, metrics: string | null, statusIntervalMs: number, config: string | null }

export async function startLocalApi (dataDir: string, gossip: StatusGossip, info: () => OperatorInfo): Promise<{ stop: () => Promise<void> }> {
  const path = join(dataDir, OPERATOR_SOCKET)
  await rm(path, { force: true })
  const server: Server = createServer((req, res) => {
    const send = (v: unknown): void => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(v)) }
    if (req.method === 'GET' && req.url === '/nodes') send(gossip.nodes())
    else if (req.method === 'GET' && req.url === '/info') send(info())
    else res.writeHead(404).end()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => { server.off('error', reject); resolve() })
  })
  await chmod(path, 0o600)
  return {
    stop: async () => {
      await new Promise<void>(resolve => { server.close(() => { resolve() }); server.closeAllConnections() })
      await rm(path, { force: true })
    }
  }
}

/** Reads from a running agent's operator socket; null when none answers. */
export async function queryLocalApi<T> (dataDir: string, what: 'nodes' | 'info', timeoutMs = 3000): Promise<T | null> {
  return await new Promise((resolve) => {
    const req = request({ socketPath: join(dataDir, OPERATOR_SOCKET), path: `/${what}`, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => { try { resolve(res.statusCode === 200 ? JSON.parse(body) as T : null) } catch { resolve(null) } })
    })
    req.on('error', () => { resolve(null) })
    req.on('timeout', () => { req.destroy(); resolve(null) })
    req.end()
  })
}

export type { NodeEntry }
