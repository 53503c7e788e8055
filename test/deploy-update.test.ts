/** Updating a deployed target: only changed paths are written, excluded paths are left alone. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, mkdir, chmod, rename, utimes, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'
import { rsyncDifferences } from './support/tree-check.ts'
import { ImageStore } from '../node/image/image-store.ts'
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { loadTree, treeBlocks, walkTree, type DirNode } from '../node/tree/tree-loader.ts'
import { encodeTree, type TreeEntry } from '../protocols/tree.ts'
import { DAG_CBOR_CODE } from '../node/store/cid.ts'
import { ImgmeshError } from '../node/errors.ts'
import { deploy } from '../node/target/deploy.ts'
import type { BlockGetter } from '../node/store/block-store.ts'

let work: string
before(async () => { work = await mkdtemp(join(tmpdir(), 'imgmesh-up-')) })
after(async () => { await rm(work, { recursive: true, force: true }) })

interface DeployJson { created: number, updated: number, attributes: number, deleted: number, linked: number, mode: string, changes: Array<{ kind: string, path: string }> }
interface DiffJson { added: Array<{ path: string }>, removed: Array<{ path: string }>, changed: Array<{ path: string, kind: string }>, newBytes: number }

test('deploy of v2 over v1 writes only what changed and keeps excluded paths', async () => {
  const src = join(work, 'src')
  const data = join(work, 'data')
  const dst = join(work, 'dst')
  await makeSampleTree(src, { bytes: 2 * 1024 * 1024 })
  await imgmeshJson(['capture', src, '--image', 'app', '--no-default-excludes', '--data-dir', data])
  await imgmeshJson(['deploy', 'app', dst, '--data-dir', data])
  // The node's own file, excluded from updates.
  await writeFile(join(dst, 'etc/local.conf'), 'node-specific\n')

  await writeFile(join(src, 'etc/motd'), 'a new message of the day\n')            // content (and breaks nothing: motd has a hard link)
  await writeFile(join(src, 'etc/added'), 'new file\n')                          // added
  await rm(join(src, 'etc/empty'))                                                // removed
  await rename(join(src, 'usr/bin/sgid-tool'), join(src, 'usr/bin/sgid-renamed')) // renamed
  await chmod(join(src, 'usr/lib/data/file-000.dat'), 0o600)                      // metadata only
  await utimes(join(src, 'usr/lib/data/file-001.dat'), 1_500_000_000, 1_500_000_000) // mtime only
  await rm(join(src, 'etc/hostname'))
  await mkdir(join(src, 'etc/hostname'))                                          // file → dir
  await writeFile(join(src, 'etc/hostname/inside'), 'x\n')
  await rm(join(src, 'var/spool'), { recursive: true })
  await writeFile(join(src, 'var/spool'), 'dir → file\n')                        // dir → file

  const v2 = await imgmeshJson<{ version: number, created: boolean }>(['capture', src, '--image', 'app', '--no-default-excludes', '--data-dir', data])
  assert.equal(v2.version, 2)
  const diff = await imgmeshJson<DiffJson>(['diff', 'app@1', 'app@2', '--data-dir', data])
  assert.ok(diff.added.some(p => p.path === '/etc/added'))
  assert.ok(diff.removed.some(p => p.path === '/etc/empty'))
  assert.ok(diff.changed.some(p => p.path === '/usr/lib/data/file-000.dat' && p.kind === 'attributes'))

  const dry = await imgmeshJson<DeployJson>(['deploy', 'app@2', dst, '--dry-run', '--exclude', '/etc/local.conf', '--data-dir', data])
  const dep = await imgmeshJson<DeployJson>(['deploy', 'app@2', dst, '--exclude', '/etc/local.conf', '--data-dir', data])
  assert.equal(dep.mode, 'diff')
  assert.deepEqual(dry.changes, dep.changes)
  const byPath = new Map(dep.changes.map(c => [c.path, c.kind]))
  assert.equal(byPath.get('/etc/motd'), 'update')
  assert.equal(byPath.get('/var/motd-hardlink'), 'link')
  assert.equal(byPath.get('/etc/added'), 'create')
  assert.equal(byPath.get('/etc/empty'), 'delete')
  assert.equal(byPath.get('/usr/bin/sgid-tool'), 'delete')
  assert.equal(byPath.get('/usr/bin/sgid-renamed'), 'create')
  assert.equal(byPath.get('/usr/lib/data/file-000.dat'), 'attributes')
  assert.equal(byPath.get('/usr/lib/data/file-001.dat'), 'attributes')
  assert.equal(byPath.get('/etc/hostname'), 'update')
  assert.equal(byPath.get('/etc/hostname/inside'), 'create')
  assert.equal(byPath.get('/var/spool'), 'update')
  // Nothing else: the big files, the other 100+ files, are untouched.
  const fileWrites = dep.changes.filter(c => c.kind === 'create' || c.kind === 'update')
  assert.ok(fileWrites.length <= 6, JSON.stringify(fileWrites))
  assert.equal(await readFile(join(dst, 'etc/local.conf'), 'utf8'), 'node-specific\n')
  assert.deepEqual(rsyncDifferences(src, dst, ['/etc/local.conf']), [])
  await rm(join(dst, 'etc/local.conf'))

  // --no-delete keeps what the image lacks.
  await writeFile(join(dst, 'etc/keep-me'), 'x')
  const nodel = await imgmeshJson<DeployJson>(['deploy', 'app@1', dst, '--no-delete', '--data-dir', data])
  assert.ok(!nodel.changes.some(c => c.kind === 'delete' && c.path === '/etc/keep-me'))
  assert.equal(await readFile(join(dst, 'etc/keep-me'), 'utf8'), 'x')
  // Back to v1 exactly (rollback by deploying the older version).
  const back = await imgmesh(['deploy', 'app@1', dst, '--data-dir', data])
  assert.equal(back.code, 0, back.stderr)
  const check = await imgmesh(['verify', dst, '--data-dir', data])
  assert.equal(check.code, 0, check.stdout)
})

test('a target that is not the deployed one is compared on disk (scan) and repaired', async () => {
  const src = join(work, 'src')
  const data = join(work, 'data')
  const dst = join(work, 'dst2')
  await mkdir(dst)
  await writeFile(join(dst, 'stray'), 'not in the image')
  const dep = await imgmeshJson<DeployJson>(['deploy', 'app@2', dst, '--data-dir', data])
  assert.equal(dep.mode, 'scan')
  assert.ok(dep.changes.some(c => c.kind === 'delete' && c.path === '/stray'))
  assert.deepEqual(rsyncDifferences(src, dst), [])
  const scanAgain = await imgmeshJson<DeployJson>(['deploy', 'app@2', dst, '--data-dir', data])
  assert.equal(scanAgain.changes.length, 0)
})

test('a deploy given the loaded tree reads no tree block again; a tree of another version is not used', async () => {
  const src = join(work, 'src')
  const data = join(work, 'data')
  const store = await ImageStore.open(data)
  const v2 = await store.resolve('app@2')
  const v1 = await store.resolve('app@1')
  const tree = await loadTree(store.blocks, v2.version.body.tree)
  const dirBlocks = new Set<string>()
  const walk = (n: DirNode): void => { dirBlocks.add(n.cid.toString()); for (const c of n.children.values()) walk(c) }
  walk(tree)
  const reads: string[] = []
  const blocks: BlockGetter = { get: async (cid) => { reads.push(cid.toString()); return await store.blocks.get(cid) } }

  const dst = join(work, 'dst-tree')
  await deploy(store, v2, { target: dst, blocks, tree })
  assert.ok(reads.length > 0, 'file chunks come through the getter')
  assert.deepEqual(reads.filter(k => dirBlocks.has(k)), [], 'no tree block read again')
  assert.deepEqual(rsyncDifferences(src, dst), [])

  // The tree of v2 handed to a deploy of v1 is ignored: v1's own tree is loaded.
  reads.length = 0
  const dst1 = join(work, 'dst-tree-v1')
  await deploy(store, v1, { target: dst1, blocks, tree })
  assert.ok(reads.includes(v1.version.body.tree.toString()), 'v1 tree root read')
  const check = await imgmesh(['verify', dst1, '--data-dir', data])
  assert.equal(check.code, 0, check.stdout)
})

/** Paths and entries of a loaded tree, comparable with deepEqual. */
function listing (root: DirNode): string[] {
  return [...walkTree(root)].map(({ path, entry }) => `${path.toString('latin1')} ${Buffer.from(encodeTree([entry])).toString('hex')}`)
}

