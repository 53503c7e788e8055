/**
 * The simulator against the testbed: for every imgmesh row of one or more testbed results
 * folders, the same deployment simulated (same N, link rate and image size), once with links
 * only and once with the testbed machine's CPU shared by every agent, its cost per GB taken from
 * that very run (the agents' CPU time from t0 to the last finish over the bytes moved), and the
 * ratios side by side.
 *
 *   node simulations/sim/compare.ts results/tb-n10 results/tb-n20 [--cores 2] [--seeds 3]
 *
 * A row within 10% means the model accounts for what the testbed measured; the links-only
 * column is what the same agents would do with one machine each. A run with wire compression on
 * (the agent's default; its note says "wire compression off" otherwise) is simulated with the
 * wire shares of wire-ratios.json, and its CPU cost is per GB on the wire. A run of the testbed's
 * own image (its size within 1% of the one wire-ratios.json measured) is simulated with that
 * image's blocks as pieces, each at its own wire bytes (`--pieces testbed`, the default); `--pieces
 * model` draws them as `npm run sim` does.
 */
import { readFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { simulate, type SimConfig } from './sim.ts'
import { readWireRatios, type WireRatios } from './pieces.ts'
import { median } from '../bench-transfer.ts'

export interface Row {
  n: number
  transport: string
  status: string
  ratio: number | null
  tMinS: number
  imageBytes: number
  rateBps: number
  notes: string[]
}

interface Results { rows: Row[] }

/** Whether the run's agents compressed blocks on the wire. */
export function wireCompressed (row: Row): boolean {
  return !row.notes.some(n => /wire compression off/.test(n))
}

/**
 * CPU-seconds of all agents from t0 to the last finish, from the testbed's note. A run from
 * before that note was written gives each client's CPU up to its own finish only, which leaves
 * out what clients that finished early spent serving the others.
 */
export function agentCpuSeconds (row: Row): number | null {
  for (const note of row.notes) {
    const m = /agent CPU t0→last finish: all agents ([\d.]+) s/.exec(note)
    if (m !== null) return Number(m[1])
  }
  for (const note of row.notes) {
    const m = /agent CPU t0→finish: h0 ([\d.]+) s .*clients mean ([\d.]+) s/.exec(note)
    if (m !== null) return Number(m[1]) + row.n * Number(m[2])
  }
  return null
}

function main (): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      cores: { type: 'string', default: '2' },
      seeds: { type: 'string', default: '3' },
      transport: { type: 'string', default: 'imgmesh' },
      pieces: { type: 'string', default: 'testbed' }
    }
  })
  const cores = Number(values.cores)
  const seeds = Math.max(1, Math.min(20, Number(values.seeds)))
  if (positionals.length === 0) {
    process.stderr.write('usage: node simulations/sim/compare.ts RESULTS_DIR... [--cores 2] [--seeds 3] [--transport imgmesh]\n')
    process.exit(2)
  }
  if (values.pieces !== 'testbed' && values.pieces !== 'model') {
    process.stderr.write('compare: --pieces is testbed or model\n')
    process.exit(2)
  }
  const head = ['folder', 'N', 'rate', 'wire', 'pieces', 'testbed T/T_min', 'CPU s/GB', 'sim (links)', 'sim (links+CPU)', 'difference']
  const lines: string[][] = []
  let measured: WireRatios | undefined
  for (const dir of positionals) {
    const file = join(dir, 'results.json')
    if (!existsSync(file)) { process.stderr.write(`compare: no ${file}\n`); continue }
    const res = JSON.parse(readFileSync(file, 'utf8')) as Results
    for (const row of res.rows) {
      if (row.transport !== values.transport || row.status !== 'ok' || row.ratio === null) continue
      const cpu = agentCpuSeconds(row)
      const wire = wireCompressed(row) ? (measured ??= readWireRatios()) : null
      const perGB = cpu === null ? null : cpu / (row.n * row.imageBytes * (wire?.overall ?? 1) / 1e9)
      const ratios = values.pieces === 'testbed' ? (measured ??= readWireRatios()) : undefined
      const own = ratios?.pieces !== undefined && Math.abs(ratios.imageBytes - row.imageBytes) <= 0.01 * row.imageBytes ? ratios.pieces : undefined
      const base: SimConfig = {
        clients: row.n,
        upBps: row.rateBps,
        downBps: row.rateBps,
        imageBytes: row.imageBytes,
        seed: 1,
        wireShares: wire?.quantiles,
        pieces: own?.map(p => p[0]),
        wireBytes: own?.map(p => wire === null ? p[0] : p[1])
      }
      const runs = (extra: Partial<SimConfig>): number => median(Array.from({ length: seeds }, (_, k) => simulate({ ...base, ...extra, seed: k + 1 }).ratio ?? Number.NaN))
      const links = runs({})
      const withCpu = perGB === null ? Number.NaN : runs({ cpuCores: cores, cpuSecondsPerGB: perGB })
      lines.push([
        dir, String(row.n), `${row.rateBps / 1e6} Mbit/s`, wire === null ? 'plain' : 'zstd', own === undefined ? 'model' : 'testbed', row.ratio.toFixed(3), perGB === null ? '-' : perGB.toFixed(1),
        links.toFixed(3), Number.isNaN(withCpu) ? '-' : withCpu.toFixed(3),
        Number.isNaN(withCpu) ? '-' : `${((withCpu / row.ratio - 1) * 100).toFixed(1)}%`
      ])
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map(l => l[i].length)))
  const fmt = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i])).join('  ')
  process.stdout.write(fmt(head) + '\n' + fmt(widths.map(w => '-'.repeat(w))) + '\n')
  for (const l of lines) process.stdout.write(fmt(l) + '\n')
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main()
