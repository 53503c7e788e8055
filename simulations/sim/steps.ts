/**
 * What each change to the agent's piece exchange did, in the simulator: the same deployments
 * (50 Mbit/s links, 64 MiB) under the settings before and after each step, median T/T_min over
 * several seeds (one seed from 1,000 nodes on: those take a minute each).
 *
 *   node simulations/sim/steps.ts [--nodes 10,20,50] [--seeds 5]
 */
import { parseArgs } from 'node:util'
import { simulate, type SimConfig } from './sim.ts'
import { median } from '../bench-transfer.ts'

const STEPS: Array<[string, Partial<SimConfig>]> = [
  ['A super-seed 32/peer, 1 MiB messages, endgame asks every holder', { superSeedPerPeer: 32, frameBytes: 1 << 20, endgameFanout: 1e9 }],
  ['B  + endgame asks at most 3 holders of a piece', { superSeedPerPeer: 32, frameBytes: 1 << 20 }],
  ['C  + super-seed 2/peer (more to a fast taker)', { superSeedPerPeer: 2, frameBytes: 1 << 20 }],
  ['D  + one block per BLOCK message', { superSeedPerPeer: 2, frameBytes: 64 << 10 }],
  ['E  variant of D: at most 8 streams sending per node', { superSeedPerPeer: 2, frameBytes: 64 << 10, uploadSlots: 8 }]
]

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '10,20,50' }, seeds: { type: 'string', default: '5' } } })
const nodes = values.nodes.split(',').map(Number).filter(n => Number.isInteger(n) && n > 0)
const seeds = Math.max(1, Math.min(20, Number(values.seeds)))
process.stdout.write(`median T/T_min, 50 Mbit/s links, 64 MiB, ${seeds} seeds (1 from 1,000 nodes)\n`)
for (const [name, cfg] of STEPS) {
  const cells: string[] = []
  for (const n of nodes) {
    const runs = Array.from({ length: n >= 1000 ? 1 : seeds }, (_, k) =>
      simulate({ clients: n, upBps: 50e6, downBps: 50e6, imageBytes: 64 << 20, seed: k + 1, ...cfg }).ratio ?? Number.NaN)
    cells.push(`N=${n} ${median(runs).toFixed(3)}`)
  }
  process.stdout.write(`${name.padEnd(62)} ${cells.join('  ')}\n`)
}