test('a tree loaded with another version\'s tree in memory reads only the directories it lacks, and is the same tree', async () => {
  const data = join(work, 'data')
  const store = await ImageStore.open(data)
  const v1 = await store.resolve('app@1')
  const v2 = await store.resolve('app@2')
  const old = await loadTree(store.blocks, v1.version.body.tree)
  const full = await loadTree(store.blocks, v2.version.body.tree)
  const oldDirs = new Set(treeBlocks(old).map(c => c.toString()))
  const reads: string[] = []
  const blocks: BlockGetter = { get: async (cid) => { reads.push(cid.toString()); return await store.blocks.get(cid) } }
  const reused = await loadTree(blocks, v2.version.body.tree, { reuse: [old] })
  assert.deepEqual(listing(reused), listing(full))
  const lacking = [...new Set(treeBlocks(full).map(c => c.toString()))].filter(k => !oldDirs.has(k))
  assert.ok(lacking.length > 0 && lacking.length < treeBlocks(full).length, 'v2 shares some directories with v1, not all')
  assert.deepEqual(reads.sort(), lacking.sort())
  // A tree that is in memory already is not read at all.
  reads.length = 0
  assert.equal(await loadTree(blocks, v2.version.body.tree, { reuse: [old, full] }), full)
  assert.deepEqual(reads, [])
})

