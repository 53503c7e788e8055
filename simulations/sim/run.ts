/**
 * The swarm simulator's command line: one simulated deployment per N, a table of T/T_min.
 *
 *   node simulations/sim/run.ts --nodes 10,20,50,1000,10000 --rate 50mbit --image-mb 64
 *
 * See simulations/sim/README.md for the model.
 */
import { parseArgs } from 'node:util'
import { simulate, type SimConfig, type SimResult } from './sim.ts'
import { WIRE_RATIOS_FILE, readWireRatios, type WireRatios } from './pieces.ts'
import { DEFAULT_MAX_IN_FLIGHT } from '../../node/fetch/peer-rates.ts'
import { DEFAULT_PEERS } from '../../node/swarm/peer-keeper.ts'

/** The --wire option: the measured wire shares, or undefined for plain blocks. */
function wireRatios (w: string): WireRatios | undefined {
  if (w === 'plain') return undefined
  try {
    return readWireRatios(w === 'zstd' ? WIRE_RATIOS_FILE : w)
  } catch (err) {
    fail(`--wire ${w}: ${(err as Error).message}`)
  }
}

function wireNote (ratios: WireRatios | undefined): string {
  if (ratios === undefined) return 'plain'
  return `zstd (pieces at ${(100 * ratios.overall).toFixed(1)} % of their bytes on average)`
}

const USAGE = `usage: node simulations/sim/run.ts [options]

  --nodes N[,N...]       clients (the origin is extra); several values run one after another (default 10,20,50)
  --rate RATE            every link, both directions (default 50mbit); bit units: kbit, mbit, gbit
  --up RATE --down RATE  client upload / download instead of --rate
  --origin-up RATE       the origin's upload (default: as clients)
  --image-mb MIB         image size F (default 64); pieces 16-256 KiB, mean 72 KiB, from the seed
  --pieces P             model: as --image-mb says (default); testbed: the testbed image's own
                         blocks and their wire bytes, from wire-ratios.json (the 64 MiB slice's
                         1,968 blocks, small files' included; --image-mb is then ignored)
  --seed S               seed for pieces, graph, phases and every scheduler (default 1)
  --neighbours K         neighbours per client when N > K, else full mesh (default: the agent's
                         connections, ${DEFAULT_PEERS})
  --origin-neighbours K  clients connected to the origin when N > K (default: --neighbours)
  --rtt-ms MS            round trip between any two nodes (default 0.5)
  --max-in-flight N      PieceScheduler maxInFlight (default: the agent's, 128)
  --in-flight-target-ms MS  requests per peer cover MS of its measured rate (PeerRates; default 600,
                         as the agent; 0: always --max-in-flight)
  --endgame N            PieceScheduler endgamePieces (default: the scheduler's, 16; fewer for a small fetch)
  --endgame-fanout N     PieceScheduler endgameFanout: peers asked for one endgame piece at once (default 3)
  --max-in-flight-total N  variant: cap on a client's requests over all peers (default: none, as the agent)
  --upload-slots N       variant: at most N BLOCK messages on the wire per node at once (default: none, as the agent)
  --origin-upload-slots N  variant: the same for the origin alone
  --super-seed N         SuperSeed pieces per peer (default 2, as the agent)
  --super-seed-commit W  sent (the agent: a piece counts as sent once its message is out) or queued (variant)
  --frame-kib KIB        block data per BLOCK message (default 64, block-exchange MESSAGE_BYTES)
  --have-ms MS           HAVE update period (default 100)
  --have-pacing P        on: a client's HAVE news waits while the watcher can ask it for enough
                         (node/fetch/have-pacing.ts, as the agent); off: every turn's news at once
  --wire W              zstd: blocks compressed on the wire as the agent does by default, each piece
                         at a share of its bytes drawn from wire-ratios.json (measured on the testbed
                         image by wire-ratios.ts); plain: uncompressed; or a JSON file of that shape
                         (default zstd). T_min counts the image's bytes either way.
  --efficiency X         payload share of a link (default 0.95; 1 = no header overhead)
  --cpu-cores C          a CPU shared by every node (the testbed's machine): C cores...
  --cpu-s-per-gb S       ...and S CPU-seconds per GB moved (sender and receiver together); default: no CPU limit
  --jitter-ms MS         clients start spread over this window (default 0: all at once)
  --step-ms MS           bandwidth recomputation period (default T_min/500)
  --json                 one JSON object per N on stdout (with every client's finish time)
  --quiet                no progress lines on stderr
`

const UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 }

function rate (text: string): number {
  const m = /^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$/i.exec(text.trim())
  if (m === null) fail(`bad rate ${JSON.stringify(text)}: use e.g. 50mbit, 1gbit`)
  return Number(m[1]) * UNITS[m[2].toLowerCase()]
}

function fail (msg: string): never {
  process.stderr.write(`sim: ${msg}\n${USAGE}`)
  process.exit(2)
}

function num (text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined
  const x = Number(text)
  if (!Number.isFinite(x) || x < 0) fail(`--${name} wants a non-negative number`)
  return x
}

function onOff (text: string, name: string): boolean {
  if (text !== 'on' && text !== 'off') fail(`--${name} is on or off`)
  return text === 'on'
}

function commit (text: string): 'sent' | 'queued' {
  if (text !== 'sent' && text !== 'queued') fail('--super-seed-commit is sent or queued')
  return text
}

function main (): void {
  let v
  try {
    v = parseArgs({
      options: {
        nodes: { type: 'string', default: '10,20,50' },
        rate: { type: 'string', default: '50mbit' },
        up: { type: 'string' },
        down: { type: 'string' },
        'origin-up': { type: 'string' },
        'image-mb': { type: 'string', default: '64' },
        seed: { type: 'string', default: '1' },
        neighbours: { type: 'string', default: String(DEFAULT_PEERS) },
        'origin-neighbours': { type: 'string' },
        'rtt-ms': { type: 'string', default: '0.5' },
        'max-in-flight': { type: 'string', default: String(DEFAULT_MAX_IN_FLIGHT) },
        'in-flight-target-ms': { type: 'string', default: '600' },
        'cpu-cores': { type: 'string' },
        'cpu-s-per-gb': { type: 'string' },
        'origin-upload-slots': { type: 'string' },
        endgame: { type: 'string' },
        'endgame-fanout': { type: 'string' },
        'max-in-flight-total': { type: 'string' },
        'upload-slots': { type: 'string' },
        'super-seed': { type: 'string', default: '2' },
        'super-seed-commit': { type: 'string', default: 'sent' },
        'frame-kib': { type: 'string', default: '64' },
        'have-ms': { type: 'string', default: '100' },
        'have-pacing': { type: 'string', default: 'on' },
        efficiency: { type: 'string', default: '0.95' },
        wire: { type: 'string', default: 'zstd' },
        pieces: { type: 'string', default: 'model' },
        'jitter-ms': { type: 'string', default: '0' },
        'step-ms': { type: 'string' },
        json: { type: 'boolean', default: false },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false }
      },
      strict: true
    }).values
  } catch (err) {
    fail((err as Error).message)
  }
  if (v.help) { process.stdout.write(USAGE); return }
  const nodes = v.nodes.split(',').map(s => Number(s.trim()))
  if (nodes.some(n => !Number.isInteger(n) || n < 1)) fail('--nodes wants positive integers')
  const up = rate(v.up ?? v.rate)
  const down = rate(v.down ?? v.rate)
  const wire = wireRatios(v.wire)
  const base: Omit<SimConfig, 'clients'> = {
    upBps: up,
    downBps: down,
    originUpBps: v['origin-up'] === undefined ? up : rate(v['origin-up']),
    imageBytes: Math.round(num(v['image-mb'], 'image-mb')! * 1024 * 1024),
    seed: num(v.seed, 'seed')!,
    neighbours: num(v.neighbours, 'neighbours')!,
    originNeighbours: num(v['origin-neighbours'], 'origin-neighbours'),
    rttMs: num(v['rtt-ms'], 'rtt-ms'),
    maxInFlight: num(v['max-in-flight'], 'max-in-flight'),
    inFlightTargetMs: num(v['in-flight-target-ms'], 'in-flight-target-ms'),
    cpuCores: num(v['cpu-cores'], 'cpu-cores'),
    cpuSecondsPerGB: num(v['cpu-s-per-gb'], 'cpu-s-per-gb'),
    originUploadSlots: num(v['origin-upload-slots'], 'origin-upload-slots'),
    endgamePieces: num(v.endgame, 'endgame'),
    endgameFanout: num(v['endgame-fanout'], 'endgame-fanout'),
    maxInFlightTotal: num(v['max-in-flight-total'], 'max-in-flight-total'),
    uploadSlots: num(v['upload-slots'], 'upload-slots'),
    superSeedPerPeer: num(v['super-seed'], 'super-seed'),
    superSeedCommit: commit(v['super-seed-commit']),
    frameBytes: num(v['frame-kib'], 'frame-kib')! * 1024,
    haveMs: num(v['have-ms'], 'have-ms'),
    havePacing: onOff(v['have-pacing'], 'have-pacing') ? undefined : null,
    efficiency: num(v.efficiency, 'efficiency'),
    wireShares: wire?.quantiles,
    startJitterMs: num(v['jitter-ms'], 'jitter-ms'),
    stepMs: num(v['step-ms'], 'step-ms')
  }
  if (base.imageBytes <= 0) fail('--image-mb must be positive')
  if (v.pieces === 'testbed') {
    const own = (wire ?? readWireRatios()).pieces
    if (own === undefined) fail('the wire ratios file lists no pieces (run simulations/sim/wire-ratios.ts again)')
    base.pieces = own.map(p => p[0])
    base.wireBytes = wire === undefined ? base.pieces.slice() : own.map(p => p[1])
    base.imageBytes = base.pieces.reduce((a, b) => a + b, 0)
  } else if (v.pieces !== 'model') {
    fail('--pieces is model or testbed')
  }
  const results: SimResult[] = []
  if (!v.json) {
    process.stdout.write(`image ${(base.imageBytes / 1048576).toFixed(0)} MiB, links up ${fmtRate(up)} down ${fmtRate(down)}, origin up ${fmtRate(base.originUpBps!)}, ` +
      `efficiency ${base.efficiency}, rtt ${base.rttMs} ms, maxInFlight ${base.maxInFlight}, super-seed ${base.superSeedPerPeer}/peer, frame ${v['frame-kib']} KiB, seed ${base.seed}, wire ${wireNote(wire)}\n\n`)
    process.stdout.write(header())
  }
  for (const clients of nodes) {
    const r = simulate({
      ...base,
      clients,
      progressEveryS: 1,
      onProgress: v.quiet ? undefined : (p) => { process.stderr.write(`  N=${clients} t=${p.t.toFixed(1)}s done=${p.done} active=${p.active} events=${p.events} wall=${p.wallS.toFixed(1)}s\n`) }
    })
    results.push(r)
    if (v.json) process.stdout.write(JSON.stringify(r) + '\n')
    else process.stdout.write(row(r))
  }
  if (!v.json && results.length > 1) {
    process.stdout.write('\nT/T_min against N: ' + results.map(r => `${r.clients}: ${fmt(r.ratio, 3)}`).join(', ') + '\n')
  }
}

