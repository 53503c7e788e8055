import { test } from 'node:test'
import assert from 'node:assert/strict'
import { PeerPieces, MAX_TRACKED_PIECES, MAX_VERSIONS_PER_PEER } from '../node/exchange/peer-pieces.ts'
import { Bitfield } from '../node/fetch/bitfield.ts'

test('what a peer said it holds: indexes and bitmaps add up, all is all, an asking HAVE replaces', () => {
  const p = new PeerPieces()
  p.note('a', 'v1', 20, { kind: 'indexes', indexes: [1, 5] })
  const b = new Bitfield(20); b.set(7)
  p.note('a', 'v1', 20, { kind: 'bitmap', bitmap: b.bytes })
  assert.ok(p.has('a', 'v1', 20, 1) && p.has('a', 'v1', 20, 5) && p.has('a', 'v1', 20, 7))
  assert.ok(!p.has('a', 'v1', 20, 2))
  assert.ok(!p.has('a', 'v1', 21, 1), 'another piece count is another piece list: nothing known')
  assert.ok(!p.has('b', 'v1', 20, 1) && !p.has('a', 'v2', 20, 1))
  assert.ok(!p.hasAll('a', 'v1'))
  p.note('a', 'v1', 20, { kind: 'all' })
  assert.ok(p.hasAll('a', 'v1') && p.has('a', 'v1', 20, 19))
  p.note('a', 'v1', 20, { kind: 'indexes', indexes: [3] })
  assert.ok(p.hasAll('a', 'v1'), 'an update after all changes nothing')
  // After a GC the peer asks again with what it holds now: that replaces what we knew.
  p.note('a', 'v1', 20, { kind: 'indexes', indexes: [3] }, true)
  assert.ok(!p.hasAll('a', 'v1') && p.has('a', 'v1', 20, 3) && !p.has('a', 'v1', 20, 1))
  p.forget('a')
  assert.ok(!p.has('a', 'v1', 20, 3))
})

test('bounded: huge piece lists are not tracked, only the last versions per peer are kept', () => {
  const p = new PeerPieces()
  p.note('a', 'huge', MAX_TRACKED_PIECES + 1, { kind: 'indexes', indexes: [0] })
  assert.ok(!p.has('a', 'huge', MAX_TRACKED_PIECES + 1, 0))
  for (let v = 0; v < MAX_VERSIONS_PER_PEER + 3; v++) p.note('a', `v${v}`, 8, { kind: 'indexes', indexes: [v % 8] })
  const last = MAX_VERSIONS_PER_PEER + 2
  assert.ok(p.has('a', `v${last}`, 8, last % 8))
  assert.ok(!p.has('a', 'v0', 8, 0), 'the oldest version was dropped')
})

test('countLacking: the pieces of a set a peer is not known to hold', () => {
  const p = new PeerPieces()
  const told = new Bitfield(70)
  for (const i of [0, 3, 9, 40, 63, 64, 69]) told.set(i)
  assert.equal(p.countLacking('a', 'v1', told), 7, 'nothing known of the peer: it lacks all of them')
  p.note('a', 'v1', 70, { kind: 'indexes', indexes: [3, 40, 41, 69] })
  assert.equal(p.countLacking('a', 'v1', told), 4)
  assert.equal(p.countLacking('a', 'v1', new Bitfield(70)), 0)
  assert.equal(p.countLacking('a', 'v1', Bitfield.full(70)), 66)
  const other = new Bitfield(71); other.set(0); other.set(3)
  assert.equal(p.countLacking('a', 'v1', other), 2, 'another piece count is another piece list: nothing known')
  p.note('a', 'v1', 70, { kind: 'all' })
  assert.equal(p.countLacking('a', 'v1', told), 0)
})

test('HAVE pacing: news waits only while the peer can ask us for enough, and never past the longest wait', async () => {
  const { haveDue, HAVE_PACING } = await import('../node/fetch/have-pacing.ts')
  const { enough, batch, maxWaitMs } = HAVE_PACING
  assert.equal(haveDue(0, 0, 10_000), false, 'no news, nothing to send')
  assert.equal(haveDue(1, enough - 1, 0), true, 'a peer short of pieces to ask us for hears at once')
  assert.equal(haveDue(1, enough, 0), false, 'a peer with enough to ask for waits')
  assert.equal(haveDue(batch - 1, 10 * enough, maxWaitMs - 1), false)
  assert.equal(haveDue(batch, 10 * enough, 0), true, 'a full batch goes out')
  assert.equal(haveDue(1, 10 * enough, maxWaitMs), true, 'the longest wait has passed')
  assert.equal(haveDue(3, 5, 0, { enough: 4, batch: 100, maxWaitMs: 1000 }), false, 'settings are the caller\'s')
})
