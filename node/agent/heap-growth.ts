/**
 * How far V8 lets the heap grow after a full (mark-compact) collection before it starts the
 * next one: the agent fixes the factor at 2 (`--heap-growing-percent=100`) instead of V8's own,
 * which moves between 1.1 and 4 with the share of time the process spends collecting.
 *
 * The limit counts the memory that buffers hold outside the JS heap, and a transfer moves its
 * blocks through such buffers. On a loaded machine some agents' factor fell towards 1.1, and
 * from then on they ran a full collection every 0.3–1 s for the rest of the deploy (9 to 25 in a
 * deploy against 2 for the others, each a 40–95 ms pause in which the agent serves no peer). With
 * the factor fixed at 2 every agent runs 4 to 6. Testbed, N=20, alternating runs: 3.15, 2.99, 3.11
 * T_min against 3.40, 3.61, 3.41 (docs/benchmarks.md, 2026-12-05). The heap may grow to twice
 * what survived the last collection: a few tens of MiB for an agent.
 *
 * The setting is process wide and applies from the next collection on;
 * `IMGMESH_HEAP_GROWING_PERCENT=N` sets the percentage (0 leaves V8's own rule).
 */
import v8 from 'node:v8'
import { createLogger } from '../logger.ts'
import { envInteger } from './env-integer.ts'

const log = createLogger('agent')

/** Growth after a full collection, in percent of what survived it (factor 2). */
export const HEAP_GROWING_PERCENT = 100

/** The percentage to use: from IMGMESH_HEAP_GROWING_PERCENT when it is an integer 0–1000, else the default. */
export function heapGrowingPercent (env: string | undefined = process.env.IMGMESH_HEAP_GROWING_PERCENT): number {
  return envInteger('IMGMESH_HEAP_GROWING_PERCENT', env, HEAP_GROWING_PERCENT, 0, 1000)
}

/** Fixes the heap's growth factor for this process (0: V8's own rule); returns the percentage in force. */
export function steadyHeapGrowth (percent: number = heapGrowingPercent()): number {
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`)
  log.debug('heap growing factor', { percent })
  return percent
}
