/**
 * Block images: capture a sparse disk image (an ext4 filesystem made with mkfs.ext4 and filled
 * with debugfs, or patterned data at known offsets where those tools are missing), deploy it to
 * files and loop devices, update it, and move it between two agents on loopback.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, stat, mkdir } from 'node:fs/promises'
import { openSync, writeSync, closeSync, ftruncateSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { randomBytes, createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import { ImageStore } from '../node/image/image-store.ts'
import { captureBlock } from '../node/image/block-capture.ts'
import { deployBlock, loadBlockEntry } from '../node/target/block-deploy.ts'
import { encodeTree } from '../protocols/tree.ts'
import { BLOCK_IMAGE_ENTRY } from '../protocols/version.ts'
import { readTargetState } from '../node/target/target-state.ts'
import { ImgmeshError } from '../node/errors.ts'
import { cidFor } from '../node/store/cid.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'
import { AgentSet } from './support/agents.ts'
import { ControlClient } from '../node/control/control-api.ts'
import { haveTool, isRoot } from './support/debian-root.ts'

const MiB = 1024 * 1024
const IMAGE_SIZE = 256 * MiB
let work: string
let image: string
/** Where two 4 MiB files of random data live in the image (changed for v2). */
let region1: number
let region2: number
let filesystem = false
const loops: string[] = []

function sh (cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

function writeAt (path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+')
  try { writeSync(fd, bytes, 0, bytes.length, offset) } finally { closeSync(fd) }
}

function same (a: string, b: string, length?: number): boolean {
  const args = length === undefined ? [a, b] : ['-n', String(length), a, b]
  return spawnSync('cmp', args, { stdio: 'ignore' }).status === 0
}

function sha (path: string, length: number): string {
  return createHash('sha256').update(readFileSync(path).subarray(0, length)).digest('hex')
}

const canLoop = isRoot() && haveTool('losetup')

/** A loop device over a new file of the given size (filled with random junk when asked), removed in after(). */
function loopDevice (name: string, size: number, junk: boolean): string {
  const file = join(work, name)
  if (junk) sh('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${size / MiB}`, 'status=none'])
  else sh('truncate', ['-s', String(size), file])
  const dev = sh('losetup', ['--find', '--show', file]).trim()
  loops.push(dev)
  return dev
}

function freeLoop (dev: string): void {
  spawnSync('losetup', ['-d', dev])
  loops.splice(loops.indexOf(dev), 1)
}

/**
 * The v1 image: 256 MiB, sparse. With mkfs.ext4 and debugfs: an ext4 filesystem (4 KiB blocks)
 * holding two 4 MiB random files and some small ones, whose data blocks are located with
 * debugfs so that v2 can change them in place. Otherwise random data at fixed offsets.
 */
async function makeImage (path: string): Promise<void> {
  const fd = openSync(path, 'w')
  ftruncateSync(fd, IMAGE_SIZE)
  closeSync(fd)
  if (haveTool('mkfs.ext4') && haveTool('debugfs')) {
    sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=1,nodiscard', path])
    const files: Array<[string, Uint8Array]> = [['f1', randomBytes(4 * MiB)], ['f2', randomBytes(4 * MiB)], ['small', randomBytes(5000)], ['text', Buffer.from('hello block device\n'.repeat(3000))]]
    for (const [name, bytes] of files) {
      await writeFile(join(work, name), bytes)
      sh('debugfs', ['-w', '-R', `write ${join(work, name)} ${name}`, path])
    }
    const firstBlock = (name: string): number => Number(sh('debugfs', ['-R', `bmap /${name} 0`, path]).trim().split(/\s+/).pop())
    region1 = firstBlock('f1') * 4096
    region2 = firstBlock('f2') * 4096
    filesystem = true
  } else {
    region1 = 16 * MiB
    region2 = 100 * MiB
    writeAt(path, 0, randomBytes(64 * 1024))
    writeAt(path, region1, randomBytes(4 * MiB))
    writeAt(path, region2, randomBytes(4 * MiB))
  }
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'imgmesh-block-'))
  image = join(work, 'disk.img')
  await makeImage(image)
})

after(async () => {
  for (const dev of [...loops]) freeLoop(dev)
  spawnSync('umount', [join(work, 'mnt')], { stdio: 'ignore' })
  await rm(work, { recursive: true, force: true })
})

