/** Hostile trees, symlinks in the target, corrupt blocks, full and read-only targets, interrupted deploys. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, mkdir, symlink, readdir, readFile, lstat, open } from 'node:fs/promises'
import { spawn, spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { ImageStore } from '../node/image/image-store.ts'
import { deploy } from '../node/target/deploy.ts'
import { capture } from '../node/image/capture.ts'
import { DAG_CBOR_CODE } from '../node/store/cid.ts'
import { ImgmeshError } from '../node/errors.ts'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, CLI } from './support/cli.ts'
import { rsyncDifferences } from './support/tree-check.ts'
import { isRoot } from './support/debian-root.ts'
import type { CID } from 'multiformats/cid'

let work: string
before(async () => { work = await mkdtemp(join(tmpdir(), 'imgmesh-safe-')) })
after(async () => { await rm(work, { recursive: true, force: true }) })

const ROOT_ATTRS = { mode: 0o755, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 0, xattrs: [] }

async function craftVersion (store: ImageStore, image: string, treeBlock: Uint8Array): Promise<CID> {
  const { cid: tree } = await store.blocks.put(treeBlock, DAG_CBOR_CODE)
  const { cid } = await store.commitVersion({ image, number: 1, parents: [], tree, root: ROOT_ATTRS, created: new Date().toISOString(), message: '', stats: { files: 1, dirs: 0, entries: 1, bytes: 1, chunks: 0, chunkBytes: 0 } })
  return cid
}

function rawEntry (name: Uint8Array, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { n: name, t: 'file', m: 0o644, u: 0, g: 0, s: 1, ns: 0, z: 1, i: new Uint8Array([0x41]), ...extra }
}

const hostile: Array<[string, Record<string, unknown>[]]> = [
  ['dot-dot name', [rawEntry(Buffer.from('..'))]],
  ['dot name', [rawEntry(Buffer.from('.'))]],
  ['slash in name', [rawEntry(Buffer.from('a/../../escape'))]],
  ['NUL in name', [rawEntry(Buffer.from('a\0b'))]],
  ['empty name', [rawEntry(new Uint8Array())]],
  ['hardlink out of the tree', [rawEntry(Buffer.from('h'), { t: 'hardlink', l: Buffer.from('../../etc/passwd'), z: undefined, i: undefined })]],
  ['absolute hardlink', [rawEntry(Buffer.from('h'), { t: 'hardlink', l: Buffer.from('/etc/passwd'), z: undefined, i: undefined })]],
  ['duplicate names', [rawEntry(Buffer.from('a')), rawEntry(Buffer.from('a'))]],
  ['unknown type', [rawEntry(Buffer.from('a'), { t: 'door' })]],
  ['size mismatch', [rawEntry(Buffer.from('a'), { z: 5 })]]
]

for (const [label, entries] of hostile) {
  test(`a tree block with ${label} fails the deploy before anything is written`, async () => {
    const data = join(work, 'data-hostile')
    const store = await ImageStore.open(data)
    const image = 'bad-' + label.replace(/[^a-z]/g, '-')
    const clean = entries.map(e => Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)))
    await craftVersion(store, image, dagCbor.encode({ v: 1, e: clean }))
    const target = join(work, 'target-' + image)
    await assert.rejects(deploy(store, await store.resolve(image), { target }), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADTREE')
    assert.deepEqual(await readdir(target), [])
    assert.deepEqual(await readdir(join(work)).then(l => l.filter(n => n === 'escape' || n === 'passwd')), [])
  })
}

test('a symlink in the target where the image has a directory is replaced, never followed', async () => {
  const src = join(work, 'src-sym')
  await mkdir(join(src, 'etc'), { recursive: true })
  await writeFile(join(src, 'etc/conf'), 'inside')
  const store = await ImageStore.open(join(work, 'data-sym'))
  await capture(store, { source: src, image: 'sym', defaultExcludes: false })
  const outside = join(work, 'outside')
  await mkdir(outside)
  const target = join(work, 'target-sym')
  await mkdir(target)
  await symlink(outside, join(target, 'etc'))
  await deploy(store, await store.resolve('sym'), { target })
  assert.deepEqual(await readdir(outside), [])
  assert.ok((await lstat(join(target, 'etc'))).isDirectory())
  assert.equal(await readFile(join(target, 'etc/conf'), 'utf8'), 'inside')
})

test('a corrupt block in the store fails the deploy with a clear error and records nothing', async () => {
  const src = join(work, 'src-corrupt')
  await mkdir(src)
  await writeFile(join(src, 'big'), Buffer.alloc(300_000, 7))
  const data = join(work, 'data-corrupt')
  const store = await ImageStore.open(data)
  await capture(store, { source: src, image: 'c', defaultExcludes: false })
  // Flip one byte in every content chunk (the raw blocks bigger than a tree block).
  for await (const cid of store.blocks.cids()) {
    const bytes = await store.blocks.get(cid).catch(() => null)
    if (bytes === null || bytes.length < 1000) continue
    const at = store.blocks.locate(cid)
    assert.ok(at !== null)
    const fh = await open(at.path, 'r+')
    await fh.write(Buffer.from([bytes[10] ^ 0xff]), 0, 1, at.offset + 10)
    await fh.close()
  }
  const target = join(work, 'target-corrupt')
  const r = await imgmesh(['deploy', 'c', target, '--data-dir', data])
  assert.notEqual(r.code, 0)
  assert.match(r.stderr, /does not match its hash/)
  assert.equal(r.stderr.trim().split('\n').length, 1)
  assert.deepEqual((await readdir(target)).filter(n => !n.startsWith('.imgmesh-tmp-')), [])
  const v = await imgmesh(['verify', target, '--data-dir', data])
  assert.equal(v.code, 1)
  assert.match(v.stderr, /did not finish/)
})

test('a full target and a read-only target give clear errors and leave no half-written file', { skip: !isRoot() && 'needs root to mount tmpfs' }, async () => {
  const src = join(work, 'src-full')
  await mkdir(src)
  for (let i = 0; i < 8; i++) await writeFile(join(src, `f${i}`), Buffer.alloc(512 * 1024, i + 1))
  const data = join(work, 'data-full')
  const store = await ImageStore.open(data)
  await capture(store, { source: src, image: 'full', defaultExcludes: false })
  const small = join(work, 'small')
  const ro = join(work, 'ro')
  await mkdir(small)
  await mkdir(ro)
  try {
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]).status, 0)
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]).status, 0)
    const r = await imgmesh(['deploy', 'full', small, '--data-dir', data])
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /no space left/)
    for (const name of await readdir(small)) {
      if (name.startsWith('.imgmesh-tmp-')) continue
      const content = await readFile(join(small, name))
      assert.equal(content.length, 512 * 1024, `${name} is half-written`)
    }
    const r2 = await imgmesh(['deploy', 'full', ro, '--data-dir', data])
    assert.notEqual(r2.code, 0)
    assert.match(r2.stderr, /read-only/)
  } finally {
    spawnSync('umount', [small])
    spawnSync('umount', [ro])
  }
})

test('a deploy killed midway leaves no half-written file under a real name, and re-running finishes it', async () => {
  const src = join(work, 'src-kill')
  await makeSampleTree(src, { bytes: 48 * 1024 * 1024, seed: 7 })
  const data = join(work, 'data-kill')
  const store = await ImageStore.open(data)
  await capture(store, { source: src, image: 'k', defaultExcludes: false })
  const blocksBefore = (await collect(store.blocks.cids())).length
  const target = join(work, 'target-kill')
  const child = spawn(process.execPath, [CLI, 'deploy', 'k', target, '--data-dir', data], { stdio: 'ignore' })
  // Listen from the start, so that an early exit is not missed.
  let exited = false
  const closed = new Promise<string | null>(resolve => child.once('close', (_code, signal) => { exited = true; resolve(signal) }))
  // Kill it once writing has begun (bounded wait: 20 s). Polled often: on an idle machine the
  // whole deploy takes well under a second once its first entry appears.
  for (let i = 0; i < 4000 && !exited && !(await hasEntries(target)); i++) {
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  child.kill('SIGKILL')
  assert.equal(await closed, 'SIGKILL', 'the deploy ended before it could be killed')
  // Every file under a real name is complete: equal to the source.
  const check = rsyncDifferences(src, target).filter(l => /^>f/.test(l) && !l.includes('+++++++++'))
  assert.deepEqual(check, [], 'files exist with wrong content')
  const again = await imgmesh(['deploy', 'k', target, '--data-dir', data])
  assert.equal(again.code, 0, again.stderr)
  assert.deepEqual(rsyncDifferences(src, target), [])
  assert.equal((await collect(store.blocks.cids())).length, blocksBefore)
})

async function hasEntries (dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0
  } catch {
    return false
  }
}

async function collect<T> (it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}