test('a directory taken from a tree in memory still counts for the nesting limit', async () => {
  // A chain of 1,000 nested directories, then the same chain under 30 more.
  const mem = new Map<string, Uint8Array>()
  const put = (bytes: Uint8Array): CID => {
    const cid = CID.createV1(DAG_CBOR_CODE, Digest.create(0x12, createHash('sha256').update(bytes).digest()))
    mem.set(cid.toString(), bytes)
    return cid
  }
  const dirEntry = (tree: CID): TreeEntry => ({ name: new Uint8Array(Buffer.from('d')), type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: [], tree })
  const blocks: BlockGetter = { get: async (cid) => { const b = mem.get(cid.toString()); if (b === undefined) throw new Error('no block'); return b } }
  let chain = put(encodeTree([]))
  for (let i = 0; i < 1000; i++) chain = put(encodeTree([dirEntry(chain)]))
  let deep = chain
  for (let i = 0; i < 30; i++) deep = put(encodeTree([dirEntry(deep)]))
  const inMemory = await loadTree(blocks, chain)
  for (const opts of [{}, { reuse: [inMemory] }]) {
    await assert.rejects(loadTree(blocks, deep, opts), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADTREE' && /nested too deeply/.test(err.message))
  }
  // Within the limit, the chain is taken from memory.
  let shallow = chain
  for (let i = 0; i < 5; i++) shallow = put(encodeTree([dirEntry(shallow)]))
  const t = await loadTree(blocks, shallow, { reuse: [inMemory] })
  let node = t
  for (let i = 0; i < 5; i++) node = node.children.get('d')!
  assert.equal(node, inMemory)
})

test('a deploy over another version, given both trees, decodes no tree block', async () => {
  const src = join(work, 'src')
  const data = join(work, 'data')
  const store = await ImageStore.open(data)
  const v1 = await store.resolve('app@1')
  const v2 = await store.resolve('app@2')
  const dst = join(work, 'dst-trees')
  await deploy(store, v1, { target: dst })
  const t1 = await loadTree(store.blocks, v1.version.body.tree)
  const t2 = await loadTree(store.blocks, v2.version.body.tree)
  const dirBlocks = new Set([...treeBlocks(t1), ...treeBlocks(t2)].map(c => c.toString()))
  // Every tree block the store is asked for, through any getter.
  const reads: string[] = []
  const realGet = store.blocks.get.bind(store.blocks)
  store.blocks.get = async (cid) => { reads.push(cid.toString()); return await realGet(cid) }
  try {
    const r = await deploy(store, v2, { target: dst, tree: t2, trees: [t1] })
    assert.equal(r.mode, 'diff')
  } finally {
    store.blocks.get = realGet
  }
  assert.deepEqual(reads.filter(k => dirBlocks.has(k)), [])
  assert.deepEqual(rsyncDifferences(src, dst), [])
})
