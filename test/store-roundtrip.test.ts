/** Capture → deploy → independent comparison, on a synthetic tree with every file type and on a real Debian root. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, mkdir, lstat, chmod, utimes } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'
import { rsyncDifferences, allocatedBytes } from './support/tree-check.ts'
import { debianRoot, isRoot, ensureTool } from './support/debian-root.ts'
import { nativeFs } from '../node/native/fsx.ts'
import { ImageStore } from '../node/image/image-store.ts'
import { randomBytes } from 'node:crypto'
import { pieceList, type DirNode } from '../node/tree/tree-loader.ts'
import { diffTrees } from '../node/image/version-diff.ts'
import { nameHash } from '../node/image/capture.ts'
import type { Segment } from '../protocols/tree.ts'

let work: string
before(async () => { work = await mkdtemp(join(tmpdir(), 'imgmesh-rt-')) })
after(async () => { await rm(work, { recursive: true, force: true }) })

/** `count` names PREFIX0, PREFIX1, ... (sorted) after none of which a pack may end (packs end by a hash of the name). */
function namesNotEndingPacks (prefix: string, count: number): string[] {
  const names: string[] = []
  for (let k = 0; names.length < count; k++) if ((nameHash(Buffer.from(`${prefix}${k}`)) & 3) !== 0) names.push(`${prefix}${k}`)
  return names.sort()
}

/** Captures src as image into the store at data and returns the new version's tree. */
async function captureTree (src: string, data: string, image: string): Promise<DirNode> {
  await imgmeshJson<CaptureJson>(['capture', src, '--image', image, '--no-default-excludes', '--data-dir', data])
  const store = await ImageStore.open(data)
  try { return await store.loadTree((await store.resolve(image)).version.body.tree) } finally { store.blocks.close() }
}

/** The CID of the (first) block of a file's content in a directory. */
function blockOf (tree: DirNode, name: string): string {
  return tree.entries.find(e => Buffer.from(e.name).toString() === name)!.segments![0].cid!.toString()
}

interface PackedDir { src: string, data: string, dst: string, names: string[], capture: () => Promise<DirNode>, v1: DirNode, block: string }

/**
 * A directory `<dir>-src` of `count` files of `size` random bytes whose names never end a pack,
 * captured as `image` into `data-<dir>`: the files share one block (asserted).
 */
async function packedDir (dir: string, image: string, prefix: string, count: number, size: number): Promise<PackedDir> {
  const src = join(work, `${dir}-src`)
  const data = join(work, `data-${dir}`)
  await mkdir(src, { recursive: true })
  const names = namesNotEndingPacks(prefix, count)
  for (const n of names) await writeFile(join(src, n), randomBytes(size))
  const capture = async (): Promise<DirNode> => await captureTree(src, data, image)
  const v1 = await capture()
  const block = blockOf(v1, names[0])
  for (const n of names) assert.equal(blockOf(v1, n), block, `${count} files of ${size} bytes in one pack`)
  return { src, data, dst: join(work, `${dir}-dst`), names, capture, v1, block }
}

interface CaptureJson { image: string, version: number, cid: string, files: number, bytes: number, newBytes: number, created: boolean, hashedFiles: number }
interface DeployJson { created: number, updated: number, attributes: number, deleted: number, linked: number, mode: string, changes: Array<{ kind: string, path: string }> }

