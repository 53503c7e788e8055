/**
 * The agent's heap growth factor (node/agent/heap-growth.ts): parsed from the environment, and
 * really in force in a process that sets it (V8's own --trace-gc-verbose in a child prints the
 * limit it sets after each full collection and the factor it used).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { HEAP_GROWING_PERCENT, heapGrowingPercent } from '../node/agent/heap-growth.ts'

const HEAP_GROWTH = pathToFileURL(join(import.meta.dirname, '..', 'node', 'agent', 'heap-growth.ts')).href

test('the percentage comes from IMGMESH_HEAP_GROWING_PERCENT when it is an integer from 0 to 1000', () => {
  assert.equal(heapGrowingPercent(undefined), HEAP_GROWING_PERCENT)
  assert.equal(heapGrowingPercent(' '), HEAP_GROWING_PERCENT)
  assert.equal(heapGrowingPercent('0'), 0)
  assert.equal(heapGrowingPercent('250'), 250)
  assert.equal(heapGrowingPercent('-1'), HEAP_GROWING_PERCENT)
  assert.equal(heapGrowingPercent('1001'), HEAP_GROWING_PERCENT)
  assert.equal(heapGrowingPercent('1.5'), HEAP_GROWING_PERCENT)
  assert.equal(heapGrowingPercent('double'), HEAP_GROWING_PERCENT)
})

/** The growth factors V8 reports for the old generation's limits in a child that keeps 30 MB alive. */
function limitFactors (percent: number | null): number[] {
  const script = [
    percent === null ? '' : `const { steadyHeapGrowth } = await import(${JSON.stringify(HEAP_GROWTH)}); steadyHeapGrowth(${percent});`,
    'const keep = []',
    'for (let i = 0; i < 300000; i++) keep.push({ i, s: "x" + i, a: [i, i] })',
    'globalThis.gc()',
    'console.log("kept", keep.length)'
  ].join('\n')
  const r = spawnSync(process.execPath, ['--expose-gc', '--trace-gc-verbose', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, maxBuffer: 64 * 1024 * 1024 })
  assert.equal(r.status, 0, r.stderr)
  assert.match(r.stdout, /^kept 300000$/m)
  return [...r.stdout.matchAll(/\[HeapController\] Limit: old size: \d+ KB, new limit: \d+ KB \(([\d.]+)\)/g)].map(m => Number(m[1]))
}

test('a process that calls steadyHeapGrowth grows its heap by the factor it set after each full collection', () => {
  const byDefault = limitFactors(null)
  const doubled = limitFactors(100)
  const tripled = limitFactors(200)
  assert.ok(byDefault.length > 0 && doubled.length > 0 && tripled.length > 0, 'V8 reported no limit')
  assert.ok(doubled.every(f => f === 2), `factors with 100%: ${doubled.join(', ')}`)
  assert.ok(tripled.every(f => f === 3), `factors with 200%: ${tripled.join(', ')}`)
  assert.notDeepEqual(byDefault, doubled, 'V8 used factor 2 by itself')
})
