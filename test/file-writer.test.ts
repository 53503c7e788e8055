/**
 * Writing a file whose chunks are still on their way (BlockGetter.whenArrived): each chunk is written
 * at its offset the moment it arrives, in any order; a chunk that fails fails the file and
 * leaves nothing behind, and a chunk arriving after that writes nowhere.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { writeRegularFile, type WriterContext } from '../node/target/file-writer.ts'
import type { BlockGetter } from '../node/store/block-store.ts'
import type { TreeEntry } from '../protocols/tree.ts'
import { cidFor } from '../node/store/cid.ts'
import { ImgmeshError } from '../node/errors.ts'

interface Arrival { cid: CID, arrived: (b: Uint8Array) => void, failed: (e: Error) => void }

/** Chunks that are all still to come; the test decides when (and whether) each arrives. */
function arrivingBlocks (chunks: Map<string, Uint8Array>): BlockGetter & { waiting: Arrival[], deliver: (i: number) => void } {
  const waiting: Arrival[] = []
  return {
    waiting,
    whenArrived: (cid, arrived, failed) => { waiting.push({ cid, arrived, failed }); return true },
    get: async () => { throw new Error('get() asked for a chunk that was still to come') },
    deliver: (i) => { const w = waiting[i]; w.arrived(chunks.get(w.cid.toString())!) }
  }
}

function fileEntry (parts: Uint8Array[]): { entry: TreeEntry, chunks: Map<string, Uint8Array> } {
  const chunks = new Map<string, Uint8Array>()
  const segments = parts.map((p) => { const cid = cidFor(p); chunks.set(cid.toString(), p); return { cid, length: p.length } })
  const size = parts.reduce((a, p) => a + p.length, 0)
  return {
    entry: { name: Buffer.from('f'), type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 5, xattrs: [], size, segments },
    chunks
  }
}

const tick = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

test('chunks arriving in reverse order land at their offsets', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imgmesh-fw-'))
  try {
    const parts = [randomBytes(70_000), randomBytes(1), randomBytes(65_536), randomBytes(123_457)]
    const { entry, chunks } = fileEntry(parts)
    const blocks = arrivingBlocks(chunks)
    const ctx: WriterContext = { blocks, privileged: false, warn: () => {} }
    const done = writeRegularFile(ctx, Buffer.from(dir), Buffer.from(join(dir, 'f')), Buffer.from('f'), entry)
    await tick()
    assert.equal(blocks.waiting.length, parts.length, 'every missing chunk is asked for at once')
    for (let i = parts.length - 1; i >= 0; i--) { blocks.deliver(i); await tick() }
    assert.equal(await done, entry.size)
    assert.deepEqual(readFileSync(join(dir, 'f')), Buffer.concat(parts))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a chunk that fails fails the file at once; nothing is left and a late chunk writes nowhere', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imgmesh-fw-'))
  try {
    const parts = [randomBytes(5000), randomBytes(6000), randomBytes(7000)]
    const { entry, chunks } = fileEntry(parts)
    const blocks = arrivingBlocks(chunks)
    const ctx: WriterContext = { blocks, privileged: false, warn: () => {} }
    const done = writeRegularFile(ctx, Buffer.from(dir), Buffer.from(join(dir, 'f')), Buffer.from('f'), entry)
    await tick()
    blocks.deliver(0)
    blocks.waiting[1].failed(new ImgmeshError('ENOBLOCK', 'no peer has it'))
    await assert.rejects(done, /no peer has it/)
    blocks.deliver(2)
    await tick()
    assert.equal(existsSync(join(dir, 'f')), false)
    assert.deepEqual(readdirSync(dir), [], 'a temporary file was left behind')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a chunk of the wrong length is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imgmesh-fw-'))
  try {
    const { entry, chunks } = fileEntry([randomBytes(4000), randomBytes(4000)])
    const blocks = arrivingBlocks(chunks)
    const ctx: WriterContext = { blocks, privileged: false, warn: () => {} }
    const done = writeRegularFile(ctx, Buffer.from(dir), Buffer.from(join(dir, 'f')), Buffer.from('f'), entry)
    await tick()
    blocks.waiting[1].arrived(randomBytes(10))
    await assert.rejects(done, (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK')
    assert.deepEqual(readdirSync(dir), [])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('files packed into one chunk each take their run of it; a pack too short for a run is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imgmesh-fw-'))
  try {
    const pack = randomBytes(9000)
    const cid = cidFor(pack)
    const packed = (name: string, offset: number, length: number): TreeEntry =>
      ({ name: Buffer.from(name), type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 5, xattrs: [], size: length, segments: [{ cid, length, offset }] })
    const blocks = arrivingBlocks(new Map([[cid.toString(), pack]]))
    const ctx: WriterContext = { blocks, privileged: false, warn: () => {} }
    const a = writeRegularFile(ctx, Buffer.from(dir), Buffer.from(join(dir, 'a')), Buffer.from('a'), packed('a', 0, 4000))
    const b = writeRegularFile(ctx, Buffer.from(dir), Buffer.from(join(dir, 'b')), Buffer.from('b'), packed('b', 4000, 5000))
    // a hostile tree: a run past the pack's end
    const c = writeRegularFile(ctx, Buffer.from(dir), Buffer.from(join(dir, 'c')), Buffer.from('c'), packed('c', 8000, 1001))
    await tick()
    assert.equal(blocks.waiting.length, 3, 'each file waits for the same pack')
    for (let i = 0; i < 3; i++) blocks.deliver(i)
    assert.equal(await a, 4000)
    assert.equal(await b, 5000)
    await assert.rejects(c, (err: unknown) => err instanceof ImgmeshError && err.code === 'EBADBLOCK' && /at least 9001/.test(err.message))
    assert.deepEqual(readFileSync(join(dir, 'a')), pack.subarray(0, 4000))
    assert.deepEqual(readFileSync(join(dir, 'b')), pack.subarray(4000))
    assert.deepEqual(readdirSync(dir).sort(), ['a', 'b'], 'nothing is left of the refused file')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
