/**
 * The faults scenario's choice of victims (simulations/testbed/victims.ts): no kill before the
 * clients hold every piece between them; then the fullest clients whose loss keeps one full copy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chooseVictims, countBits } from '../simulations/testbed/victims.ts'

/** A bitfield of `pieces` bits with the given pieces set. */
function field (pieces: number, set: number[]): Uint8Array {
  const b = new Uint8Array(Math.ceil(pieces / 8))
  for (const j of set) b[j >> 3] |= 0x80 >> (j & 7)
  return b
}
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_x, i) => from + i)

test('countBits counts only the first `pieces` bits', () => {
  const b = field(12, [0, 3, 11])
  b[1] |= 0x0f // bits 12..15, beyond the pieces
  assert.equal(countBits(b, 12), 3)
  assert.equal(countBits(new Uint8Array(0), 12), 0)
})

test('no victims while a piece is missing from every client', () => {
  const held = [field(10, range(0, 5)), field(10, range(3, 9)), field(10, [])]
  assert.equal(chooseVictims(held, 10, 1), null)
  // Asking for no victims tells whether the clients hold every piece between them.
  assert.equal(chooseVictims(held, 10, 0), null)
  assert.deepEqual(chooseVictims([...held, field(10, [9])], 10, 0), [])
})

test('the fullest clients go first, as long as the others keep every piece', () => {
  // Client 0 holds everything; 1 and 2 together hold everything; 3 holds half; 4 nothing.
  const held = [field(10, range(0, 10)), field(10, range(0, 6)), field(10, range(5, 10)), field(10, range(0, 5)), field(10, [])]
  assert.deepEqual(chooseVictims(held, 10, 1), [0])
  // Next fullest is 1 (6 pieces): without 0 and 1, clients 2 (5..9) and 3 (0..4) still hold every piece.
  assert.deepEqual(chooseVictims(held, 10, 2), [0, 1])
  // A third: 2 now holds 5..9 alone and 3 holds 0..4 alone; only the empty client 4 can go.
  assert.deepEqual(chooseVictims(held, 10, 3), [0, 1, 4])
  assert.equal(chooseVictims(held, 10, 4), null)
})

test('a client holding a piece nobody else has is never chosen', () => {
  const held = [field(16, range(0, 15)), field(16, [15]), field(16, range(0, 16))]
  // 2 is fullest and can go (0 and 1 cover 0..15); then 0 holds 0..14 alone and 1 holds 15 alone.
  assert.deepEqual(chooseVictims(held, 16, 1), [2])
  assert.equal(chooseVictims(held, 16, 2), null)
})

test('random swarms: the victims always leave every piece among the survivors', () => {
  let seed = 7
  const rand = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
  let killable = 0
  for (let round = 0; round < 200; round++) {
    const clients = 3 + Math.floor(rand() * 20)
    const pieces = 1 + Math.floor(rand() * 300)
    const density = rand()
    const held = Array.from({ length: clients }, () => field(pieces, range(0, pieces).filter(() => rand() < density)))
    const count = Math.floor(rand() * clients)
    const chosen = chooseVictims(held, pieces, count)
    const everyPiece = (from: Uint8Array[]): boolean => range(0, pieces).every(j => from.some(b => (b[j >> 3] & (0x80 >> (j & 7))) !== 0))
    if (!everyPiece(held)) { assert.equal(chosen, null); continue }
    if (chosen === null) continue
    killable++
    assert.equal(new Set(chosen).size, count)
    assert.ok(everyPiece(held.filter((_b, i) => !chosen.includes(i))), `round ${round}: a piece died with ${String(chosen)}`)
  }
  assert.ok(killable > 50, `only ${killable} of 200 swarms had victims`)
})
