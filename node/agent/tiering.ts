/**
 * When V8 compiles a function with TurboFan, its optimizing compiler: after 12,000 calls (800 →
 * 3,200 for a loop replaced while it runs) instead of V8's 3,000. A deploy makes an agent run
 * most of its code for the first time: the tree, the piece list, the block path, libp2p's
 * streams. With the default thresholds each agent compiled 420–440 functions, most of them in
 * the deploy's first seconds, and on the testbed the compiler threads took 0.5 CPU-s of a client's
 * 3 (perf, N=10); in the first two seconds after t0 they were 40% of every agent's CPU, and h0
 * sent next to nothing for the first second. Functions that stay hot (the block path, noise,
 * yamux) still reach TurboFan within a second or two of a transfer; the ones that are busy for
 * a moment at the start no longer do. Testbed, N=10, alternating runs: T 15.9–16.6 s against
 * 16.9–18.4 with the defaults, client CPU 2.3–2.6 s against 2.6–2.9; at N=20 and N=50 the two
 * measured the same, and a transfer on loopback too (docs/benchmarks.md, 2026-12-04,
 * evening). The setting is process wide and applies from the next
 * tier-up decision on; `IMGMESH_TURBOFAN_AFTER=N` sets the call count (3000 is V8's own).
 */
import v8 from 'node:v8'
import { createLogger } from '../logger.ts'
import { envInteger } from './env-integer.ts'

const log = createLogger('agent')

/** Calls before a function is optimized by TurboFan. */
export const TURBOFAN_AFTER_CALLS = 12_000
/** V8's own thresholds, for the ratio kept between a function's and a loop's. */
const V8_TURBOFAN_AFTER = 3000
const V8_OSR_AFTER = 800

/** The call count to use: from IMGMESH_TURBOFAN_AFTER when it is a positive integer, else the default. */
export function turbofanAfter (env: string | undefined = process.env.IMGMESH_TURBOFAN_AFTER): number {
  return envInteger('IMGMESH_TURBOFAN_AFTER', env, TURBOFAN_AFTER_CALLS, 1)
}

/** Sets the thresholds for this process; returns the call count in force. */
export function delayOptimization (calls: number = turbofanAfter()): number {
  const osr = Math.max(1, Math.round(calls * V8_OSR_AFTER / V8_TURBOFAN_AFTER))
  v8.setFlagsFromString(`--invocation-count-for-turbofan=${calls}`)
  v8.setFlagsFromString(`--invocation-count-for-osr=${osr}`)
  log.debug('optimizing compiler thresholds', { calls, osr })
  return calls
}
