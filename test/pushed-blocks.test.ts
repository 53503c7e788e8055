import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { mayKeepPushed, PushedBlocks, treeAfterRoot } from '../node/exchange/pushed-blocks.ts'
import { DAG_CBOR_CODE } from '../node/store/cid.ts'

const cid = (codec: number): CID => CID.createV1(codec, Digest.create(0x12, new Uint8Array(randomBytes(32))))

test('pushed tree blocks: kept once each, taken once, oldest dropped past the limit', () => {
  const p = new PushedBlocks(10)
  p.put('a', new Uint8Array(4))
  p.put('b', new Uint8Array(4))
  p.put('a', new Uint8Array(4))
  assert.equal(p.size, 2)
  assert.equal(p.bytes, 8)
  p.put('c', new Uint8Array(4))
  assert.equal(p.take('a'), undefined, 'the oldest went first')
  assert.equal(p.bytes, 8)
  assert.equal(p.take('b')?.length, 4)
  assert.equal(p.take('b'), undefined, 'taken once')
  p.put('huge', new Uint8Array(11))
  assert.equal(p.take('huge'), undefined, 'a block over the limit is not kept')
  assert.equal(p.size, 1)
})

test('only tree blocks (dag-cbor) within the limit are kept unasked', () => {
  assert.equal(mayKeepPushed(cid(DAG_CBOR_CODE), 1000), true)
  assert.equal(mayKeepPushed(cid(0x55), 1000), false)
  assert.equal(mayKeepPushed(cid(DAG_CBOR_CODE), 2000, 1000), false)
})

test('the rest of a tree goes out after its root, once per stream, and for nothing else', () => {
  const tree = [cid(DAG_CBOR_CODE), cid(DAG_CBOR_CODE), cid(DAG_CBOR_CODE)]
  const lone = cid(DAG_CBOR_CODE)
  const offers = [{ tree: [lone] }, { tree }, {}]
  const sent = new Set<string>()
  assert.deepEqual(treeAfterRoot(tree[1], offers, sent), [], 'not a root')
  assert.deepEqual(treeAfterRoot(cid(0x55), offers, sent), [], 'a piece')
  assert.deepEqual(treeAfterRoot(tree[0], offers, sent).map(String), tree.slice(1).map(String))
  assert.deepEqual(treeAfterRoot(tree[0], offers, sent), [], 'sent already')
  assert.deepEqual(treeAfterRoot(lone, offers, new Set()), [], 'a tree of its root alone')
})
