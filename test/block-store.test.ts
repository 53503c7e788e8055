/**
 * The block store's packs: blocks stored by another process are found (one by one or a list at
 * once), block keys are the same for every instance of a CID, a record cut short is
 * never used, a corrupt block is refused, gc rewrites packs and keeps what is referenced, and
 * a full disk leaves every stored block readable; blocks kept as their zstd frame read back checked.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, readdir, appendFile, open, mkdir } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { BlockStore } from '../node/store/block-store.ts'
import { CID, blockKey, cidFor } from '../node/store/cid.ts'
import { ImgmeshError } from '../node/errors.ts'

let work = ''
before(async () => { work = await mkdtemp(join(tmpdir(), 'imgmesh-blockstore-')) })
after(async () => { await rm(work, { recursive: true, force: true }) })

const STORE = fileURLToPath(new URL('../node/store/block-store.ts', import.meta.url))
const isRoot = (): boolean => process.getuid?.() === 0

/** Runs `use` with a fresh tmpfs of `size` mounted at work/name, unmounted after even on failure. */
async function withTmpfs (name: string, size: string, use: (mnt: string) => Promise<void>): Promise<void> {
  const mnt = join(work, name)
  await mkdir(mnt)
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt]).status, 0)
  try {
    await use(mnt)
  } finally {
    spawnSync('umount', ['-l', mnt])
  }
}

async function packs (dir: string): Promise<string[]> {
  return (await readdir(dir)).filter(n => n.endsWith('.pack'))
}

test('a block another process stored is found without reopening the store', async () => {
  const dir = join(work, 'shared')
  const store = new BlockStore(dir)
  await store.open()
  const mine = randomBytes(70_000)
  const { cid: myCid } = store.putSync(mine)
  const theirs = randomBytes(50_000)
  const cid = cidFor(theirs)
  assert.equal(await store.has(cid), false)
  const script = `import { BlockStore } from ${JSON.stringify(STORE)}
    import { CID } from 'multiformats/cid'
    const s = new BlockStore(${JSON.stringify(dir)}); await s.open()
    s.putSync(Buffer.from(${JSON.stringify(theirs.toString('base64'))}, 'base64'))
    if (!(await s.has(CID.parse(${JSON.stringify(myCid.toString())})))) process.exit(3)`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) })
  assert.equal(r.status, 0, r.stderr)
  // a list asked about at once: the other process's block is found, in the list's order
  const absent = cidFor(randomBytes(10))
  assert.deepEqual(store.heldOf([absent, cid, myCid, absent]), [false, true, true, false])
  assert.deepEqual(store.heldOf([]), [])
  assert.equal(await store.has(cid), true)
  assert.equal(await store.hasAll([myCid, cid]), true)
  assert.equal(await store.hasAll([myCid, cidFor(randomBytes(10))]), false)
  assert.deepEqual(Buffer.from(await store.get(cid)), theirs)
  assert.equal((await packs(dir)).length, 2)
})

test('a block key is the multihash as base64url, the same for every instance of a CID wherever its bytes lie', () => {
  const cid = cidFor(randomBytes(1000))
  const expected = Buffer.from(cid.multihash.bytes).toString('base64url')
  assert.equal(blockKey(cid), expected)
  assert.equal(blockKey(cid), expected)
  // an instance decoded from the middle of a larger buffer
  const buffer = new Uint8Array(cid.bytes.length + 10)
  buffer.set(cid.bytes, 3)
  const inside = CID.decode(buffer.subarray(3, 3 + cid.bytes.length))
  assert.notEqual(inside.multihash.bytes.byteOffset, 0)
  assert.equal(blockKey(inside), expected)
  assert.equal(blockKey(CID.parse(cid.toString())), expected)
  // a tree block with the same digest has the same key (the store is codec-independent)
  assert.equal(blockKey(CID.createV1(0x71, cid.multihash)), expected)
  assert.notEqual(blockKey(cidFor(randomBytes(1000))), expected)
})

