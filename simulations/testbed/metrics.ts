/**
 * Metrics of one transport run and their text forms (table, CSV).
 *
 * Lower bound (Kumar & Ross 2006), every link at RATE in both directions:
 *   T_min = max(F/u_s, F/d_min, N·F/(u_s + Σu_i))
 * with F the uncompressed image bytes (regular files, hard links once) in bits. Tar transports
 * move a few % more (headers, padding), compared against the same F so the ratio stays honest.
 */
import type { RateSeries } from './sampler.ts'

export interface BoundInputs {
  imageBytes: number
  clients: number
  /** server upload, bits/s */
  uS: number
  /** smallest client download, bits/s */
  dMin: number
  /** sum of client uploads, bits/s */
  sumU: number
}

export function tMin (b: BoundInputs): number {
  const f = b.imageBytes * 8
  return Math.max(f / b.uS, f / b.dMin, (b.clients * f) / (b.uS + b.sumU))
}

export interface ClientRow {
  host: string
  /** seconds from t0, null if not reached */
  receivedS: number | null
  finishedS: number | null
  verified: boolean
  mismatches: number
  downBytes: number | null
  upBytes: number | null
  error: string | null
}

export interface TransportRow {
  n: number
  transport: string
  /** ok | incomplete | failed | skipped */
  status: string
  reason: string
  clients: ClientRow[]
  finished: number
  verified: number
  /** deployment time: the last client's finish, s (null unless every client finished) */
  tS: number | null
  /** the last client's data arrival (tar transports: before unpacking), s */
  tRecvS: number | null
  meanS: number | null
  tMinS: number
  ratio: number | null
  ratioRecv: number | null
  setupS: number
  imageBytes: number
  tarBytes: number | null
  /** h0's upload bytes / F */
  serverUpF: number | null
  /** mean client download bytes / F */
  clientDownF: number | null
  cpuServerS: number | null
  cpuClientsS: number | null
  /** share of the whole machine's CPU time (all cores, 0..1) that was busy from t0 to the last finish */
  busy: number | null
  /** packets dropped by the link shapers during the run, and UDP receive-buffer overflows */
  qdiscDrops: number | null
  udpRcvbufErrors: number | null
  notes: string[]
  series: RateSeries | null
  /** the link rate as given, e.g. 50mbit */
  rate: string
  rateBps: number
}

export function fmt (x: number | null, digits = 2): string {
  return x === null || !Number.isFinite(x) ? '-' : x.toFixed(digits)
}

function pad (s: string, w: number, right = false): string {
  return right ? s.padEnd(w) : s.padStart(w)
}

export function table (rows: TransportRow[]): string {
  const head = ['N', 'transport', 'status', 'verified', 'T (s)', 'T_min (s)', 'T/T_min', 'recv (s)', 'recv/T_min', 'mean (s)', 'h0 up/F', 'down/F', 'CPU srv (s)', 'CPU cli (s)', 'busy %', 'drops']
  const body = rows.map(r => [
    String(r.n), r.transport, r.status, `${r.verified}/${r.clients.length}`,
    fmt(r.tS), fmt(r.tMinS), fmt(r.ratio), fmt(r.tRecvS), fmt(r.ratioRecv), fmt(r.meanS),
    fmt(r.serverUpF), fmt(r.clientDownF), fmt(r.cpuServerS, 1), fmt(r.cpuClientsS, 1),
    r.busy === null ? '-' : (100 * r.busy).toFixed(0),
    r.qdiscDrops === null ? '-' : String(r.qdiscDrops + (r.udpRcvbufErrors ?? 0))
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map(b => b[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => pad(c, widths[i], i === 1 || i === 2)).join('  ')
  return [line(head), line(widths.map(w => '-'.repeat(w))), ...body.map(line)].join('\n')
}

function csvCell (v: string | number | boolean | null): string {
  if (v === null) return ''
  const s = typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : String(v)
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s
}

function csv (header: string[], rows: Array<Array<string | number | boolean | null>>): string {
  return [header.join(','), ...rows.map(r => r.map(csvCell).join(','))].join('\n') + '\n'
}

export function summaryCsv (rows: TransportRow[]): string {
  return csv(
    ['n', 'transport', 'rate', 'status', 'reason', 'clients', 'finished', 'verified', 't_s', 't_recv_s', 'mean_s', 't_min_s', 'ratio', 'ratio_recv', 'setup_s', 'image_bytes', 'tar_bytes', 'server_up_over_F', 'client_down_over_F', 'cpu_server_s', 'cpu_clients_s', 'busy', 'qdisc_drops', 'udp_rcvbuf_errors', 'notes'],
    rows.map(r => [r.n, r.transport, r.rate, r.status, r.reason, r.clients.length, r.finished, r.verified, r.tS, r.tRecvS, r.meanS, r.tMinS, r.ratio, r.ratioRecv, r.setupS, r.imageBytes, r.tarBytes, r.serverUpF, r.clientDownF, r.cpuServerS, r.cpuClientsS, r.busy, r.qdiscDrops, r.udpRcvbufErrors, r.notes.join('; ')])
  )
}

export function clientsCsv (rows: TransportRow[]): string {
  const out: Array<Array<string | number | boolean | null>> = []
  for (const r of rows) {
    for (const c of r.clients) out.push([r.n, r.transport, c.host, c.receivedS, c.finishedS, c.verified, c.mismatches, c.downBytes, c.upBytes, c.error])
  }
  return csv(['n', 'transport', 'client', 'received_s', 'finished_s', 'verified', 'mismatches', 'down_bytes', 'up_bytes', 'error'], out)
}

export function ratesCsv (rows: TransportRow[]): string {
  const out: Array<Array<string | number | boolean | null>> = []
  for (const r of rows) {
    const s = r.series
    if (s === null) continue
    for (const [host, down] of s.down) {
      const up = s.up.get(host) ?? []
      for (let i = 0; i < s.t.length; i++) out.push([r.n, r.transport, host, s.t[i], down[i] ?? null, up[i] ?? null])
    }
  }
  return csv(['n', 'transport', 'host', 't_s', 'down_bps', 'up_bps'], out)
}