test('a sparse disk image is captured without its zeros and deployed byte-identical and sparse; v2 moves and writes only the changed chunks', { timeout: 120_000 }, async () => {
  const store = await ImageStore.open(join(work, 'data'))
  const v1 = await captureBlock(store, { device: image, image: 'disk', message: 'v1' })
  assert.equal(v1.version, 1)
  assert.equal(v1.size, IMAGE_SIZE)
  assert.equal(v1.source, 'file')
  assert.ok(v1.dataBytes >= 8 * MiB && v1.dataBytes < 32 * MiB, `data ${v1.dataBytes}`)
  assert.equal(v1.dataBytes + v1.holeBytes, IMAGE_SIZE)
  assert.ok(v1.newBytes < 32 * MiB, `stored ${v1.newBytes}`)
  const r1 = await store.resolve('disk')
  assert.equal(r1.version.body.kind, 'block')
  const tree = await store.loadTree(r1.version.body.tree)
  assert.equal(tree.entries.length, 1)
  assert.equal(Buffer.from(tree.entries[0].name).toString(), 'disk')
  assert.ok(tree.entries[0].segments!.some(s => s.cid === undefined), 'zero ranges are holes')

  // Unchanged bytes: no new version.
  const again = await captureBlock(store, { device: image, image: 'disk' })
  assert.equal(again.created, false)
  assert.equal(again.version, 1)

  const out = join(work, 'out.img')
  const d1 = await deployBlock(store, r1, { target: out })
  assert.equal(d1.mode, 'scan')
  assert.equal(d1.created, 1)
  assert.ok(same(image, out), 'deployed image equals the source')
  const st = await stat(out)
  assert.equal(st.size, IMAGE_SIZE)
  assert.ok(st.blocks * 512 < IMAGE_SIZE / 4, `written sparse: ${st.blocks * 512} bytes allocated`)
  assert.ok(d1.bytesWritten <= v1.dataBytes)
  const state = await readTargetState(store.targetsDir, out)
  assert.equal(state.deployed?.number, 1)
  assert.equal(state.inProgress, undefined)

  // v2: 3 MiB of new data in place, and 1 MiB of data zeroed (the target must lose it too).
  writeAt(image, region2, randomBytes(3 * MiB))
  writeAt(image, region1, Buffer.alloc(MiB))
  const v2 = await captureBlock(store, { device: image, image: 'disk', message: 'v2' })
  assert.equal(v2.version, 2)
  // Chunks around the two edits are cut anew: up to two 256 KiB neighbours of each edit (the
  // zeroed range stores nothing itself but re-cuts its neighbours too), plus the tree block.
  assert.ok(v2.newBytes >= 3 * MiB && v2.newBytes <= 3 * MiB + 4 * 256 * 1024 + 64 * 1024, `v2 stored ${v2.newBytes} new bytes`)

  const dry = await deployBlock(store, await store.resolve('disk@2'), { target: out, dryRun: true })
  assert.equal(dry.mode, 'diff')
  const d2 = await deployBlock(store, await store.resolve('disk@2'), { target: out })
  assert.equal(d2.mode, 'diff')
  assert.equal(d2.bytesWritten, dry.bytesWritten)
  // The new chunks only (newBytes is what the store grew by: the neighbours' chunks compress).
  assert.ok(d2.bytesWritten >= 3 * MiB && d2.bytesWritten <= 3 * MiB + 4 * 256 * 1024, `v2 deploy wrote ${d2.bytesWritten} bytes`)
  assert.ok(d2.bytesZeroed >= MiB && d2.bytesZeroed <= MiB + 512 * 1024, `zeroed ${d2.bytesZeroed}`)
  assert.equal(d2.bytesCompared, 0)
  assert.ok(d2.segmentsSkipped > 0)
  assert.ok(same(image, out), 'v2 deployed over v1 equals the source')
  const s2 = await readTargetState(store.targetsDir, out)
  assert.equal(s2.deployed?.number, 2)
  assert.equal(s2.previous?.number, 1)

  // Deploying the same version again compares (reads) and writes nothing.
  const repair = await deployBlock(store, await store.resolve('disk@2'), { target: out })
  assert.equal(repair.mode, 'scan')
  assert.equal(repair.bytesWritten, 0)
  // Back to v1 (rollback direction): the zeroed region comes back, the new data goes.
  const back = await deployBlock(store, r1, { target: out })
  assert.equal(back.mode, 'diff')
  assert.ok(back.bytesWritten <= 5 * MiB, `rollback wrote ${back.bytesWritten}`)
  const v1copy = join(work, 'v1-again.img')
  await deployBlock(store, r1, { target: v1copy })
  assert.ok(same(out, v1copy))
  await rm(v1copy)
})

test('deploying over an existing file of unknown content writes only what differs', { timeout: 60_000 }, async () => {
  const store = await ImageStore.open(join(work, 'data'))
  const target = join(work, 'stale.img')
  // A copy of v1 imgmesh knows nothing about: every equal chunk is found by reading.
  await deployBlock(store, await store.resolve('disk@1'), { target: join(work, 'tmp.img') })
  sh('cp', ['--sparse=always', join(work, 'tmp.img'), target])
  await rm(join(work, 'tmp.img'))
  const d = await deployBlock(store, await store.resolve('disk@2'), { target })
  assert.equal(d.mode, 'scan')
  assert.ok(d.bytesCompared > 0)
  assert.ok(d.bytesWritten <= 4 * MiB, `wrote ${d.bytesWritten}`)
  assert.ok(same(image, target))
})

