/**
 * The idle trim: it runs once after work has stopped for the quiet time, never while work goes on
 * or a deploy is running, again only after new work; and it really collects (V8's gc()).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import v8 from 'node:v8'
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

test('a trim runs a full collection: garbage in the old generation is gone after it', () => {
  let keep: unknown[] | null = Array.from({ length: 200_000 }, (_, i) => ({ i, s: `x${i}` }))
  const t = new MemoryTrim({ activity: () => 0, busy: () => false, release: () => { keep = null } })
  const used = (): number => v8.getHeapStatistics().used_heap_size
  const before = used()
  assert.ok(keep !== null)
  t.trim()
  assert.ok(used() < before - 5 * 1024 * 1024, `heap ${before} → ${used()}`)
  assert.ok(rssMiB() > 0)
})

test('a trim gives the C heap\'s free pages back to the kernel', () => {
  // 160 MiB of C-heap buffers, one in 64 kept: the freed ones leave holes glibc keeps mapped.
  let bufs: Buffer[] = []
  for (let i = 0; i < 20_000; i++) bufs.push(Buffer.allocUnsafeSlow(8000).fill(1))
  const kept: Buffer[] = []
  const t = new MemoryTrim({
    activity: () => 0,
    busy: () => false,
    release: () => { kept.push(...bufs.filter((_, i) => i % 64 === 0)); bufs = [] }
  })
  const before = rssMiB()
  t.trim()
  const after = rssMiB()
  assert.equal(kept.length, 313)
  assert.ok(after < before - 80, `RSS ${before.toFixed(0)} → ${after.toFixed(0)} MiB`)
})
