/**
 * Per-node customisation: the base image, then override images over it, then templates.
 *
 * Override trees are images themselves (so they travel through the swarm like any version):
 * for a base image NAME, a node applies `NAME+GROUP` for each of its groups in the order it was
 * given them (`--group a --group b`: a, then b), then `NAME+HOSTNAME`. A later tree's entry
 * replaces an earlier one at the same path; directories merge.
 *
 * Templates: a regular file whose name ends in `.imgmesh-template` is rendered with the node's
 * facts (`{{hostname}}`, `{{ipv4}}`, `{{ipv6}}`, `{{peer_id}}`, `{{groups}}`, `{{image}}`,
 * `{{version}}`) and written without the suffix.
 *
 * The result is a tree stored locally and a version block signed by this node (not added to
 * the refs: it is this node's own composition, recorded as what the target runs).
 */
import { networkInterfaces } from 'node:os'
import type { CID } from 'multiformats/cid'
import type { ImageStore, ResolvedVersion } from '../image/image-store.ts'
import { loadTree, nameKey, type DirNode } from '../tree/tree-loader.ts'
import { fileContent } from '../tree/file-content.ts'
import { encodeTree, type TreeEntry } from '../../protocols/tree.ts'
import { encodeVersion, signVersion } from '../../protocols/version.ts'
import { DAG_CBOR_CODE } from '../store/cid.ts'
import { Chunker } from '../chunk/chunker.ts'
import { ImgmeshError } from '../errors.ts'

export const TEMPLATE_SUFFIX = '.imgmesh-template'
const MAX_TEMPLATE = 1024 * 1024

export interface NodeFacts { hostname: string, peerId: string, groups: string[] }

export function overrideNames (image: string, facts: NodeFacts): string[] {
  const host = facts.hostname.replace(/[^A-Za-z0-9._-]/g, '-')
  return [...facts.groups.map(g => `${image}+${g}`), `${image}+${host}`]
}

export function factsTable (facts: NodeFacts, image: string, version: number): Record<string, string> {
  const v4: string[] = []
  const v6: string[] = []
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal) continue
      if (a.family === 'IPv4') v4.push(a.address)
      else v6.push(a.address)
    }
  }
  return { hostname: facts.hostname, peer_id: facts.peerId, groups: facts.groups.join(','), ipv4: v4[0] ?? '', ipv6: v6[0] ?? '', image, version: String(version) }
}

export function render (text: string, facts: Record<string, string>, file: string): string {
  return text.replace(/\{\{\s*([a-z_0-9]+)\s*\}\}/g, (_m, key: string) => {
    const v = facts[key]
    if (v === undefined) throw new ImgmeshError('EBADARG', `template ${file} uses unknown fact {{${key}}} (known: ${Object.keys(facts).join(', ')})`)
    return v
  })
}

interface Ctx { store: ImageStore, facts: Record<string, string>, changed: boolean }

async function contentOf (store: ImageStore, e: TreeEntry): Promise<Buffer> {
  if ((e.size ?? 0) > MAX_TEMPLATE) throw new ImgmeshError('EBADARG', `template ${Buffer.from(e.name).toString()} is larger than ${MAX_TEMPLATE} bytes`)
  return await fileContent(store.blocks, e)
}

async function withContent (store: ImageStore, e: TreeEntry, bytes: Buffer, name: Uint8Array): Promise<TreeEntry> {
  const out: TreeEntry = { ...e, name, size: bytes.length }
  delete out.inline
  delete out.segments
  if (bytes.length <= 512) { out.inline = new Uint8Array(bytes); return out }
  const chunker = new Chunker()
  const segments = []
  for (const c of [...chunker.push(bytes), ...chunker.finish()]) {
    const { cid } = await store.blocks.put(c)
    segments.push({ length: c.length, cid })
  }
  out.segments = segments
  return out
}