test('bad input: a directory, a tree image, a block image into a directory, mixing kinds', async () => {
  const store = await ImageStore.open(join(work, 'data'))
  await assert.rejects(captureBlock(store, { device: work, image: 'x' }), (e: ImgmeshError) => e.code === 'EBADARG' && e.message.includes(work))
  await assert.rejects(captureBlock(store, { device: join(work, 'missing'), image: 'x' }), (e: ImgmeshError) => e.code === 'EBADARG')
  const dir = join(work, 'a-dir')
  await mkdir(dir)
  await assert.rejects(deployBlock(store, await store.resolve('disk'), { target: dir }), (e: ImgmeshError) => e.code === 'ETARGET' && e.message.includes(dir))
  await assert.rejects(deployBlock(store, await store.resolve('disk'), { target: join(work, 'no/such/dir/x.img') }), (e: ImgmeshError) => e.code === 'ETARGET')
  // A tree image cannot take a block capture, nor the reverse through the CLI.
  await mkdir(join(work, 'tree'))
  await writeFile(join(work, 'tree', 'f'), 'x')
  await imgmeshJson(['capture', join(work, 'tree'), '--image', 'treeimg', '--no-default-excludes', '--data-dir', join(work, 'data')])
  await assert.rejects(captureBlock(store, { device: image, image: 'treeimg' }), /holds directory trees/)
  await assert.rejects(deployBlock(store, await store.resolve('treeimg'), { target: join(work, 'x.img') }), /not a block image/)
})

test('loop devices: deploy to a larger device, refuse a smaller one and a mounted one', { skip: canLoop ? false : 'needs root and losetup', timeout: 120_000 }, async () => {
  const store = await ImageStore.open(join(work, 'data'))
  const r1 = await store.resolve('disk@1')
  const dev = loopDevice('big.dev', IMAGE_SIZE + 32 * MiB, true)
  const tailBefore = createHash('sha256').update(readFileSync(join(work, 'big.dev')).subarray(IMAGE_SIZE)).digest('hex')
  const d = await deployBlock(store, r1, { target: dev })
  assert.equal(d.targetType, 'device')
  assert.equal(d.mode, 'scan')
  assert.ok(d.warnings.some(w => /larger than the image/.test(w)))
  const ref = join(work, 'ref-v1.img')
  await deployBlock(store, r1, { target: ref })
  assert.ok(same(ref, dev, IMAGE_SIZE), 'device holds v1')
  // v2 over v1 on the device: diff mode, only the change written; the tail never touched.
  const d2 = await deployBlock(store, await store.resolve('disk@2'), { target: dev })
  assert.equal(d2.mode, 'diff')
  assert.ok(d2.bytesWritten <= 4 * MiB, `device update wrote ${d2.bytesWritten}`)
  assert.ok(same(image, dev, IMAGE_SIZE), 'device holds v2')
  spawnSync('blockdev', ['--flushbufs', dev])
  freeLoop(dev)
  assert.equal(createHash('sha256').update(readFileSync(join(work, 'big.dev')).subarray(IMAGE_SIZE)).digest('hex'), tailBefore, 'bytes after the image untouched')

  // Capture from the device gives the same segments as the file of the same bytes.
  const dev2 = loopDevice('same.dev', IMAGE_SIZE, false)
  await deployBlock(store, await store.resolve('disk@2'), { target: dev2 })
  const fromDev = await captureBlock(store, { device: dev2, image: 'fromdev' })
  const fromFile = await store.resolve('disk@2')
  assert.equal(fromDev.source, 'device')
  const segs = async (tree: string): Promise<string> => JSON.stringify((await store.loadTree(CID.parse(tree))).entries[0].segments!.map(x => [x.length, x.cid?.toString()]))
  assert.equal(await segs(fromDev.tree), await segs(fromFile.version.body.tree.toString()), 'same segments from the device and from the file')
  assert.ok(fromDev.newBytes < 64 * 1024, `capture of the device stored ${fromDev.newBytes} new bytes (its tree block only)`)

  // Too small: refused before anything is written.
  const small = loopDevice('small.dev', 64 * MiB, true)
  const before = sha(join(work, 'small.dev'), 64 * MiB)
  await assert.rejects(deployBlock(store, r1, { target: small }), (e: ImgmeshError) => e.code === 'ETARGET' && e.message.includes(small) && /less than/.test(e.message))
  assert.equal(sha(join(work, 'small.dev'), 64 * MiB), before)

  // Mounted: the kernel refuses the exclusive open, and nothing is written.
  if (filesystem) {
    await mkdir(join(work, 'mnt'))
    sh('mount', ['-o', 'ro', dev2, join(work, 'mnt')])
    try {
      await assert.rejects(deployBlock(store, r1, { target: dev2 }), (e: ImgmeshError) => e.code === 'ETARGET' && /in use/.test(e.message))
    } finally {
      sh('umount', [join(work, 'mnt')])
    }
  }
})

