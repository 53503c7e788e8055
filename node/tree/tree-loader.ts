/** Loads a whole image tree (every directory block) into memory, and walks it in image order. */
import type { CID } from 'multiformats/cid'
import type { BlockGetter } from '../store/block-store.ts'
import { decodeTree, type TreeEntry } from '../../protocols/tree.ts'
import { ImgmeshError } from '../errors.ts'

export interface DirNode {
  cid: CID
  entries: TreeEntry[]
  /** Subdirectories by name (latin1 string of the name bytes). */
  children: Map<string, DirNode>
}

export function nameKey (name: Uint8Array): string {
  return Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1')
}

const MAX_DEPTH = 1024

export interface LoadTreeOptions {
  /** Tree blocks fetched and decoded at once (default 16). */
  concurrency?: number
  /**
   * Trees already in memory (other versions of the image, say): a directory whose block is one
   * of theirs is taken from them as it is, subtree and all, not read and decoded again. Two
   * versions of an image share every directory that did not change, so loading one after the
   * other reads only the changed ones. Loaded trees are never modified, so sharing their nodes
   * is safe.
   */
  reuse?: readonly DirNode[]
}

/** Every directory of a tree by its block's CID, with the depth of the subtree under it. */
function dirsByCid (root: DirNode, out = new Map<string, { node: DirNode, height: number }>()): Map<string, { node: DirNode, height: number }> {
  let height = 0
  for (const child of root.children.values()) {
    const k = child.cid.toString()
    if (!out.has(k)) dirsByCid(child, out)
    height = Math.max(height, (out.get(k)?.height ?? 0) + 1)
  }
  out.set(root.cid.toString(), { node: root, height })
  return out
}

/** Fetches and decodes every tree block under root, several at a time. */
export async function loadTree (getter: BlockGetter, root: CID, opts: LoadTreeOptions = {}): Promise<DirNode> {
  const concurrency = opts.concurrency ?? 16
  const known = new Map<string, { node: DirNode, height: number }>()
  for (const t of opts.reuse ?? []) if (!known.has(t.cid.toString())) dirsByCid(t, known)
  const same = known.get(root.toString())
  if (same !== undefined) return same.node
  const rootNode: DirNode = { cid: root, entries: [], children: new Map() }
  const queue: Array<{ node: DirNode, depth: number }> = [{ node: rootNode, depth: 0 }]
  let active = 0
  let failure: unknown = null
  const seen = new Map<string, Promise<TreeEntry[]>>()
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      if (failure !== null && active === 0) { resolve(); return }
      while (failure === null && active < concurrency && queue.length > 0) {
        const { node, depth } = queue.shift()!
        active++
        // Equal directories (every empty one, say) share a block: fetch and decode it once.
        const key = node.cid.toString()
        let decoded = seen.get(key)
        if (decoded === undefined) { decoded = getter.get(node.cid).then(decodeTree); seen.set(key, decoded) }
        decoded.then((entries) => {
          node.entries = entries
          for (const e of node.entries) {
            if (e.type !== 'dir' || e.tree === undefined) continue
            if (depth + 1 > MAX_DEPTH) throw new ImgmeshError('EBADTREE', 'tree is nested too deeply')
            const reused = known.get(e.tree.toString())
            if (reused !== undefined) {
              if (depth + 1 + reused.height > MAX_DEPTH) throw new ImgmeshError('EBADTREE', 'tree is nested too deeply')
              node.children.set(nameKey(e.name), reused.node)
              continue
            }
            const child: DirNode = { cid: e.tree, entries: [], children: new Map() }
            node.children.set(nameKey(e.name), child)
            queue.push({ node: child, depth: depth + 1 })
          }
        }).catch((err: unknown) => { failure ??= err }).finally(() => {
          active--
          pump()
        })
      }
      if (active === 0 && (queue.length === 0 || failure !== null)) resolve()
    }
    pump()
  })
  if (failure !== null) throw failure
  return rootNode
}

export interface WalkItem {
  /** Path relative to the image root, without leading slash (bytes joined by `/`). */
  path: Buffer
  entry: TreeEntry
  dir: DirNode
}

/** Depth-first, entries in name order, a directory's own entry before its contents. */
export function * walkTree (root: DirNode, prefix: Buffer = Buffer.alloc(0)): Generator<WalkItem> {
  for (const entry of root.entries) {
    const path = prefix.length === 0 ? Buffer.from(entry.name) : Buffer.concat([prefix, Buffer.from('/'), entry.name])
    yield { path, entry, dir: root }
    if (entry.type === 'dir') {
      const child = root.children.get(nameKey(entry.name))
      if (child !== undefined) yield * walkTree(child, path)
    }
  }
}

/**
 * The unique content chunks of a tree, in tree order: the version's piece list. A pack's length
 * is where the last run the tree takes from it ends (its whole size when every file packed in it
 * is in the tree).
 */
export function pieceList (root: DirNode): Array<{ cid: CID, length: number }> {
  const seen = new Map<string, number>()
  const out: Array<{ cid: CID, length: number }> = []
  for (const { entry } of walkTree(root)) {
    for (const seg of entry.segments ?? []) {
      if (seg.cid === undefined) continue
      const key = seg.cid.toString()
      const end = (seg.offset ?? 0) + seg.length
      const at = seen.get(key)
      if (at === undefined) { seen.set(key, out.length); out.push({ cid: seg.cid, length: end }) } else if (out[at].length < end) out[at].length = end
    }
  }
  return out
}

/** Every tree block CID under root (root included). */
export function treeBlocks (root: DirNode): CID[] {
  const out: CID[] = [root.cid]
  for (const child of root.children.values()) out.push(...treeBlocks(child))
  return out
}

/** The entry at a relative path (components joined by `/`), or undefined. */
export function entryAt (root: DirNode, path: Uint8Array): TreeEntry | undefined {
  const parts = Buffer.from(path).toString('latin1').split('/')
  let node: DirNode | undefined = root
  for (let i = 0; i < parts.length && node !== undefined; i++) {
    const key = parts[i]
    const entry: TreeEntry | undefined = node.entries.find(e => nameKey(e.name) === key)
    if (entry === undefined) return undefined
    if (i === parts.length - 1) return entry
    node = node.children.get(key)
  }
  return undefined
}