test('synthetic tree with every entry type round-trips exactly', async () => {
  const src = join(work, 'synthetic')
  const data = join(work, 'data-syn')
  const dst = join(work, 'target-syn')
  await makeSampleTree(src, { bytes: 4 * 1024 * 1024 })
  if (isRoot() && ensureTool('setfacl', 'acl')) {
    assert.equal(spawnSync('setfacl', ['-m', 'u:1234:rw-', join(src, 'etc/motd')]).status, 0)
    assert.equal(spawnSync('setfacl', ['-d', '-m', 'g:5:r-x', join(src, 'var')]).status, 0)
  }
  const cap = await imgmeshJson<CaptureJson>(['capture', src, '--image', 'syn', '--no-default-excludes', '--data-dir', data])
  assert.equal(cap.version, 1)
  assert.ok(cap.files > 50)
  const dep = await imgmeshJson<DeployJson>(['deploy', 'syn', dst, '--data-dir', data])
  assert.ok(dep.created > 50)
  assert.deepEqual(rsyncDifferences(src, dst), [])
  // Sparse stays sparse: 8 MiB apparent, a few KiB allocated.
  assert.equal((await lstat(join(dst, 'var/sparse.img'))).size, 8 * 1024 * 1024)
  assert.ok(allocatedBytes(join(dst, 'var/sparse.img')) <= 64 * 1024, `sparse file allocated ${allocatedBytes(join(dst, 'var/sparse.img'))} bytes`)
  // Hard links kept as links.
  assert.equal((await lstat(join(dst, 'usr/bin/tool'))).ino, (await lstat(join(dst, 'usr/bin/tool-hardlink'))).ino)
  // Nanosecond mtime.
  const st = await lstat(join(dst, 'etc/hostname'), { bigint: true })
  assert.equal(st.mtimeNs, 1_600_000_000_123_456_789n)
  // xattrs, including security.capability as root.
  const x = new Map(nativeFs.getXattrs(Buffer.from(join(dst, 'usr/bin/tool'))))
  assert.equal(x.get('user.comment')?.toString(), 'an extended attribute')
  if (isRoot()) assert.ok(x.has('security.capability'))
  const v = await imgmesh(['verify', dst, '--data-dir', data])
  assert.equal(v.code, 0, v.stdout + v.stderr)
  // Deploying the same version again is a repair: it compares the disk and finds nothing to do.
  const again = await imgmeshJson<DeployJson>(['deploy', 'syn', dst, '--data-dir', data])
  assert.equal(again.mode, 'scan')
  assert.equal(again.changes.length, 0)
})

test('second capture of an unchanged tree stores nothing and rehashes nothing', async () => {
  const src = join(work, 'synthetic')
  const data = join(work, 'data-syn')
  const cap = await imgmeshJson<CaptureJson>(['capture', src, '--image', 'syn', '--no-default-excludes', '--data-dir', data])
  assert.equal(cap.created, false)
  assert.equal(cap.version, 1)
  assert.equal(cap.newBytes, 0)
  assert.equal(cap.hashedFiles, 0)
})

test('capture keeps compressible chunks as zstd frames, --no-compress keeps them plain; both deploy exactly', async () => {
  const src = join(work, 'frames-src')
  await mkdir(src, { recursive: true })
  const text = Buffer.from(Array.from({ length: 40_000 }, (_x, i) => `line ${i} of a configuration file\n`).join(''))
  const noise = randomBytes(600_000)
  await writeFile(join(src, 'text.conf'), text)
  await writeFile(join(src, 'noise.bin'), noise)
  for (const [flag, data] of [[[], join(work, 'data-z')], [['--no-compress'], join(work, 'data-plain')]] as const) {
    const cap = await imgmeshJson<CaptureJson>(['capture', src, '--image', 'f', '--no-default-excludes', '--data-dir', data, ...flag])
    const store = await ImageStore.open(data)
    const tree = await store.loadTree((await store.resolve('f')).version.body.tree)
    const kinds = (name: string): boolean[] => {
      const e = tree.entries.find(x => Buffer.from(x.name).toString() === name)
      assert.ok(e?.segments !== undefined && e.segments.length > 0, name)
      // A file's last chunk may be too short to be worth a frame.
      return e.segments.filter(g => g.cid !== undefined && g.length >= 4096).map(g => store.blocks.locate(g.cid!)!.zstd)
    }
    const compressed = flag.length === 0
    // Text shrinks far more than a tenth; random bytes do not shrink and stay plain either way.
    assert.ok(kinds('text.conf').every(z => z === compressed), `text chunks zstd: ${String(kinds('text.conf'))}`)
    assert.ok(kinds('noise.bin').every(z => !z), 'random chunks are kept plain')
    if (compressed) assert.ok(cap.newBytes < noise.length + text.length / 4, `store grew ${cap.newBytes} bytes`)
    else assert.ok(cap.newBytes >= noise.length + text.length, `store grew ${cap.newBytes} bytes`)
    const dst = join(work, `frames-dst-${compressed ? 'z' : 'plain'}`)
    await imgmeshJson<DeployJson>(['deploy', 'f', dst, '--data-dir', data])
    assert.deepEqual(rsyncDifferences(src, dst), [])
    store.blocks.close()
  }
})

