/** Compressed blocks on the wire (node/exchange/zblocks.ts, node/native/zstd.c): frame headers, round trips, hostile input. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib'
import { Uint8ArrayList } from 'uint8arraylist'
import { BlockInflater, compressBlock, decompressBlock, decompressBlocks, encodeZBlocks, frameContentSize, readWireMessages } from '../node/exchange/zblocks.ts'
import { nativeZstd } from '../node/native/zstd.ts'
import { cidFor } from '../node/store/cid.ts'

test('frame headers give the content size for every size class', () => {
  for (const n of [1, 255, 256, 300, 65535, 65536, 65791, 70000, 262144, 4 << 20]) {
    const b = Buffer.alloc(n, 7)
    assert.equal(frameContentSize(zstdCompressSync(b)), n)
  }
  assert.equal(frameContentSize(new Uint8Array([1, 2, 3, 4, 5, 6])), null)
})

test('compressBlock: text shrinks and round-trips, random bytes are left alone', async () => {
  const text = Buffer.from('usr/lib/x86_64-linux-gnu/'.repeat(3000))
  const z = await compressBlock(text)
  assert.ok(z !== null && z.length < text.length / 2)
  assert.deepEqual(Buffer.from(decompressBlocks([z])[0]), text)
  assert.equal(await compressBlock(randomBytes(65536)), null)
})

test('ZBLOCK messages round-trip through the wire reader; garbage is refused', async () => {
  const blocks = [Buffer.from('a'.repeat(5000)), Buffer.from('b'.repeat(9000))]
  const zs = await Promise.all(blocks.map(async b => (await compressBlock(b))!))
  const parts = encodeZBlocks({ type: 'zblock', id: 7, blocks: blocks.map((b, i) => ({ cid: cidFor(b), z: zs[i] })) })
  const wire = new Uint8ArrayList(...parts).subarray()
  const source = (async function * () { yield wire.subarray(0, 100); yield wire.subarray(100) })()
  const got = []
  for await (const m of readWireMessages(source)) got.push(m)
  assert.equal(got.length, 1)
  const m = got[0]
  assert.equal(m.type, 'zblock')
  if (m.type !== 'zblock') return
  assert.equal(m.id, 7)
  const out = decompressBlocks(m.blocks.map(b => b.z))
  assert.deepEqual(out.map(b => Buffer.from(b).toString()), blocks.map(b => b.toString()))
  assert.throws(() => decompressBlocks([new Uint8Array([0x28, 0xb5, 0x2f, 0xfd, 0x60, 0x10, 0x00, 1, 2, 3])]), { code: 'EPROTOCOL' })
  // a frame that says it holds more than any block may
  const big = zstdCompressSync(Buffer.alloc(5 << 20))
  assert.throws(() => decompressBlocks([big]), { code: 'EPROTOCOL' })
})

test('the kept zstd contexts: frames node:zlib reads and writes, lies about the size refused', async () => {
  assert.equal(nativeZstd.available, true, 'this Node exports zstd')
  const text = Buffer.from('etc/systemd/system/multi-user.target.wants/'.repeat(2000))
  const ours = await compressBlock(text)
  assert.ok(ours !== null)
  assert.deepEqual(zstdDecompressSync(ours), text)
  assert.equal(frameContentSize(ours), text.length)
  // node:zlib's frames, and many blocks one after another through the same context
  for (let i = 0; i < 50; i++) {
    const b = Buffer.concat([text.subarray(0, 1000 * i), randomBytes(3000)])
    assert.deepEqual(Buffer.from(decompressBlock(zstdCompressSync(b, { pledgedSrcSize: b.length }))), b)
  }
  // a frame that declares fewer bytes than it holds, or more, or is cut short
  const five = zstdCompressSync(Buffer.alloc(5000, 1), { pledgedSrcSize: 5000 })
  const lying = Buffer.from(zstdCompressSync(Buffer.alloc(6000, 1), { pledgedSrcSize: 6000 }))
  assert.equal(frameContentSize(lying), 6000)
  // single segment, 2-byte content size (value - 256) right after the descriptor: say 5000
  assert.equal(lying[4] & 0xe0, 0x60)
  lying.writeUInt16LE(5000 - 256, 5)
  assert.equal(frameContentSize(lying), 5000)
  assert.throws(() => decompressBlock(lying), { code: 'EPROTOCOL' })
  assert.throws(() => decompressBlock(five.subarray(0, five.length - 3)), { code: 'EPROTOCOL' })
  const corrupt = Buffer.from(ours)
  corrupt[corrupt.length - 5] ^= 0xff
  assert.throws(() => decompressBlock(Buffer.concat([five, five])), { code: 'EPROTOCOL' })
  // whatever a corrupt frame yields, it is never taken for the block: either refused here, or
  // bytes that fail the CID check after
  let refused = false
  try { refused = !Buffer.from(decompressBlock(corrupt)).equals(text) } catch (err) { refused = (err as { code?: string }).code === 'EPROTOCOL' }
  assert.ok(refused)
  // and the context still works after errors
  assert.deepEqual(Buffer.from(decompressBlock(ours)), text)
  assert.throws(() => nativeZstd.decompress!(new Uint8Array(4), 'x' as unknown as Uint8Array), /Uint8Array/)
})

test('a BlockInflater decompresses block after block into one buffer it reuses, and refuses what decompressBlock refuses', async () => {
  const inflater = new BlockInflater()
  const text = Buffer.from('usr/share/doc/base-files/copyright '.repeat(1800))
  const blocks = [text, randomBytes(70_000), text.subarray(0, 10), Buffer.concat([text, text, text, text, text])]
  const frames = blocks.map(b => zstdCompressSync(b, { pledgedSrcSize: b.length }))
  const first = inflater.inflate(frames[0])
  assert.deepEqual(Buffer.from(first), text)
  const second = inflater.inflate(frames[1])
  assert.deepEqual(Buffer.from(second), blocks[1])
  assert.equal(first.buffer, second.buffer, 'the same buffer: a result is lent until the next call')
  for (const [k, f] of frames.entries()) assert.deepEqual(Buffer.from(inflater.inflate(f)), blocks[k], `block ${k}`)
  // blocks larger than the buffer (blocks[3] is 315 KB, past the first 256 KiB) grow it
  assert.ok(blocks[3].length > 256 * 1024)
  const big = randomBytes(600_000)
  assert.deepEqual(Buffer.from(inflater.inflate(zstdCompressSync(big, { pledgedSrcSize: big.length }))), big)
  // refused: a frame that declares fewer bytes than it holds, a cut frame, two frames
  const lying = Buffer.from(zstdCompressSync(Buffer.alloc(6000, 1), { pledgedSrcSize: 6000 }))
  lying.writeUInt16LE(5000 - 256, 5)
  assert.throws(() => inflater.inflate(lying), { code: 'EPROTOCOL' })
  assert.throws(() => inflater.inflate(frames[0].subarray(0, frames[0].length - 3)), { code: 'EPROTOCOL' })
  assert.throws(() => inflater.inflate(Buffer.concat([frames[2], frames[2]])), { code: 'EPROTOCOL' })
  // and it works after errors
  assert.deepEqual(Buffer.from(inflater.inflate(frames[0])), text)
})
