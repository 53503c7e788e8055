/**
 * The swarm simulator drives the agent's own PieceScheduler, SuperSeed and PeerRates: small
 * swarms must finish, respect the lower bound, be reproducible from the seed, and give the same
 * answer with and without the shortcut that skips scheduler calls that cannot pick anything.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { simulate, tMinSeconds, type SimConfig } from '../simulations/sim/sim.ts'

const base: SimConfig = { clients: 6, upBps: 50e6, downBps: 50e6, imageBytes: 4 * 1024 * 1024, seed: 7 }

test('every client of a small swarm finishes, no faster than the lower bound', () => {
  const r = simulate(base)
  assert.equal(r.finished, 6)
  assert.ok(r.tS !== null && r.ratio !== null)
  assert.equal(r.tMinS, tMinSeconds(r.imageBytes, 6, 50e6, new Array(6).fill(50e6), new Array(6).fill(50e6)))
  // Links carry 95% payload by default: nothing can beat T_min / 0.95.
  assert.ok(r.ratio >= 1 / 0.95 - 1e-9, `ratio ${r.ratio}`)
  assert.ok(r.ratio < 3, `ratio ${r.ratio}`)
  for (const f of r.finishS) assert.ok(f <= r.tS && f >= r.tMinS * 0.999)
  // The origin sends every piece at least once, and super-seeding finishes.
  assert.ok(r.originUpF >= 1 - 1e-9)
  assert.ok(r.superSeedDoneS !== null)
})

test('the same seed gives the same run; skipping empty scheduler calls changes nothing', () => {
  const a = simulate(base)
  const b = simulate(base)
  const c = simulate({ ...base, skipEmptyCalls: false })
  assert.deepEqual(a.finishS, b.finishS)
  assert.deepEqual(a.finishS, c.finishS)
  assert.equal(a.dontHave, c.dontHave)
  assert.ok(c.nextSkipped === 0 && a.nextSkipped > 0)
  const d = simulate({ ...base, seed: 8 })
  assert.notDeepEqual(a.finishS, d.finishS)
})

test('a slower origin uplink is the bound, and the swarm still finishes', () => {
  const r = simulate({ ...base, originUpBps: 10e6 })
  assert.equal(r.finished, 6)
  assert.ok(r.tMinS >= (r.imageBytes * 8) / 10e6 - 1e-9)
  assert.ok(r.ratio !== null && r.ratio >= 1)
})
