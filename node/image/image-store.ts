/**
 * The image store of one data directory: blocks, refs, the publisher key and trust list.
 * Everything the CLI and the agent do to images goes through here.
 */
import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import type { CID } from 'multiformats/cid'
import { BlockStore } from '../store/block-store.ts'
import { DAG_CBOR_CODE, blockKey } from '../store/cid.ts'
import { Refs, type VersionRef } from './refs.ts'
import { loadOrCreatePublisherKey, type PublisherKey } from '../keys/publisher-key.ts'
import { TrustList } from '../keys/trust.ts'
import { ImgmeshError } from '../errors.ts'
import { decodeVersion, encodeVersion, signVersion, isValidImageName, type SignedVersion, type VersionBody } from '../../protocols/version.ts'
import { loadTree, treeBlocks, walkTree, type DirNode } from '../tree/tree-loader.ts'
import { listTargetStates } from '../target/target-state.ts'

export const DEFAULT_DATA_DIR = '/var/lib/imgmesh'

export interface ResolvedVersion { cid: CID, version: SignedVersion }

export function parseImageSpec (spec: string): { image: string, number?: number } {
  const at = spec.lastIndexOf('@')
  const image = at < 0 ? spec : spec.slice(0, at)
  if (!isValidImageName(image)) throw new ImgmeshError('EBADARG', `invalid image name: ${JSON.stringify(image)}`)
  if (at < 0) return { image }
  const n = spec.slice(at + 1)
  if (!/^[1-9][0-9]{0,15}$/.test(n)) throw new ImgmeshError('EBADARG', `invalid version number in ${JSON.stringify(spec)}`)
  return { image, number: Number(n) }
}

export class ImageStore {
  readonly dataDir: string
  readonly blocks: BlockStore
  readonly refs: Refs
  readonly trust: TrustList
  private publisher: PublisherKey | null = null

  constructor (dataDir: string) {
    this.dataDir = dataDir
    this.blocks = new BlockStore(join(dataDir, 'blocks'))
    this.refs = new Refs(join(dataDir, 'refs'))
    this.trust = new TrustList(join(dataDir, 'trusted.json'))
  }

  static async open (dataDir: string): Promise<ImageStore> {
    const store = new ImageStore(dataDir)
    try {
      await mkdir(dataDir, { recursive: true, mode: 0o755 })
    } catch (err) {
      throw new ImgmeshError('EIO', `cannot create data directory ${dataDir}: ${(err as Error).message}`, { path: dataDir, cause: err })
    }
    await store.blocks.open()
    await store.trust.load()
    return store
  }

  get targetsDir (): string { return join(this.dataDir, 'targets') }

  /** The publisher key of this node, created at first use; a new key trusts itself. */
  async publisherKey (): Promise<PublisherKey> {
    if (this.publisher === null) {
      this.publisher = await loadOrCreatePublisherKey(join(this.dataDir, 'publisher.key'))
      if (this.trust.list().length === 0) await this.trust.add(this.publisher.publicHex)
    }
    return this.publisher
  }

  async getVersion (cid: CID): Promise<SignedVersion> {
    return decodeVersion(await this.blocks.get(cid))
  }

  /** Signs and stores a version, then records it under its number. */
  async commitVersion (body: Omit<VersionBody, 'author'>): Promise<ResolvedVersion> {
    const key = await this.publisherKey()
    const version = signVersion({ ...body, author: key.publicHex }, key.privateKey)
    const { cid } = await this.blocks.put(encodeVersion(version), DAG_CBOR_CODE)
    await this.refs.add(body.image, body.number, cid)
    return { cid, version }
  }

  /** Stores a version block received from elsewhere (signature and trust checked). */
  async importVersion (bytes: Uint8Array): Promise<ResolvedVersion> {
    const version = decodeVersion(bytes)
    if (!this.trust.has(version.body.author)) throw new ImgmeshError('EUNTRUSTED', `${version.body.image}@${version.body.number} is signed by an untrusted publisher ${version.body.author}`)
    const { cid } = await this.blocks.put(bytes, DAG_CBOR_CODE)
    await this.refs.add(version.body.image, version.body.number, cid)
    return { cid, version }
  }

  async resolve (spec: string): Promise<ResolvedVersion> {
    const { image, number } = parseImageSpec(spec)
    let ref: VersionRef | null
    if (number === undefined) {
      ref = await this.refs.head(image)
      if (ref === null) throw new ImgmeshError('ENOIMAGE', `no image named ${image}`)
    } else {
      const cid = await this.refs.get(image, number)
      if (cid === null) {
        if ((await this.refs.head(image)) === null) throw new ImgmeshError('ENOIMAGE', `no image named ${image}`)
        throw new ImgmeshError('ENOVERSION', `${image} has no version ${number}`)
      }
      ref = { number, cid }
    }
    return { cid: ref.cid, version: await this.getVersion(ref.cid) }
  }

  async loadTree (root: CID): Promise<DirNode> {
    return await loadTree(this.blocks, root)
  }

  /** Removes every block no kept version (nor any target's deployed version) references. */
  async gc (): Promise<{ removed: number, bytes: number, kept: number }> {
    const keep = new Set<string>()
    const roots: CID[] = []
    for (const image of await this.refs.images()) {
      for (const ref of await this.refs.versions(image)) roots.push(ref.cid)
    }
    for (const state of await listTargetStates(this.targetsDir)) {
      if (state.deployed !== undefined) roots.push(state.deployed.cid)
      if (state.previous !== undefined) roots.push(state.previous.cid)
    }
    // Versions of an image share most directories: each tree is loaded taking what it shares
    // with those loaded before, and a version listed twice (a ref and a target) is walked once.
    const loaded: DirNode[] = []
    for (const cid of roots) {
      if (keep.has(blockKey(cid))) continue
      keep.add(blockKey(cid))
      let version: SignedVersion
      try { version = await this.getVersion(cid) } catch { continue }
      let tree: DirNode
      try { tree = await loadTree(this.blocks, version.body.tree, { reuse: loaded }) } catch (err) {
        throw new ImgmeshError('EBADBLOCK', `gc stopped: ${version.body.image}@${version.body.number} has a missing or corrupt tree block (${(err as Error).message}); nothing was removed`)
      }
      loaded.push(tree)
      for (const c of treeBlocks(tree)) keep.add(blockKey(c))
      for (const { entry } of walkTree(tree)) for (const s of entry.segments ?? []) if (s.cid !== undefined) keep.add(blockKey(s.cid))
    }
    const { removed, bytes } = await this.blocks.sweep(keep)
    return { removed, bytes, kept: keep.size }
  }
}
