/**
 * The agent's TurboFan threshold (node/agent/tiering.ts): parsed from the environment, and
 * really in force in a process that sets it (checked with V8's own --trace-opt in a child).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { TURBOFAN_AFTER_CALLS, turbofanAfter } from '../node/agent/tiering.ts'

const TIERING = pathToFileURL(join(import.meta.dirname, '..', 'node', 'agent', 'tiering.ts')).href

test('the call count comes from IMGMESH_TURBOFAN_AFTER when it is a positive integer', () => {
  assert.equal(turbofanAfter(undefined), TURBOFAN_AFTER_CALLS)
  assert.equal(turbofanAfter(''), TURBOFAN_AFTER_CALLS)
  assert.equal(turbofanAfter('3000'), 3000)
  assert.equal(turbofanAfter('0'), TURBOFAN_AFTER_CALLS)
  assert.equal(turbofanAfter('-5'), TURBOFAN_AFTER_CALLS)
  assert.equal(turbofanAfter('12.5'), TURBOFAN_AFTER_CALLS)
  assert.equal(turbofanAfter('many'), TURBOFAN_AFTER_CALLS)
})

/**
 * Calls a small function in a child, 500 at a time up to `limit`, and returns after how many
 * calls V8 had it compiled by TurboFan (--trace-opt), or null if it never was.
 */
function callsBeforeOptimized (delay: boolean, limit: number): number | null {
  const script = [
    delay ? `const { delayOptimization } = await import(${JSON.stringify(TIERING)}); delayOptimization();` : '',
    'function hot (x) { let s = 0; for (let i = 0; i < 3; i++) s += x * i; return s }',
    `let t = 0; for (let i = 1; i <= ${limit}; i++) { t += hot(i); if (i % 500 === 0) console.log('calls', i) }`,
    'console.log("sum", t)'
  ].join('\n')
  const r = spawnSync(process.execPath, ['--trace-opt', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, IMGMESH_TURBOFAN_AFTER: '' } })
  assert.equal(r.status, 0, r.stderr)
  assert.match(r.stdout, /^sum \d+$/m)
  let calls = 0
  for (const line of r.stdout.split('\n')) {
    const m = /^calls (\d+)$/.exec(line)
    if (m !== null) calls = Number(m[1])
    else if (/^\[compiling method [^\n]*<JSFunction hot [^\n]*TURBOFAN/.test(line)) return calls
  }
  return null
}

test('a process that calls delayOptimization optimizes a hot function later than V8 does by default', () => {
  const byDefault = callsBeforeOptimized(false, 60_000)
  const delayed = callsBeforeOptimized(true, 60_000)
  assert.ok(byDefault !== null, 'V8 optimizes the function within 60,000 calls by default')
  assert.ok(delayed !== null, 'a function that stays hot is still optimized with the agent\'s threshold')
  assert.ok(delayed >= 2 * Math.max(500, byDefault), `optimized after ${delayed} calls with the agent's threshold, ${byDefault} by default`)
})