test('a record cut short at the end of a pack is never used; the records before it are', async () => {
  const dir = join(work, 'cut')
  const a = new BlockStore(dir)
  await a.open()
  const blocks = [randomBytes(1000), randomBytes(2000)]
  const cids = blocks.map(b => a.putSync(b).cid)
  const [pack] = await packs(dir)
  // A header announcing 5000 bytes, of which 10 arrived (a crash mid-write).
  const mh = cidFor(randomBytes(10)).multihash.bytes
  await appendFile(join(dir, pack), Buffer.concat([Buffer.from([0x01, mh.length]), mh, Buffer.from([0x88, 0x27]), randomBytes(10)]))
  const b = new BlockStore(dir)
  await b.open()
  for (let i = 0; i < cids.length; i++) assert.deepEqual(Buffer.from(await b.get(cids[i])), blocks[i])
  assert.equal(b.stats().blocks, 2)
})

test('a corrupt block in a pack is refused with EBADBLOCK, and gc drops it', async () => {
  const dir = join(work, 'corrupt')
  const store = new BlockStore(dir)
  await store.open()
  const good = randomBytes(4000)
  const bad = randomBytes(4000)
  const goodCid = store.putSync(good).cid
  const badCid = store.putSync(bad).cid
  // An unreferenced block in the same pack: gc rewrites the pack, checking what it copies.
  store.putSync(randomBytes(4000))
  const at = store.locate(badCid)
  assert.ok(at !== null)
  const fh = await open(at.path, 'r+')
  await fh.write(Buffer.from([bad[7] ^ 0xff]), 0, 1, at.offset + 7)
  await fh.close()
  await assert.rejects(store.get(badCid), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')
  assert.throws(() => store.getSync(badCid), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')
  await store.sweep(new Set([blockKey(goodCid), blockKey(badCid)]))
  assert.equal(await store.has(badCid), false)
  assert.deepEqual(Buffer.from(await store.get(goodCid)), good)
})

test('gc deletes packs of unreferenced blocks, rewrites mixed packs, and what it keeps reads back after reopening', async () => {
  const dir = join(work, 'gc')
  const store = new BlockStore(dir)
  await store.open()
  const keepBlocks = Array.from({ length: 20 }, () => randomBytes(3000 + Math.floor(Math.random() * 3000)))
  const dropBlocks = Array.from({ length: 30 }, () => randomBytes(3000))
  const keep = new Set<string>()
  for (let i = 0; i < 50; i++) {
    if (i % 5 < 2 && i / 5 < 10) { const { cid } = store.putSync(keepBlocks[keep.size]); keep.add(blockKey(cid)) } else if (dropBlocks.length > 0) store.putSync(dropBlocks.pop()!)
  }
  // A second pack (another store object) holding only garbage: deleted whole.
  const other = new BlockStore(dir)
  await other.open()
  for (let i = 0; i < 5; i++) other.putSync(randomBytes(1000))
  const before = store.stats()
  const r = await store.sweep(keep)
  assert.equal(r.removed, before.blocks - keep.size - 5)
  assert.ok(r.bytes > 0)
  const fresh = new BlockStore(dir)
  await fresh.open()
  assert.equal(fresh.stats().blocks, keep.size + 5, 'the live pack of the other store object is left alone')
  let n = 0
  for await (const cid of fresh.cids()) {
    if (!keep.has(blockKey(cid))) continue
    await fresh.get(cid)
    n++
  }
  assert.equal(n, keep.size)
})

test('a full disk fails a put with ENOSPC and every block stored before stays readable', { skip: !isRoot() && 'needs root to mount tmpfs' }, async () => {
  await withTmpfs('full', '1m', async (mnt) => {
    const store = new BlockStore(join(mnt, 'blocks'))
    await store.open()
    const stored: Array<[ReturnType<typeof cidFor>, Buffer]> = []
    let error: unknown = null
    for (let i = 0; i < 40 && error === null; i++) {
      const b = randomBytes(100_000)
      try { stored.push([store.putSync(b).cid, b]) } catch (err) { error = err }
    }
    assert.ok(error instanceof ImgmeshError && error.code === 'ENOSPC', `expected ENOSPC, got ${String(error)}`)
    assert.match(error.message, /no space left/)
    const fresh = new BlockStore(join(mnt, 'blocks'))
    await fresh.open()
    assert.equal(fresh.stats().blocks, stored.length)
    for (const [cid, b] of stored) assert.deepEqual(Buffer.from(await fresh.get(cid)), b)
    store.close()
    fresh.close()
  })
})

test('a store on tmpfs reads synchronously: blocks plain and compressed read back checked, a corrupt one is EBADBLOCK', { skip: !isRoot() && 'needs root to mount tmpfs' }, async () => {
  const { nativeFs } = await import('../node/native/fsx.ts')
  await withTmpfs('memory', '8m', async (mnt) => {
    const store = new BlockStore(join(mnt, 'blocks'))
    await store.open()
    assert.equal(store.inMemory, true)
    const plain = randomBytes(70_000)
    const text = Buffer.from('a line of text that compresses well\n'.repeat(3000))
    const plainCid = store.putSync(plain).cid
    const textCid = store.putCompressedSync(text).cid
    // The reads this store would otherwise try first are refused here.
    const at = store.locate(plainCid)
    assert.ok(at !== null)
    const { openSync, closeSync } = await import('node:fs')
    const fd = openSync(at.path, 'r')
    try { assert.equal(nativeFs.readCached(fd, new Uint8Array(16), 0), -1) } finally { closeSync(fd) }
    assert.deepEqual(Buffer.from(await store.get(plainCid)), plain)
    const withFrame = await store.getWithFrame(textCid)
    assert.deepEqual(Buffer.from(withFrame.bytes), text)
    assert.ok(withFrame.frame !== undefined && withFrame.frame.length < text.length / 10)
    assert.deepEqual(Buffer.from(store.getSync(textCid)), text)
    const fh = await open(at.path, 'r+')
    await fh.write(Buffer.from([plain[9] ^ 0xff]), 0, 1, at.offset + 9)
    await fh.close()
    await assert.rejects(store.get(plainCid), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')
    store.close()
    const onDisk = new BlockStore(join(work, 'on-disk'))
    await onDisk.open()
    assert.equal(onDisk.inMemory, (spawnSync('stat', ['-f', '-c', '%T', work], { encoding: 'utf8' }).stdout.trim() === 'tmpfs'))
    onDisk.close()
  })
})

test('a read that never waits: whole block from the page cache, short at the end of the file, 0 past it, EBADF on a closed fd', async () => {
  const { nativeFs } = await import('../node/native/fsx.ts')
  const { openSync, closeSync, writeFileSync } = await import('node:fs')
  const path = join(work, 'cached.bin')
  const data = randomBytes(200_000)
  writeFileSync(path, data)
  const fd = openSync(path, 'r')
  try {
    const buf = new Uint8Array(65536)
    const n = nativeFs.readCached(fd, buf, 4096)
    // -1 only where the filesystem offers no such reads: ext4 does, tmpfs does not (a block
    // store on tmpfs reads synchronously instead, see the test above).
    assert.equal(n, 65536)
    assert.deepEqual(Buffer.from(buf), data.subarray(4096, 4096 + 65536))
    assert.equal(nativeFs.readCached(fd, buf, 200_000 - 100), 100, 'short at the end of the file')
    assert.equal(nativeFs.readCached(fd, buf, 300_000), 0, 'nothing past the end')
  } finally {
    closeSync(fd)
  }
  assert.throws(() => nativeFs.readCached(fd, new Uint8Array(16), 0), { code: 'EBADF' })
})

test('a block received compressed is kept as its zstd frame: read back decompressed and checked, after reopening and gc too; a corrupt frame is EBADBLOCK', async () => {
  const { zstdCompressSync } = await import('node:zlib')
  const dir = join(work, 'zstd')
  const store = new BlockStore(dir)
  await store.open()
  const zblock = (text: string): [Buffer, Buffer] => {
    const b = Buffer.from(text.repeat(Math.ceil(60_000 / text.length)))
    return [b, zstdCompressSync(b, { pledgedSrcSize: b.length })]
  }
  const [a, aFrame] = zblock('lib/x86_64-linux-gnu/libc.so.6 ')
  const [c, cFrame] = zblock('usr/share/zoneinfo/Europe/Paris ')
  const { cid: aCid } = store.putTrustedSync(cidFor(a), a, aFrame)
  const b = randomBytes(40_000)
  const { cid: bCid } = store.putSync(b)
  const { cid: cCid } = store.putTrustedSync(cidFor(c), c, cFrame)
  const at = store.locate(aCid)!
  assert.equal(at.zstd, true)
  assert.equal(at.length, aFrame.length, 'the frame is what was written')
  assert.equal(store.locate(bCid)!.zstd, false)
  assert.deepEqual(store.stats(), { blocks: 3, bytes: aFrame.length + b.length + cFrame.length })
  assert.deepEqual(Buffer.from(await store.get(aCid)), a)
  assert.deepEqual(Buffer.from(store.getSync(cCid)), c)
  store.close()

  // another store object reads the pack's records of both kinds
  const again = new BlockStore(dir)
  await again.open()
  assert.deepEqual(Buffer.from(await again.get(aCid)), a)
  assert.deepEqual(Buffer.from(await again.get(bCid)), b)
  const withFrame = await again.getWithFrame(aCid)
  assert.deepEqual(Buffer.from(withFrame.bytes), a)
  assert.deepEqual(Buffer.from(withFrame.frame!), aFrame, 'the frame as it was stored, for a server to send as it is')
  assert.equal((await again.getWithFrame(bCid)).frame, undefined)

  // a byte flipped inside a stored frame: EBADBLOCK (never other bytes)
  const loc = again.locate(cCid)!
  const fh = await open(loc.path, 'r+')
  const byte = Buffer.alloc(1)
  const where = loc.offset + Math.floor(loc.length / 2)
  await fh.read(byte, 0, 1, where)
  byte[0] ^= 0x55
  await fh.write(byte, 0, 1, where)
  await fh.close()
  await assert.rejects(again.get(cCid), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')
  await assert.rejects(again.getWithFrame(cCid), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')
  assert.throws(() => again.getSync(cCid), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')

  // gc: b is not referenced, c is corrupt; a is copied as a frame and reads back
  const swept = await again.sweep(new Set([blockKey(aCid), blockKey(cCid)]))
  assert.equal(swept.removed, 2)
  assert.equal(await again.has(cCid), false)
  assert.equal(again.locate(aCid)!.zstd, true)
  assert.equal(again.locate(aCid)!.length, aFrame.length)
  assert.deepEqual(Buffer.from(await again.get(aCid)), a)

  // a frame larger than its block is not kept: the block is
  const tiny = Buffer.from('x')
  again.putTrustedSync(cidFor(tiny), tiny, zstdCompressSync(tiny, { pledgedSrcSize: 1 }))
  assert.equal(again.locate(cidFor(tiny))!.zstd, false)
  assert.deepEqual(Buffer.from(await again.get(cidFor(tiny))), tiny)

  // a frame that decompresses to other bytes than its CID names is refused on read
  const named = Buffer.from('what the CID names, long enough for a frame to be smaller '.repeat(50))
  again.putTrustedSync(cidFor(named), named, cFrame)
  await assert.rejects(again.get(cidFor(named)), (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')
  again.close()
})

test('putCompressedSync keeps a block as its zstd frame where that saves a tenth, else plain; a stored block is not stored again', async () => {
  const dir = join(work, 'compress-put')
  const store = new BlockStore(dir)
  await store.open()
  const text = Buffer.from('etc/ssh/sshd_config PermitRootLogin prohibit-password\n'.repeat(1200))
  const noise = randomBytes(50_000)
  const tiny = Buffer.from('short')
  const t = store.putCompressedSync(text)
  const n = store.putCompressedSync(noise)
  const s = store.putCompressedSync(tiny)
  assert.deepEqual([t.added, n.added, s.added], [true, true, true])
  const tl = store.locate(t.cid)!
  assert.equal(tl.zstd, true)
  assert.ok(tl.length < text.length / 10, `frame of ${tl.length} bytes for ${text.length}`)
  assert.equal(store.locate(n.cid)!.zstd, false, 'random bytes stay plain')
  assert.equal(store.locate(s.cid)!.zstd, false, 'a tiny block stays plain')
  // The same CIDs as plain puts, and the bytes read back checked.
  assert.equal(t.cid.toString(), cidFor(text).toString())
  assert.deepEqual(Buffer.from(await store.get(t.cid)), text)
  assert.deepEqual(Buffer.from(store.getSync(n.cid)), noise)
  const before = store.stats()
  assert.equal(store.putCompressedSync(text).added, false)
  assert.equal(store.putSync(text).added, false)
  assert.deepEqual(store.stats(), before)
  store.close()
})
