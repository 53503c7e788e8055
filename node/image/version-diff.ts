/** The difference of two versions of an image: paths added, removed, changed, and the bytes a deploy would move. */
import type { CID } from 'multiformats/cid'
import type { BlockGetter } from '../store/block-store.ts'
import { loadTree, nameKey, walkTree, pieceList, type DirNode } from '../tree/tree-loader.ts'
import { entriesEqual, sameContent, type TreeEntry } from '../../protocols/tree.ts'
import { joinPath, showPath } from '../tree/entry-metadata.ts'

export interface PathChange { path: string, type: string, kind: 'added' | 'removed' | 'changed' | 'attributes' }

export interface VersionDiff {
  added: PathChange[]
  removed: PathChange[]
  changed: PathChange[]
  /** Chunks of the new version missing from the old one: what a deploy of new over old moves. */
  newChunks: number
  newBytes: number
}

export async function diffVersions (blocks: BlockGetter, oldTree: CID, newTree: CID): Promise<VersionDiff> {
  const b = await loadTree(blocks, newTree)
  return diffTrees(await loadTree(blocks, oldTree, { reuse: [b] }), b)
}

export function diffTrees (a: DirNode, b: DirNode): VersionDiff {
  const out: VersionDiff = { added: [], removed: [], changed: [], newChunks: 0, newBytes: 0 }
  walkPair(a, b, Buffer.alloc(0), out)
  const have = new Set(pieceList(a).map(p => p.cid.toString()))
  for (const p of pieceList(b)) {
    if (have.has(p.cid.toString())) continue
    out.newChunks++
    out.newBytes += p.length
  }
  return out
}

function addAll (node: DirNode | undefined, rel: Buffer, list: PathChange[], kind: 'added' | 'removed'): void {
  if (node === undefined) return
  for (const { path, entry } of walkTree(node, rel)) list.push({ path: '/' + showPath(path), type: entry.type, kind })
}

function walkPair (a: DirNode, b: DirNode, rel: Buffer, out: VersionDiff): void {
  if (a.cid.equals(b.cid)) return
  const old = new Map<string, TreeEntry>(a.entries.map(e => [nameKey(e.name), e]))
  const seen = new Set<string>()
  for (const entry of b.entries) {
    const key = nameKey(entry.name)
    seen.add(key)
    const path = rel.length === 0 ? Buffer.from(entry.name) : joinPath(rel, entry.name)
    const prev = old.get(key)
    const show = '/' + showPath(path)
    if (prev === undefined) {
      out.added.push({ path: show, type: entry.type, kind: 'added' })
      if (entry.type === 'dir') addAll(b.children.get(key), path, out.added, 'added')
      continue
    }
    if (entriesEqual(prev, entry)) continue
    if (prev.type !== entry.type) {
      out.removed.push({ path: show, type: prev.type, kind: 'removed' })
      if (prev.type === 'dir') addAll(a.children.get(key), path, out.removed, 'removed')
      out.added.push({ path: show, type: entry.type, kind: 'added' })
      if (entry.type === 'dir') addAll(b.children.get(key), path, out.added, 'added')
      continue
    }
    if (entry.type === 'dir') {
      const sameAttrs = entriesEqual({ ...prev, tree: entry.tree }, entry)
      if (!sameAttrs) out.changed.push({ path: show, type: 'dir', kind: 'attributes' })
      const ca = a.children.get(key)
      const cb = b.children.get(key)
      if (ca !== undefined && cb !== undefined) walkPair(ca, cb, path, out)
      continue
    }
    out.changed.push({ path: show, type: entry.type, kind: sameContent(prev, entry) ? 'attributes' : 'changed' })
  }
  for (const entry of a.entries) {
    const key = nameKey(entry.name)
    if (seen.has(key)) continue
    const path = rel.length === 0 ? Buffer.from(entry.name) : joinPath(rel, entry.name)
    out.removed.push({ path: '/' + showPath(path), type: entry.type, kind: 'removed' })
    if (entry.type === 'dir') addAll(a.children.get(key), path, out.removed, 'removed')
  }
}