function fmtRate (bps: number): string {
  return bps >= 1e9 ? `${bps / 1e9}gbit` : bps >= 1e6 ? `${bps / 1e6}mbit` : `${bps / 1e3}kbit`
}

function fmt (x: number | null, d = 2): string {
  return x === null || !Number.isFinite(x) ? '-' : x.toFixed(d)
}

const COLS = ['N', 'K', 'pieces', 'T_min s', 'T s', 'T/T_min', 'mean/T_min', 'p90/T_min', 'first/T_min', 'origin up/F', 'dup/F', 'seed done s', 'DONT_HAVE', 'timeouts', 'HAVE/client', 'CPU-bound', 'wall s']

function header (): string {
  return COLS.map(c => c.padStart(11)).join(' ') + '\n'
}

function row (r: SimResult): string {
  const k = r.clients <= r.neighbours ? 'all' : String(r.neighbours)
  const cells = [
    String(r.clients), k, String(r.pieces), fmt(r.tMinS), fmt(r.tS), fmt(r.ratio, 3), fmt(r.meanS / r.tMinS, 3), fmt(r.p90S / r.tMinS, 3),
    fmt(r.firstS / r.tMinS, 3), fmt(r.originUpF, 3), fmt(r.duplicateF, 4), fmt(r.superSeedDoneS), String(r.dontHave), String(r.timeouts), fmt(r.havesPerClient, 0), `${Math.round(r.cpuLimitedShare * 100)}%`, fmt(r.wallS, 1)
  ]
  return cells.map(c => c.padStart(11)).join(' ') + (r.tS === null ? `   (${r.clients - r.finished} clients unfinished)` : '') + '\n'
}

main()
