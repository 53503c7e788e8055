/**
 * The testbed's byte-counter sampler (simulations/testbed/sampler.ts): rates per host from the
 * switch-side counters, and how busy the machine's cores were over a span of the run.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { busyFraction, parseSamples, readCpuTicks } from '../simulations/testbed/sampler.ts'

test('readCpuTicks counts idle and iowait as not busy, guest time once', () => {
  // user nice system idle iowait irq softirq steal guest guest_nice
  const stat = 'cpu  100 5 40 800 20 3 2 30 50 7\ncpu0 50 2 20 400 10 1 1 15 25 3\nintr 1\n'
  assert.deepEqual(readCpuTicks(stat), [180, 1000])
  assert.equal(readCpuTicks('intr 1 2 3\n'), undefined)
  assert.equal(readCpuTicks('cpu 1 x 3 4\n'), undefined)
})

test('parseSamples gives per-host rates and byte totals, skipping a torn last line', () => {
  const t0 = 1_000_000
  const lines = [
    { t: t0, c: { v0: [0, 0], v1: [0, 0] }, cpu: [0, 0] },
    { t: t0 + 500, c: { v0: [0, 0], v1: [0, 0] }, cpu: [100, 200] },
    // h0 uploads 1,000,000 bytes in a second; h1 downloads them
    { t: t0 + 1500, c: { v0: [1_000_000, 0], v1: [0, 1_000_000] }, cpu: [300, 400] },
    { t: t0 + 2500, c: { v0: [1_000_000, 0], v1: [0, 1_000_000] }, cpu: [450, 600] }
  ].map(x => JSON.stringify(x)).join('\n') + '\n{"t": 12'
  const s = parseSamples(lines, t0)
  assert.deepEqual(s.t, [0.5, 1.5, 2.5])
  assert.deepEqual(s.up.get('h0'), [0, 8_000_000, 0])
  assert.deepEqual(s.down.get('h1'), [0, 8_000_000, 0])
  assert.equal(s.upBytes.get('h0'), 1_000_000)
  assert.equal(s.downBytes.get('h1'), 1_000_000)
  assert.equal(s.cpu.length, 4)

  // From the sample at 0.5 s to the first at or after 1.2 s (the one at 1.5 s): 200 busy of 200
  assert.equal(busyFraction(s, 0.5, 1.2), 1)
  assert.equal(busyFraction(s, 0, 2.5), 450 / 600)
  assert.equal(busyFraction(s, 3, 4), null, 'no sample at or after the end of the span')
})

test('busyFraction takes the samples that bracket the span', () => {
  const t0 = 0
  const mk = (t: number, busy: number, total: number): string => JSON.stringify({ t, c: {}, cpu: [busy, total] })
  const s = parseSamples([mk(0, 0, 0), mk(1000, 50, 200), mk(2000, 250, 400), mk(3000, 260, 600)].join('\n'), t0)
  // [0.5, 1.5] is bracketed by the samples at 0 and 2 s: 250 busy of 400
  assert.equal(busyFraction(s, 0.5, 1.5), 250 / 400)
  // [1, 2] exactly: 200 of 200
  assert.equal(busyFraction(s, 1, 2), 1)
  assert.equal(busyFraction(s, 2, 3), 10 / 200)
  // samples without cpu (an older sampler) give no figure
  const old = parseSamples(JSON.stringify({ t: 0, c: {} }) + '\n' + JSON.stringify({ t: 1000, c: {} }), 0)
  assert.equal(busyFraction(old, 0, 1), null)
})