test('two agents: the second deploys the block image from the first, and v2 moves about the changed bytes', { timeout: 180_000 }, async () => {
  const agents = new AgentSet(join(work, 'nodes'))
  try {
    const key = await agents.init('a')
    await agents.init('b', { clusterKey: key, trust: [agents.publishers.get('a')!] })
    const a = await agents.start('a')
    await agents.start('b', { bootstrap: [a.addr] })
    const img = join(work, 'agent.img')
    sh('cp', ['--sparse=always', image, img])
    // --no-publish: b learns the versions through the heads exchange when it resolves them. A
    // published version is super-seeded (32 pieces shown at a time, growing only as shown pieces
    // go out); a follower that holds the parent's pieces wants none of the first ones shown, and
    // the update stalls. See the report in docs/benchmarks.md (Block devices).
    const c1 = await imgmeshJson<{ version: number, created: boolean }>(['capture', '--block', img, '--image', 'vm', '--no-publish', '--data-dir', agents.dataDir('a')])
    assert.equal(c1.version, 1)
    const target = join(work, 'b-disk.img')
    const d1 = await imgmeshJson<{ mode: string, bytesWritten: number }>(['deploy', 'vm@1', target, '--data-dir', agents.dataDir('b')])
    assert.equal(d1.mode, 'scan')
    assert.ok(same(img, target))

    writeAt(img, region2 + 512 * 1024, randomBytes(2 * MiB))
    const c2 = await imgmeshJson<{ version: number, newBytes: number }>(['capture', '--block', img, '--image', 'vm', '--no-publish', '--data-dir', agents.dataDir('a')])
    assert.equal(c2.version, 2)
    const traffic = async (): Promise<number> => (await (await ControlClient.require(agents.dataDir('b'))).call<{ traffic: { received: number } }>('status')).traffic.received
    const before = await traffic()
    const d2 = await imgmeshJson<{ mode: string, bytesWritten: number }>(['deploy', 'vm@2', target, '--data-dir', agents.dataDir('b')])
    const moved = await traffic() - before
    assert.equal(d2.mode, 'diff')
    assert.ok(same(img, target), 'b holds v2')
    assert.ok(moved >= 2 * MiB && moved <= c2.newBytes * 1.05 + 64 * 1024, `b received ${moved} bytes for ${c2.newBytes} new bytes`)
    assert.ok(d2.bytesWritten <= c2.newBytes, `b wrote ${d2.bytesWritten}`)
  } finally {
    await agents.stopAll()
  }
})

test('CLI: capture --block needs no SRC, and a block image deploys by name', async () => {
  const data = join(work, 'cli-data')
  const c = await imgmeshJson<{ image: string, version: number, bytes: number }>(['capture', '--block', image, '--image', 'raw', '--data-dir', data])
  assert.equal(c.bytes, IMAGE_SIZE)
  const target = join(work, 'cli.img')
  const d = await imgmeshJson<{ kind: string, created: number }>(['deploy', 'raw', target, '--data-dir', data])
  assert.equal(d.kind, 'block')
  assert.ok(same(image, target))
  const none = await imgmesh(['capture', '--image', 'raw', '--data-dir', data])
  assert.notEqual(none.code, 0)
})

test('a block image whose disk entry names runs of packs is refused (EBADTREE)', async () => {
  const pack = cidFor(randomBytes(100))
  const treeBytes = encodeTree([{ name: Buffer.from(BLOCK_IMAGE_ENTRY), type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: [], size: 50, segments: [{ length: 50, cid: pack, offset: 10 }] }])
  const treeCid = cidFor(treeBytes, 0x71)
  const blocks = { get: async (cid: CID) => { assert.ok(cid.equals(treeCid)); return treeBytes } }
  const body = { image: 'disk', number: 1, parents: [], tree: treeCid, root: { mode: 0o755, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: [] }, created: '2026-12-07T00:00:00Z', author: '00'.repeat(32), message: '', stats: { files: 1, dirs: 0, entries: 1, bytes: 50, chunks: 1, chunkBytes: 50 }, kind: 'block' as const }
  await assert.rejects(loadBlockEntry(blocks, { cid: treeCid, version: { body, signature: new Uint8Array(64) } }),
    (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADTREE' && /packed segments/.test(err.message))
})
