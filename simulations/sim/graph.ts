/**
 * Who is connected to whom. Node 0 is the origin, 1..N the clients. A small swarm is a full mesh
 * (every agent on one LAN finds every other by mDNS and stays connected); a large one is a random
 * near-regular graph: each client keeps about `degree` neighbours (the connection manager trims
 * beyond its limit), and the origin is connected to `originDegree` random clients.
 *
 * Compressed adjacency: the neighbours of v are adj[off[v] .. off[v+1]); rev[e] is the index of
 * the same connection seen from the other end, so per-connection state (a served stream, a
 * watcher) can live in flat arrays indexed by e.
 */
import { randInt, type Random } from './rng.ts'

export interface Graph {
  nodes: number
  off: Int32Array
  adj: Int32Array
  rev: Int32Array
}

export function buildGraph (clients: number, degree: number, originDegree: number, r: Random): Graph {
  const n = clients + 1
  const lists: number[][] = Array.from({ length: n }, () => [])
  const seen = new Set<number>()
  const link = (a: number, b: number): boolean => {
    if (a === b) return false
    const key = a < b ? a * n + b : b * n + a
    if (seen.has(key)) return false
    seen.add(key)
    lists[a].push(b)
    lists[b].push(a)
    return true
  }
  if (clients <= degree) {
    for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) link(a, b)
  } else {
    // Configuration model on the clients: `degree` stubs each, shuffled and paired; self-loops and
    // repeats are dropped, then the few nodes left short are linked to random partners.
    const stubs = new Int32Array(clients * degree)
    for (let i = 0; i < stubs.length; i++) stubs[i] = 1 + Math.floor(i / degree)
    for (let i = stubs.length - 1; i > 0; i--) {
      const j = randInt(r, i + 1)
      const t = stubs[i]; stubs[i] = stubs[j]; stubs[j] = t
    }
    for (let i = 0; i + 1 < stubs.length; i += 2) link(stubs[i], stubs[i + 1])
    for (let v = 1; v < n; v++) {
      let tries = 0
      while (lists[v].length < degree && tries++ < 20 * degree) {
        const u = 1 + randInt(r, clients)
        if (lists[u].length <= degree) link(v, u)
      }
    }
    const want = Math.min(originDegree, clients)
    let tries = 0
    while (lists[0].length < want && tries++ < 100 * want) link(0, 1 + randInt(r, clients))
  }
  const off = new Int32Array(n + 1)
  for (let v = 0; v < n; v++) off[v + 1] = off[v] + lists[v].length
  const adj = new Int32Array(off[n])
  for (let v = 0; v < n; v++) adj.set(lists[v], off[v])
  const rev = new Int32Array(off[n])
  const pos = new Map<number, number>()
  for (let v = 0; v < n; v++) for (let e = off[v]; e < off[v + 1]; e++) pos.set(v * n + adj[e], e)
  for (let v = 0; v < n; v++) for (let e = off[v]; e < off[v + 1]; e++) rev[e] = pos.get(adj[e] * n + v)!
  return { nodes: n, off, adj, rev }
}