test('verify reports tampering', async () => {
  const src = join(work, 'synthetic')
  const data = join(work, 'data-syn')
  const dst = join(work, 'target-syn')
  await writeFile(join(dst, 'etc/motd'), 'tampered\n')
  await writeFile(join(dst, 'etc/extra-file'), 'extra\n')
  const v = await imgmesh(['verify', dst, '--data-dir', data, '--json'])
  assert.equal(v.code, 1)
  const r = JSON.parse(v.stdout) as { differences: Array<{ path: string, what: string }> }
  const paths = r.differences.map(d => `${d.what} ${d.path}`)
  assert.ok(paths.some(p => p.startsWith('extra /etc/extra-file')), paths.join('\n'))
  assert.ok(paths.some(p => p.includes('/etc/motd')), paths.join('\n'))
  // Deploy repairs it (scan of metadata finds the changed size/mtime).
  await mkdir(join(dst, 'var/new-dir'), { recursive: true })
  assert.notDeepEqual(rsyncDifferences(src, dst), [])
})

test('small files are packed into shared chunks; a changed file is packed anew, its neighbours and a file with only a new stat keep their runs; deploy and verify are exact', async () => {
  const src = join(work, 'packs-src')
  const data = join(work, 'data-packs')
  const dst = join(work, 'packs-dst')
  await mkdir(join(src, 'many'), { recursive: true })
  await mkdir(join(src, 'lone'), { recursive: true })
  for (let i = 0; i < 60; i++) await writeFile(join(src, 'many', `f${String(i).padStart(3, '0')}`), randomBytes(2000 + (i * 997) % 10_000))
  await writeFile(join(src, 'lone', 'only'), randomBytes(5000))
  // a small file with a hole keeps it: captured on its own, not packed
  const sparse = join(src, 'many', 'sparse')
  assert.equal(spawnSync('truncate', ['-s', '12288', sparse]).status, 0)
  await writeFile(sparse, randomBytes(1000), { flag: 'r+' })
  const capture = async (): Promise<{ store: ImageStore, tree: DirNode }> => {
    await imgmeshJson<CaptureJson>(['capture', src, '--image', 'p', '--no-default-excludes', '--data-dir', data])
    const store = await ImageStore.open(data)
    return { store, tree: await store.loadTree((await store.resolve('p')).version.body.tree) }
  }
  const v1 = await capture()
  const many = v1.tree.children.get('many')!
  const segs = (dir: DirNode, name: string): Segment[] => dir.entries.find(e => Buffer.from(e.name).toString() === name)!.segments!
  const packs = new Set(many.entries.filter(e => e.name.length === 4).map(e => { const g = segs(many, Buffer.from(e.name).toString()); assert.equal(g.length, 1); assert.notEqual(g[0].offset, undefined); return g[0].cid!.toString() }))
  assert.ok(packs.size >= 2 && packs.size <= 10, `60 files of 2-12 KB in ${packs.size} packs`)
  assert.equal(segs(many, 'sparse').some(g => g.offset !== undefined), false)
  assert.equal(segs(v1.tree.children.get('lone')!, 'only')[0].offset, undefined)
  assert.equal(pieceList(v1.tree).length, packs.size + 2 + 0, 'the piece list names each pack once (and the sparse and lone files)')
  v1.store.blocks.close()
  await imgmeshJson<DeployJson>(['deploy', 'p', dst, '--data-dir', data])
  assert.deepEqual(rsyncDifferences(src, dst), [])
  assert.ok(allocatedBytes(join(dst, 'many/sparse')) < 12288, 'the hole stays a hole')

  await writeFile(join(src, 'many', 'f030'), randomBytes(2000 + (30 * 997) % 10_000))
  const v2 = await capture()
  const diff = diffTrees(v1.tree, v2.tree)
  assert.equal(diff.newChunks, 1, 'one changed file: one new pack')
  assert.deepEqual(diff.changed.map(c => c.path), ['/many/f030'])
  v2.store.blocks.close()
  await imgmeshJson<DeployJson>(['deploy', 'p', dst, '--data-dir', data])
  assert.deepEqual(rsyncDifferences(src, dst), [])
  const ok = await imgmesh(['verify', dst, '--data-dir', data])
  assert.equal(ok.code, 0, ok.stdout + ok.stderr)

  // same size and mtime, other bytes: only the content tells, and verify reads it from the pack
  const victim = join(dst, 'many', 'f031')
  const st = await lstat(victim)
  await writeFile(victim, randomBytes(st.size))
  assert.equal(spawnSync('touch', ['-m', '-r', join(src, 'many', 'f031'), victim]).status, 0)
  const bad = await imgmesh(['verify', dst, '--data-dir', data, '--json'])
  assert.equal(bad.code, 1)
  assert.deepEqual((JSON.parse(bad.stdout) as { differences: Array<{ path: string, what: string }> }).differences, [{ path: '/many/f031', what: 'content' }])

  // a new stat, the same bytes: the file keeps its run of its pack
  await chmod(join(src, 'many', 'f010'), 0o600)
  const v3 = await capture()
  const same = diffTrees(v2.tree, v3.tree)
  assert.equal(same.newChunks, 0)
  assert.deepEqual(same.changed.map(c => `${c.kind} ${c.path}`), ['attributes /many/f010'])
  v3.store.blocks.close()
})