/** Merges the trees (later wins), renders templates, stores the new tree blocks; returns the root CID. */
async function merge (ctx: Ctx, layers: DirNode[]): Promise<CID> {
  const byName = new Map<string, { entry: TreeEntry, dirs: DirNode[] }>()
  for (const layer of layers) {
    for (const e of layer.entries) {
      const key = nameKey(e.name)
      const child = e.type === 'dir' ? layer.children.get(key) : undefined
      const prev = byName.get(key)
      if (prev !== undefined && prev.entry.type === 'dir' && e.type === 'dir' && child !== undefined) {
        prev.entry = e
        prev.dirs.push(child)
      } else {
        byName.set(key, { entry: e, dirs: child === undefined ? [] : [child] })
      }
    }
  }
  const final = new Map<string, TreeEntry>()
  const templates: TreeEntry[] = []
  for (const [key, { entry, dirs }] of byName) {
    if (entry.type === 'dir') {
      const untouched = dirs.length === 1 && !hasTemplates(dirs[0])
      final.set(key, { ...entry, tree: untouched ? dirs[0].cid : await merge(ctx, dirs) })
    } else if (entry.type === 'file' && isTemplate(entry.name)) {
      templates.push(entry)
    } else {
      final.set(key, entry)
    }
  }
  // A rendered template replaces whatever has its name without the suffix.
  for (const t of templates) {
    const name = Buffer.from(t.name).toString('latin1')
    const plain = new Uint8Array(Buffer.from(name.slice(0, -TEMPLATE_SUFFIX.length), 'latin1'))
    const text = (await contentOf(ctx.store, t)).toString('utf8')
    final.set(nameKey(plain), await withContent(ctx.store, t, Buffer.from(render(text, ctx.facts, name)), plain))
    ctx.changed = true
  }
  const out = [...final.values()]
  const { cid } = await ctx.store.blocks.put(encodeTree(out), DAG_CBOR_CODE)
  return cid
}

function isTemplate (name: Uint8Array): boolean {
  const s = Buffer.from(name).toString('latin1')
  return s.endsWith(TEMPLATE_SUFFIX) && s.length > TEMPLATE_SUFFIX.length
}

function hasTemplates (node: DirNode): boolean {
  for (const e of node.entries) {
    if (e.type === 'file' && isTemplate(e.name)) return true
    if (e.type === 'dir') { const c = node.children.get(nameKey(e.name)); if (c !== undefined && hasTemplates(c)) return true }
  }
  return false
}

export interface Composition { resolved: ResolvedVersion, overrides: string[], templated: boolean }

/**
 * The version to apply on this node: the base itself when there is nothing to customise, or a
 * locally signed composition of base + overrides + rendered templates. `loaded`: the base's
 * tree when the caller has it in memory already (the fetch that staged it).
 */
export async function compose (store: ImageStore, base: ResolvedVersion, overrides: ResolvedVersion[], facts: NodeFacts, loaded?: DirNode): Promise<Composition> {
  const baseTree = loaded !== undefined && loaded.cid.equals(base.version.body.tree) ? loaded : await loadTree(store.blocks, base.version.body.tree)
  if (overrides.length === 0 && !hasTemplates(baseTree)) return { resolved: base, overrides: [], templated: false }
  const layers = [baseTree]
  for (const o of overrides) layers.push(await loadTree(store.blocks, o.version.body.tree))
  const ctx: Ctx = { store, facts: factsTable(facts, base.version.body.image, base.version.body.number), changed: false }
  const tree = await merge(ctx, layers)
  const key = await store.publisherKey()
  const names = overrides.map(o => `${o.version.body.image}@${o.version.body.number}`)
  const body = {
    ...base.version.body,
    parents: [base.cid, ...overrides.map(o => o.cid)],
    tree,
    author: key.publicHex,
    created: new Date().toISOString(),
    message: `${base.version.body.image}@${base.version.body.number} for ${facts.hostname}${names.length > 0 ? ' with ' + names.join(', ') : ''}${ctx.changed ? ', templates rendered' : ''}`
  }
  const signed = signVersion(body, key.privateKey)
  const { cid } = await store.blocks.put(encodeVersion(signed), DAG_CBOR_CODE)
  return { resolved: { cid, version: signed }, overrides: names, templated: ctx.changed }
}
