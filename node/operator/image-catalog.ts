/**
 * The image view: every version of every image the local store knows (log with authors and
 * messages, size), the delta of each version against its parent (unique chunks and bytes the
 * parent does not have, computed once per version from the trees when both are in the store),
 * and, from the gossiped node table, which nodes run each version and how many hold it whole.
 */
import type { CID } from 'multiformats/cid'
import type { Agent } from '../agent/agent.ts'
import { loadTree, pieceList } from '../tree/tree-loader.ts'
import type { NodeEntry } from './status-gossip.ts'

export interface VersionInfo {
  number: number
  cid: string
  /** Missing when the version block is not in the store (known by number only). */
  created?: string
  author?: string
  message?: string
  files?: number
  bytes?: number
  chunkBytes?: number
  parent?: number | null
  /** New unique chunks and their bytes against the parent (all of them for a first version); null: trees not local. */
  delta: { chunks: number, bytes: number } | null
  /** Hosts (or peer ids) whose targets run this version. */
  runningOn: Array<{ peer: string, host: string }>
  /** Nodes holding every piece. */
  holders: number
  /** Nodes holding some but not all of it. */
  partial: number
}

export interface ImageInfo { image: string, versions: VersionInfo[] }

interface Static { created: string, author: string, message: string, files: number, bytes: number, chunkBytes: number, parent: CID | null, tree: CID, delta: { chunks: number, bytes: number } | null }

export class ImageCatalog {
  private readonly agent: Agent
  private readonly cache = new Map<string, Static | null>()

  constructor (agent: Agent) { this.agent = agent }

  private async versionStatic (cid: CID): Promise<Static | null> {
    const key = cid.toString()
    const have = this.cache.get(key)
    if (have !== undefined && (have === null || have.delta !== null)) return have
    let v
    try { v = await this.agent.store.getVersion(cid) } catch { this.cache.delete(key); return null }
    const b = v.body
    const s: Static = { created: b.created, author: b.author, message: b.message, files: b.stats.files, bytes: b.stats.bytes, chunkBytes: b.stats.chunkBytes, parent: b.parents[0] ?? null, tree: b.tree, delta: null }
    try {
      const tree = await loadTree(this.agent.store.blocks, b.tree)
      const pieces = pieceList(tree)
      if (s.parent === null) {
        s.delta = { chunks: pieces.length, bytes: pieces.reduce((n, p) => n + p.length, 0) }
      } else {
        const parent = await this.agent.store.getVersion(s.parent)
        const old = new Set(pieceList(await loadTree(this.agent.store.blocks, parent.body.tree, { reuse: [tree] })).map(p => p.cid.toString()))
        const fresh = pieces.filter(p => !old.has(p.cid.toString()))
        s.delta = { chunks: fresh.length, bytes: fresh.reduce((n, p) => n + p.length, 0) }
      }
    } catch {
      // Trees not (all) local yet: try again next time.
    }
    this.cache.set(key, s)
    return s
  }

  async list (nodes: NodeEntry[]): Promise<ImageInfo[]> {
    const out: ImageInfo[] = []
    const images = new Set(await this.agent.store.refs.images())
    for (const n of nodes) for (const h of n.status.held) images.add(h.image)
    for (const image of [...images].sort()) {
      const refs = await this.agent.store.refs.versions(image).catch(() => [])
      const numbers = new Map<number, string>(refs.map(r => [r.number, r.cid.toString()]))
      for (const n of nodes) for (const h of n.status.held) if (h.image === image && !numbers.has(h.number)) numbers.set(h.number, '')
      const versions: VersionInfo[] = []
      for (const [number, cidText] of [...numbers].sort((a, b) => b[0] - a[0])) {
        const ref = refs.find(r => r.number === number)
        const s = ref === undefined ? null : await this.versionStatic(ref.cid)
        const runningOn: VersionInfo['runningOn'] = []
        let holders = 0
        let partial = 0
        for (const n of nodes) {
          if (n.status.deployed.some(d => d.image === image && d.number === number)) runningOn.push({ peer: n.status.peer, host: n.status.host })
          const h = n.status.held.find(x => x.image === image && x.number === number)
          if (h !== undefined) { if (h.percent >= 100) holders++; else if (h.percent > 0) partial++ }
        }
        let parent: number | null | undefined
        if (s !== null) {
          parent = null
          if (s.parent !== null) { const p = refs.find(r => r.cid.equals(s.parent!)); parent = p?.number ?? null }
        }
        versions.push({
          number,
          cid: cidText,
          ...(s === null ? {} : { created: s.created, author: s.author, message: s.message, files: s.files, bytes: s.bytes, chunkBytes: s.chunkBytes, parent }),
          delta: s?.delta ?? null,
          runningOn,
          holders,
          partial
        })
      }
      out.push({ image, versions })
    }
    return out
  }
}
