/** Compressed blocks on the wire (node/exchange/zblocks.ts): frame headers, round trips, hostile input. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { zstdCompressSync } from 'node:zlib'
import { Uint8ArrayList } from 'uint8arraylist'
import { compressBlock, decompressBlocks, encodeZBlocks, frameContentSize, readWireMessages } from '../node/exchange/zblocks.ts'
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