test('a pack never outgrows its limit when files between the new ones keep their runs', async () => {
  const src = join(work, 'fill-src')
  const data = join(work, 'data-fill')
  const dst = join(work, 'fill-dst')
  await mkdir(src, { recursive: true })
  // four new files that do not end a pack by their names fill it to 200 KiB; then a file with a
  // new stat and its old bytes keeps its run; then a new 64 KiB file must start the next pack
  const names = namesNotEndingPacks('a', 4)
  for (const n of [...names, 'm', 'z']) await writeFile(join(src, n), randomBytes(n === 'z' ? 64 * 1024 : 50 * 1024))
  await imgmeshJson<CaptureJson>(['capture', src, '--image', 'fill', '--no-default-excludes', '--data-dir', data])
  for (const n of names) await writeFile(join(src, n), randomBytes(50 * 1024))
  await writeFile(join(src, 'z'), randomBytes(64 * 1024))
  await utimes(join(src, 'm'), 1_600_000_000, 1_600_000_000)
  const v2 = await imgmeshJson<CaptureJson>(['capture', src, '--image', 'fill', '--no-default-excludes', '--data-dir', data])
  assert.equal(v2.version, 2)
  await imgmeshJson<DeployJson>(['deploy', 'fill', dst, '--data-dir', data])
  assert.deepEqual(rsyncDifferences(src, dst), [])
  const store = await ImageStore.open(data)
  const tree = await store.loadTree((await store.resolve('fill')).version.body.tree)
  const run = (name: string): Segment => tree.entries.find(e => Buffer.from(e.name).toString() === name)!.segments![0]
  assert.equal(run(names[3]).offset, 150 * 1024, 'the four new files share a pack')
  assert.notEqual(run('z').cid!.toString(), run(names[0]).cid!.toString(), 'the 64 KiB file went to the next pack')
  store.blocks.close()
})

