/**
 * The swarm simulator drives the agent's own PieceScheduler, SuperSeed and PeerRates: small
 * swarms must finish, respect the lower bound, be reproducible from the seed, and give the same
 * answer with and without the shortcut that skips scheduler calls that cannot pick anything.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { simulate, tMinSeconds, type SimConfig } from '../simulations/sim/sim.ts'
import { pieceSizes, readWireRatios, wireSizes } from '../simulations/sim/pieces.ts'
import { agentCpuSeconds, type Row } from '../simulations/sim/compare.ts'

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

test('compressed pieces: wire sizes follow the shares, the same pieces and seed, and links carry only wire bytes', () => {
  const sizes = pieceSizes({ imageBytes: base.imageBytes, seed: 7 })
  assert.deepEqual(wireSizes(sizes, undefined, 7), sizes)
  const half = wireSizes(sizes, [0.5], 7)
  assert.deepEqual(half, sizes.map(s => Math.max(1, Math.round(s / 2))))
  const shares = [0.2, 0.4, 0.6, 1]
  const w = wireSizes(sizes, shares, 7)
  assert.deepEqual(w, wireSizes(sizes, shares, 7))
  for (let i = 0; i < sizes.length; i++) assert.ok(shares.some(q => w[i] === Math.max(1, Math.round(sizes[i] * q))), `piece ${i}`)
  assert.throws(() => wireSizes(sizes, [0.5, 1.5], 7), /wire share/)

  const plain = simulate(base)
  const z = simulate({ ...base, wireShares: [0.5] })
  assert.equal(z.finished, 6)
  assert.equal(z.pieces, plain.pieces)
  // The bound counts image bytes; half of them cross the links, at 95% payload.
  assert.equal(z.tMinS, plain.tMinS)
  assert.ok(z.ratio !== null && z.ratio >= 0.5 / 0.95 - 1e-9 && z.ratio < plain.ratio!, `ratio ${z.ratio} against ${plain.ratio}`)
  // The origin's upload is counted on the wire: every piece at least once, at half its size.
  assert.ok(z.originUpF >= 0.5 - 1e-9 && z.originUpF < plain.originUpF)
})

test('the measured wire shares are read and checked', () => {
  const r = readWireRatios()
  assert.ok(r.quantiles.length > 0 && r.overall > 0 && r.overall < 1)
  const dir = mkdtempSync(join(tmpdir(), 'imgmesh-wire-'))
  try {
    const bad = join(dir, 'bad.json')
    writeFileSync(bad, JSON.stringify({ quantiles: [0.3, 0] }))
    assert.throws(() => readWireRatios(bad), /no quantiles in \(0, 1\]/)
    writeFileSync(bad, '{"quantiles": "x"}')
    assert.throws(() => readWireRatios(bad), /no quantiles/)
    writeFileSync(bad, JSON.stringify({ quantiles: [0.5], pieces: [[100, 50], [10, 20]] }))
    assert.throws(() => readWireRatios(bad), /pieces must be/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('HAVE pacing (the agent\'s have-pacing.ts) sends fewer HAVEs, and every client still finishes', () => {
  const cfg: SimConfig = { clients: 12, upBps: 50e6, downBps: 50e6, imageBytes: 16 * 1024 * 1024, seed: 3 }
  const paced = simulate(cfg)
  const eager = simulate({ ...cfg, havePacing: null })
  const lax = simulate({ ...cfg, havePacing: { enough: 1, batch: 1_000_000, maxWaitMs: 1_000_000 } })
  for (const r of [paced, eager, lax]) assert.equal(r.finished, 12)
  assert.ok(paced.havesPerClient < eager.havesPerClient, `${paced.havesPerClient} HAVEs per client paced, ${eager.havesPerClient} not`)
  assert.ok(eager.havesPerClient > 0)
  // news waits at most maxWaitMs: with a watcher that always has enough, HAVEs come only at the wait's end
  const tight = simulate({ ...cfg, havePacing: { enough: 0, batch: 1_000_000, maxWaitMs: 400 } })
  assert.equal(tight.finished, 12)
  assert.ok(tight.havesPerClient < paced.havesPerClient)
})

test('the testbed image\'s own pieces: every block once, each at its own wire bytes', () => {
  const r = readWireRatios()
  assert.ok(r.pieces !== undefined)
  assert.equal(r.pieces.length, r.blocks)
  assert.equal(r.pieces.reduce((a, p) => a + p[0], 0), r.imageBytes)
  const wire = r.pieces.reduce((a, p) => a + p[1], 0)
  assert.ok(Math.abs(wire / r.imageBytes - r.overall) < 1e-9)
  // a quarter of the image, 6 clients: the origin sends each piece's wire bytes at least once
  const part = r.pieces.slice(0, Math.ceil(r.pieces.length / 4))
  const sizes = part.map(p => p[0])
  const bytes = sizes.reduce((a, b) => a + b, 0)
  const own = simulate({ ...base, pieces: sizes, wireBytes: part.map(p => p[1]) })
  assert.equal(own.finished, 6)
  assert.equal(own.pieces, part.length)
  assert.equal(own.imageBytes, bytes)
  const wireShare = part.reduce((a, p) => a + p[1], 0) / bytes
  assert.ok(own.originUpF >= wireShare - 1e-9 && own.originUpF < 1, `origin up ${own.originUpF} F, wire share ${wireShare}`)
  assert.throws(() => simulate({ ...base, pieces: sizes, wireBytes: [1, 2] }), /one entry per piece/)
})

test('the comparison takes every agent\'s CPU up to the last finish, and older runs\' own-finish figure otherwise', () => {
  const row = (notes: string[]): Row => ({ n: 3, transport: 'imgmesh', status: 'ok', ratio: 1, tMinS: 10, imageBytes: 1, rateBps: 50e6, notes })
  const own = 'agent CPU t0→finish: h0 2.5 s (run-queue wait 1.0 s), clients mean 2.0 s (user 1.5, sys 0.5; wait 3.0 s, max 4.0 s); load average at t0 1 1 1'
  assert.equal(agentCpuSeconds(row([own])), 2.5 + 3 * 2.0)
  assert.equal(agentCpuSeconds(row([own, 'agent CPU t0→last finish: all agents 9.75 s, of it clients after their own finish 1.25 s'])), 9.75)
  assert.equal(agentCpuSeconds(row(['no figures'])), null)
})
