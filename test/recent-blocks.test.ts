/** The blocks read last: one read per pack for the files in it, a failure not kept, the oldest let go. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { RecentBlocks } from '../node/store/recent-blocks.ts'
import type { BlockGetter } from '../node/store/block-store.ts'
import { cidFor } from '../node/store/cid.ts'

function countingStore (blocks: Uint8Array[]): BlockGetter & { reads: Map<string, number>, failNext: Set<string> } {
  const byKey = new Map(blocks.map(b => [cidFor(b).toString(), b]))
  const reads = new Map<string, number>()
  const failNext = new Set<string>()
  return {
    reads,
    failNext,
    get: async (cid: CID) => {
      const key = cid.toString()
      reads.set(key, (reads.get(key) ?? 0) + 1)
      await new Promise(resolve => setImmediate(resolve))
      if (failNext.delete(key)) throw new Error('read failed')
      return byKey.get(key)!
    }
  }
}

test('files of one pack share its read; a failed read is asked again; the 17th pack lets the first go', async () => {
  const packs = Array.from({ length: 17 }, () => randomBytes(1000))
  const cids = packs.map(p => cidFor(p))
  const store = countingStore(packs)
  const recent = new RecentBlocks()
  const got = await Promise.all([recent.get(store, cids[0]), recent.get(store, cids[0]), recent.get(store, cids[0])])
  assert.ok(got.every(g => Buffer.compare(g, packs[0]) === 0))
  assert.equal(store.reads.get(cids[0].toString()), 1, 'three files, one read')

  store.failNext.add(cids[1].toString())
  await assert.rejects(recent.get(store, cids[1]), /read failed/)
  assert.deepEqual(await recent.get(store, cids[1]), packs[1])
  assert.equal(store.reads.get(cids[1].toString()), 2, 'the failure was not kept')

  for (let i = 2; i < 17; i++) await recent.get(store, cids[i])
  await recent.get(store, cids[16])
  assert.equal(store.reads.get(cids[16].toString()), 1)
  await recent.get(store, cids[0])
  assert.equal(store.reads.get(cids[0].toString()), 2, 'the oldest of 17 was let go')
})
