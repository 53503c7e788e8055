/**
 * The idle trim: it runs once after work has stopped for the quiet time, never while work goes on
 * or a deploy is running, again only after new work; it forces no garbage collection, and it gives
 * the C heap's free pages back.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import v8 from 'node:v8'
import vm from 'node:vm'
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks'
import { MemoryTrim, rssMiB } from '../node/agent/memory-trim.ts'

test('trims once after quietMs without activity, not while busy, again after new work', () => {
  let activity = 0
  let busy = false
  let released = 0
  const t = new MemoryTrim({ activity: () => activity, busy: () => busy, release: () => { released++ }, quietMs: 1000 })
  t.tick(0) // first reading: start-up counts as work
  t.tick(500)
  assert.equal(released, 0, 'trimmed before the quiet time')
  t.tick(1000)
  assert.equal(released, 1)
  t.tick(5000)
  assert.equal(released, 1, 'trimmed twice without work in between')
  activity = 10
  t.tick(6000)
  busy = true
  t.tick(8000)
  t.tick(9000)
  assert.equal(released, 1, 'trimmed while a deploy was running')
  busy = false
  t.tick(9500)
  assert.equal(released, 1, 'trimmed right after the deploy ended')
  t.tick(10_600)
  assert.equal(released, 2)
  assert.equal(t.trims, 2)
})

/** V8's gc(), as the tests call it. */
type GcFunction = (opts?: { type?: 'major' | 'minor', execution?: 'sync', flavor?: 'regular' | 'last-resort' }) => void

/** V8's gc(), exposed at run time for the tests' own collections. */
function testGc (): GcFunction {
  v8.setFlagsFromString('--expose-gc')
  return vm.runInNewContext('gc') as GcFunction
}

/** Major collections seen while `fn` runs (perf_hooks reports them asynchronously). */
async function majorGcsDuring (fn: () => void): Promise<number> {
  let majors = 0
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++
    }
  })
  obs.observe({ entryTypes: ['gc'] })
  fn()
  await new Promise(resolve => setTimeout(resolve, 100))
  obs.disconnect()
  return majors
}

test('a trim forces no full collection (one made the next transfer run mark-compact after mark-compact)', async () => {
  const gc = testGc()
  assert.ok(await majorGcsDuring(() => { gc({ type: 'major', execution: 'sync' }) }) >= 1, 'the observer saw no forced collection')
  let keep: unknown[] | null = Array.from({ length: 50_000 }, (_, i) => ({ i }))
  const t = new MemoryTrim({ activity: () => 0, busy: () => false, release: () => { keep = null } })
  assert.equal(await majorGcsDuring(() => { t.trim() }), 0)
  assert.equal(keep, null, 'release was not called')
  assert.equal(t.trims, 1)
  assert.ok(rssMiB() > 0)
})

test('a trim gives the C heap\'s free pages back to the kernel', () => {
  // 160 MiB of C-heap buffers, one in 64 kept: once collected, the freed ones leave holes glibc keeps mapped.
  let bufs: Buffer[] = []
  for (let i = 0; i < 20_000; i++) bufs.push(Buffer.allocUnsafeSlow(8000).fill(1))
  const kept = bufs.filter((_, i) => i % 64 === 0)
  bufs = []
  // last-resort: the backing stores are freed before it returns (a regular one sweeps them later).
  testGc()({ type: 'major', execution: 'sync', flavor: 'last-resort' })
  const t = new MemoryTrim({ activity: () => 0, busy: () => false, release: () => {} })
  const before = rssMiB()
  t.trim()
  const after = rssMiB()
  assert.equal(kept.length, 313)
  assert.ok(after < before - 80, `RSS ${before.toFixed(0)} → ${after.toFixed(0)} MiB`)
})