test('a pack whose directory keeps less than half of it is packed anew; one that keeps more, or only sees new stats, is not', async () => {
  // eight files of 20 KB whose names never end a pack: one pack of 160 KB
  const { src, data, dst, names, capture, v1, block: first } = await packedDir('repack', 'rp', 'r', 8, 20_000)

  // three files go: 100 of 160 KB still used, the pack stays
  for (const n of names.slice(0, 3)) await rm(join(src, n))
  const v2 = await capture()
  assert.equal(diffTrees(v1, v2).newChunks, 0)
  for (const n of names.slice(3)) assert.equal(blockOf(v2, n), first)

  // two more change: 60 of 160 KB left, so the three kept files are packed with the new ones
  for (const n of names.slice(3, 5)) await writeFile(join(src, n), randomBytes(20_000))
  const v3 = await capture()
  const d3 = diffTrees(v2, v3)
  // the kept files' bytes are the same, in a new pack: the update moves and rewrites them too
  assert.deepEqual(d3.changed.map(c => `${c.kind} ${c.path}`).sort(), names.slice(3).map(n => `changed /${n}`))
  for (const n of names.slice(3)) assert.notEqual(blockOf(v3, n), first)
  assert.equal(pieceList(v3).some(p => p.cid.toString() === first), false, 'the half-dead pack is no longer part of the version')
  await imgmeshJson<DeployJson>(['deploy', 'rp', dst, '--data-dir', data])
  assert.deepEqual(rsyncDifferences(src, dst), [])
  const ok = await imgmesh(['verify', dst, '--data-dir', data])
  assert.equal(ok.code, 0, ok.stdout + ok.stderr)

  // new stats, the same bytes: nothing is packed anew
  for (const n of names.slice(3)) await chmod(join(src, n), 0o640)
  const v4 = await capture()
  const d4 = diffTrees(v3, v4)
  assert.equal(d4.newChunks, 0)
  assert.equal(d4.changed.length, 5)
  for (const n of names.slice(3)) assert.equal(blockOf(v4, n), blockOf(v3, n))
})

test('a change in a directory folds its files in blocks under 16 KiB into the new pack', async () => {
  // four files of 3,000 bytes in one pack of 12 KB
  const { src, data, dst, names, capture, block: small } = await packedDir('fold', 'fold', 't', 4, 3000)
  // one file changes: the three kept files leave their 12 KB pack for the new one, one block in all
  await writeFile(join(src, names[0]), randomBytes(3000))
  const v2 = await capture()
  const folded = blockOf(v2, names[0])
  assert.notEqual(folded, small)
  for (const n of names) assert.equal(blockOf(v2, n), folded)
  assert.equal(pieceList(v2).length, 1)
  // nothing changes: nothing moves
  const v3 = await capture()
  assert.equal(diffTrees(v2, v3).newChunks, 0)
  for (const n of names) assert.equal(blockOf(v3, n), folded)
  await imgmeshJson<DeployJson>(['deploy', 'fold', dst, '--data-dir', data])
  assert.deepEqual(rsyncDifferences(src, dst), [])
})

test('real Debian root (debootstrap minbase) round-trips exactly', { timeout: 600_000 }, async (t) => {
  const deb = debianRoot()
  if (deb === null) { t.skip('needs root and debootstrap'); return }
  const data = join(work, 'data-deb')
  const dst = join(work, 'target-deb')
  const cap = await imgmeshJson<CaptureJson>(['capture', deb, '--image', 'debian12', '--no-default-excludes', '--data-dir', data])
  assert.ok(cap.files > 3000, `only ${cap.files} files`)
  await imgmeshJson<DeployJson>(['deploy', 'debian12', dst, '--data-dir', data])
  assert.deepEqual(rsyncDifferences(deb, dst), [])
  const v = await imgmesh(['verify', dst, '--data-dir', data])
  assert.equal(v.code, 0, v.stdout.slice(0, 2000))
})
