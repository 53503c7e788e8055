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
