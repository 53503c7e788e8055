import { test } from 'node:test'
import assert from 'node:assert/strict'
import { jittered, provideNow, PROVIDE_MAX_WAIT_MS, QUIET_BYTES_PER_SECOND } from '../node/agent/provide-pacing.ts'

test('a provide waits while the node moves blocks, goes out once its traffic is quiet, and after the longest wait anyway', () => {
  // Serving the swarm at 5 MB/s: wait.
  assert.equal(provideNow({ trafficBytes: 50e6, spanMs: 10_000, waitedMs: 10_000 }), false)
  // Just over and just under the quiet rate.
  assert.equal(provideNow({ trafficBytes: QUIET_BYTES_PER_SECOND * 10 + 1, spanMs: 10_000, waitedMs: 10_000 }), false)
  assert.equal(provideNow({ trafficBytes: QUIET_BYTES_PER_SECOND * 10 - 1, spanMs: 10_000, waitedMs: 10_000 }), true)
  assert.equal(provideNow({ trafficBytes: 0, spanMs: 7000, waitedMs: 7000 }), true)
  // No time measured yet: no rate to judge by.
  assert.equal(provideNow({ trafficBytes: 0, spanMs: 0, waitedMs: 0 }), false)
  // Busy for good: the record goes out after the longest wait.
  assert.equal(provideNow({ trafficBytes: 1e9, spanMs: 10_000, waitedMs: PROVIDE_MAX_WAIT_MS - 1 }), false)
  assert.equal(provideNow({ trafficBytes: 1e9, spanMs: 10_000, waitedMs: PROVIDE_MAX_WAIT_MS }), true)
})

test('jittered delays fall in [ms, 2·ms)', () => {
  assert.equal(jittered(5000, () => 0), 5000)
  assert.equal(jittered(5000, () => 0.5), 7500)
  for (let i = 0; i < 100; i++) {
    const d = jittered(1000)
    assert.ok(d >= 1000 && d < 2000, String(d))
  }
})
