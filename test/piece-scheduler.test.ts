/** Piece choice: rarest first, in-flight bounds, endgame, peers leaving; super-seeding's once-before-twice rule. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Bitfield } from '../node/fetch/bitfield.ts'
import { ENDGAME_PIECES, PieceScheduler, endgameStart } from '../node/fetch/piece-scheduler.ts'
import { SuperSeed } from '../node/fetch/super-seed.ts'

function bits (size: number, indexes: number[]): Bitfield {
  const b = new Bitfield(size)
  for (const i of indexes) b.set(i)
  return b
}

test('bitfield keeps its count and masks spare bits', () => {
  const b = new Bitfield(10, new Uint8Array([0xff, 0xff]))
  assert.equal(b.cardinality, 10)
  assert.ok(b.complete)
  assert.ok(b.clear(3))
  assert.equal(b.cardinality, 9)
  assert.ok(!b.has(3))
  assert.ok(!b.set(10))
})

test('bitfield counts its changes: a piece cleared and set again is a change with the same count', () => {
  const b = new Bitfield(16)
  assert.equal(b.changes, 0)
  b.set(2)
  b.set(2)
  b.clear(5)
  b.set(16)
  assert.equal(b.changes, 1, 'a no-op set or clear is not a change')
  b.clear(2)
  b.set(2)
  assert.equal(b.cardinality, 1)
  assert.equal(b.changes, 3)
  assert.equal(new Bitfield(8, new Uint8Array([0xf0])).changes, 0, 'bits given at construction are the start, not changes')
})

test('rarest pieces are asked first, within the in-flight bound', () => {
  const s = new PieceScheduler(6, undefined, { maxInFlight: 2, random: () => 0.5 })
  s.setPeer('a', Bitfield.full(6))
  s.setPeer('b', bits(6, [0, 1, 2, 3]))
  // 4 and 5 are held only by a: rarest.
  assert.deepEqual(s.next('a').sort(), [4, 5])
  assert.deepEqual(s.next('a'), [])
  const fromB = s.next('b')
  assert.equal(fromB.length, 2)
  assert.ok(fromB.every(i => i < 4))
  assert.deepEqual(s.received('a', 4), [])
  assert.equal(s.next('a').length, 1)
})

test('endgame asks the last pieces of several peers and cancels the losers', () => {
  const s = new PieceScheduler(2, undefined, { maxInFlight: 4, endgamePieces: 2 })
  s.setPeer('a', Bitfield.full(2))
  s.setPeer('b', Bitfield.full(2))
  assert.equal(s.next('a').length, 2)
  assert.equal(s.next('b').length, 2)
  assert.deepEqual(s.received('a', 0), ['b'])
  assert.equal(s.inFlight('b'), 1)
  assert.deepEqual(s.received('b', 1), ['a'])
  assert.ok(s.done)
})

test('a fetch of few pieces starts its endgame late: the last 32nd of them, at least 2', () => {
  assert.equal(endgameStart(1923), ENDGAME_PIECES)
  assert.equal(endgameStart(512), ENDGAME_PIECES)
  assert.equal(endgameStart(69), 3)
  assert.equal(endgameStart(10), 2)
  // An update: 60 of 64 pieces held, 4 missing, two holders. Endgame at 2 missing.
  const have = new Bitfield(64)
  for (let i = 0; i < 60; i++) have.set(i)
  const s = new PieceScheduler(64, have, { maxInFlight: 8, random: () => 0.5 })
  s.setPeer('a', Bitfield.full(64))
  s.setPeer('b', Bitfield.full(64))
  assert.deepEqual(s.next('a').sort(), [60, 61, 62, 63])
  assert.deepEqual(s.next('b'), [], '4 missing: no endgame yet, nothing asked twice')
  s.received('a', 60)
  s.received('a', 61)
  assert.deepEqual(s.next('b').sort(), [62, 63], '2 missing: the endgame asks b too')
})

test('in the endgame a piece is asked of at most endgameFanout peers at once', () => {
  const s = new PieceScheduler(3, undefined, { maxInFlight: 8, endgamePieces: 3, endgameFanout: 2 })
  for (const p of ['a', 'b', 'c', 'd']) s.setPeer(p, Bitfield.full(3))
  assert.equal(s.next('a').length, 3)
  assert.equal(s.next('b').length, 3)
  // Every piece is asked of a and b: c and d get nothing until one of them fails.
  assert.deepEqual(s.next('c'), [])
  assert.deepEqual(s.next('d'), [])
  s.failed('b', 2)
  assert.deepEqual(s.next('c'), [2])
  assert.deepEqual(s.next('d'), [])
  assert.deepEqual(s.received('c', 2), ['a'])
  assert.deepEqual(s.received('a', 0).sort(), ['b'])
})

test('a peer leaving gives its requests back; DONT_HAVE removes the piece from its map', () => {
  const s = new PieceScheduler(4, undefined, { maxInFlight: 4, endgamePieces: 0 })
  s.setPeer('a', Bitfield.full(4))
  s.setPeer('b', Bitfield.full(4))
  const taken = s.next('a')
  assert.equal(taken.length, 4)
  assert.deepEqual(s.next('b'), [])
  assert.deepEqual(s.removePeer('a').sort(), [0, 1, 2, 3])
  const again = s.next('b')
  assert.equal(again.length, 4)
  s.failed('b', again[0], true)
  assert.deepEqual(s.next('b'), [])
})

test('super-seeding sends every piece once before any twice', () => {
  const pieces = 64
  const seed = new SuperSeed(pieces, 4)
  const served = new Uint32Array(pieces)
  const peers = ['p1', 'p2', 'p3', 'p4', 'p5']
  let rounds = 0
  while (!seed.finished && rounds++ < 1000) {
    for (const p of peers) {
      if (seed.finished) break
      const offer = seed.offer(p)
      for (let i = 0; i < pieces; i++) {
        if (!offer.has(i) || !seed.allowed(p, i)) continue
        // The once-before-twice rule: nothing goes out a second time while something has not gone out.
        if (served[i] > 0) assert.ok([...served].every(c => c > 0), `piece ${i} sent twice before all were sent`)
        served[i]++
        seed.sent(p, i)
        break
      }
    }
  }
  assert.ok(seed.finished)
  assert.ok([...served].every(c => c === 1), 'each piece went out exactly once')
  assert.equal(seed.offer('p1').cardinality, pieces)
})

test('super-seeding an update offers only the pieces its parent lacks', () => {
  const spread = new Bitfield(8)
  for (let i = 0; i < 6; i++) spread.set(i)
  const seed = new SuperSeed(8, 4, spread)
  const offer = seed.offer('p1')
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].filter(i => offer.has(i)), [6, 7])
  assert.ok(!seed.allowed('p1', 0))
  seed.sent('p1', 6)
  seed.sent('p1', 7)
  assert.ok(seed.finished)
  assert.ok(seed.allowed('p2', 0))
  const all = new SuperSeed(4, 4, Bitfield.full(4))
  assert.ok(all.finished)
})

test('super-seeding shows a peer as many pieces as it took in the last window, at least perPeer', () => {
  const seed = new SuperSeed(1000, 2, undefined, { windowMs: 100 })
  const pending = (peer: string): number => {
    const b = seed.offer(peer)
    let n = 0
    for (let i = 0; i < 1000; i++) if (b.has(i) && seed.allowed(peer, i)) n++
    return n
  }
  assert.equal(pending('fast'), 2)
  assert.equal(pending('slow'), 2)
  // 'fast' takes 40 pieces within 40 ms: it is shown 40 untaken pieces.
  for (let t = 0; t < 40; t++) {
    const b = seed.offer('fast')
    const i = [...Array(1000).keys()].find(k => b.has(k) && seed.allowed('fast', k))!
    seed.sent('fast', i, 1000 + t)
  }
  assert.equal(pending('fast'), 40)
  // 'slow' takes one piece a second: it stays at 2.
  for (let t = 0; t < 3; t++) {
    const b = seed.offer('slow')
    const i = [...Array(1000).keys()].find(k => b.has(k) && seed.allowed('slow', k))!
    seed.sent('slow', i, 2000 + t * 1000)
  }
  assert.equal(pending('slow'), 2)
  // Once 'fast' pauses past the window, its next piece brings it back to the floor for new offers.
  const b = seed.offer('fast')
  const i = [...Array(1000).keys()].find(k => b.has(k) && seed.allowed('fast', k))!
  seed.sent('fast', i, 10_000)
  assert.ok(pending('fast') >= 2)
})

test('super-seeding gives up and shows everything once no new piece has gone out for stallMs', () => {
  let now = 1_000_000
  const ss = new SuperSeed(4, 1, undefined, { stallMs: 15_000, now: () => now })
  // nothing sent yet: an origin waiting for its first peer keeps super-seeding however long
  now += 60_000
  assert.equal(ss.finished, false)
  assert.equal(ss.offer('a').cardinality, 1)
  const b = ss.offer('b') // b never takes what it is shown (it has not heard of the version)
  const bPiece = [0, 1, 2, 3].find(i => b.has(i))!
  const aPiece = [0, 1, 2, 3].find(i => ss.offer('a').has(i))!
  ss.sent('a', aPiece, now)
  now += 14_000
  assert.equal(ss.finished, false)
  assert.equal(ss.allowed('c', bPiece), false, 'a piece offered only to b went to c while super-seeding')
  now += 2_000
  assert.equal(ss.finished, true, 'still super-seeding 16 s after the last new piece went out')
  assert.equal(ss.offer('c').cardinality, 4)
  assert.equal(ss.allowed('c', bPiece), true)
  assert.equal(ss.allowed('c', aPiece), true)
})
