/**
 * Hand-written SVG line charts (no dependencies, nothing fetched): download rate per client over
 * time, aggregate bandwidth over time per transport, deployment time against N per transport.
 */
import type { TransportRow } from './metrics.ts'

export interface Series {
  name: string
  xs: number[]
  ys: number[]
  color: string
  width?: number
  dash?: string
  /** draw dots at the points (for sparse series) */
  dots?: boolean
  /** leave the series out of the legend */
  noLegend?: boolean
}

export interface ChartSpec {
  title: string
  xLabel: string
  yLabel: string
  series: Series[]
  /** horizontal reference lines */
  hlines?: Array<{ y: number, label: string, color: string }>
  xMin?: number
  yMax?: number
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']

export function color (i: number): string {
  return PALETTE[i % PALETTE.length]
}

export const TRANSPORT_COLORS: Record<string, string> = { imgmesh: '#d62728', 'imgmesh-plain': '#9467bd', rsync: '#1f77b4', multicast: '#2ca02c', bittorrent: '#ff7f0e' }

function esc (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** Round tick step for a span, aiming at about `target` ticks. */
function niceStep (span: number, target: number): number {
  if (!(span > 0)) return 1
  const raw = span / target
  const mag = 10 ** Math.floor(Math.log10(raw))
  const norm = raw / mag
  const nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10
  return nice * mag
}

function num (x: number): string {
  return String(Number(x.toFixed(2)))
}

export function lineChart (spec: ChartSpec): string {
  const W = 820
  const H = 460
  const m = { l: 70, r: 180, t: 40, b: 55 }
  const pw = W - m.l - m.r
  const ph = H - m.t - m.b
  const allX = spec.series.flatMap(s => s.xs).filter(x => Number.isFinite(x) && (spec.xMin === undefined || x >= spec.xMin))
  const allY = spec.series.flatMap(s => s.ys).filter(Number.isFinite).concat((spec.hlines ?? []).map(h => h.y))
  // a loop, not Math.max(...xs): a long run's samples exceed the engine's argument limit
  const xMin = spec.xMin ?? allX.reduce((a, x) => Math.min(a, x), 0)
  let xMax = allX.length > 0 ? allX.reduce((a, x) => Math.max(a, x), -Infinity) : 1
  if (xMax <= xMin) xMax = xMin + 1
  let yMax = spec.yMax ?? (allY.length > 0 ? allY.reduce((a, y) => Math.max(a, y), -Infinity) * 1.08 : 1)
  if (!(yMax > 0)) yMax = 1
  const xs = niceStep(xMax - xMin, 8)
  const ys = niceStep(yMax, 6)
  xMax = Math.ceil(xMax / xs) * xs
  yMax = Math.ceil(yMax / ys) * ys
  const X = (x: number): number => m.l + ((x - xMin) / (xMax - xMin)) * pw
  const Y = (y: number): number => m.t + ph - (y / yMax) * ph
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`)
  out.push(`<text x="${m.l + pw / 2}" y="22" text-anchor="middle" font-size="15">${esc(spec.title)}</text>`)
  for (let i = 0; i * xs <= xMax - xMin + 1e-9 && i < 100; i++) {
    const x = xMin + i * xs
    out.push(`<line x1="${X(x).toFixed(1)}" y1="${m.t}" x2="${X(x).toFixed(1)}" y2="${m.t + ph}" stroke="#eee"/>`)
    out.push(`<text x="${X(x).toFixed(1)}" y="${m.t + ph + 16}" text-anchor="middle">${num(x)}</text>`)
  }
  for (let i = 0; i * ys <= yMax + 1e-9 && i < 100; i++) {
    const y = i * ys
    out.push(`<line x1="${m.l}" y1="${Y(y).toFixed(1)}" x2="${m.l + pw}" y2="${Y(y).toFixed(1)}" stroke="#eee"/>`)
    out.push(`<text x="${m.l - 6}" y="${(Y(y) + 4).toFixed(1)}" text-anchor="end">${num(y)}</text>`)
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`)
  out.push(`<text x="${m.l + pw / 2}" y="${H - 14}" text-anchor="middle">${esc(spec.xLabel)}</text>`)
  out.push(`<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(spec.yLabel)}</text>`)
  for (const h of spec.hlines ?? []) {
    out.push(`<line x1="${m.l}" y1="${Y(h.y).toFixed(1)}" x2="${m.l + pw}" y2="${Y(h.y).toFixed(1)}" stroke="${h.color}" stroke-dasharray="6 4"/>`)
    out.push(`<text x="${m.l + pw - 4}" y="${(Y(h.y) - 4).toFixed(1)}" text-anchor="end" fill="${h.color}">${esc(h.label)}</text>`)
  }
  for (const s of spec.series) {
    const pts: string[] = []
    for (let i = 0; i < s.xs.length && i < s.ys.length; i++) {
      if (Number.isFinite(s.xs[i]) && Number.isFinite(s.ys[i]) && s.xs[i] >= xMin && s.xs[i] <= xMax) pts.push(`${X(s.xs[i]).toFixed(1)},${Y(Math.min(s.ys[i], yMax)).toFixed(1)}`)
    }
    if (pts.length === 0) continue
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.2}"${s.dash !== undefined ? ` stroke-dasharray="${s.dash}"` : ''} points="${pts.join(' ')}"/>`)
    if (s.dots === true) for (const p of pts) { const [px, py] = p.split(','); out.push(`<circle cx="${px}" cy="${py}" r="3.5" fill="${s.color}"/>`) }
  }
  const legend = spec.series.filter(s => s.noLegend !== true).slice(0, 24)
  legend.forEach((s, i) => {
    const y = m.t + 10 + i * 17
    out.push(`<line x1="${m.l + pw + 14}" y1="${y}" x2="${m.l + pw + 36}" y2="${y}" stroke="${s.color}" stroke-width="${Math.max(2, s.width ?? 1.2)}"${s.dash !== undefined ? ` stroke-dasharray="${s.dash}"` : ''}/>`)
    out.push(`<text x="${m.l + pw + 42}" y="${y + 4}">${esc(s.name)}</text>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

/** Download rate of every client (and h0's upload) over time, for one transport run. */
export function perClientChart (row: TransportRow): string | null {
  const s = row.series
  if (s === null || s.t.length === 0) return null
  const series: Series[] = []
  const clients = row.clients.map(c => c.host)
  clients.forEach((h, i) => {
    const ys = s.down.get(h)
    if (ys !== undefined) series.push({ name: h, xs: s.t, ys: ys.map(v => v / 1e6), color: color(i), width: 1, noLegend: clients.length > 20 })
  })
  const up = s.up.get('h0')
  if (up !== undefined) series.push({ name: 'h0 upload', xs: s.t, ys: up.map(v => v / 1e6), color: '#000', width: 2, dash: '5 3' })
  const rate = row.rateBps / 1e6
  return lineChart({
    title: `${row.transport}, N=${row.n}: download rate per client`,
    xLabel: 'time since clients started (s)',
    yLabel: 'Mbit/s',
    series,
    xMin: 0,
    hlines: [{ y: rate, label: `link ${num(rate)} Mbit/s`, color: '#888' }]
  })
}

/** Sum of all clients' download rates over time, one line per transport, for one N. */
export function aggregateChart (rows: TransportRow[]): string | null {
  const series: Series[] = []
  for (const row of rows) {
    const s = row.series
    if (s === null || s.t.length === 0) continue
    const sum = s.t.map((_, i) => row.clients.reduce((acc, c) => acc + (s.down.get(c.host)?.[i] ?? 0), 0) / 1e6)
    series.push({ name: row.transport, xs: s.t, ys: sum, color: TRANSPORT_COLORS[row.transport] ?? '#333', width: 1.8 })
  }
  if (series.length === 0) return null
  const row = rows[0]
  const rate = row.rateBps / 1e6
  return lineChart({
    title: `N=${row.n}: aggregate download bandwidth`,
    xLabel: 'time since clients started (s)',
    yLabel: 'Mbit/s (all clients)',
    series,
    xMin: 0,
    hlines: [{ y: rate * row.n, label: `N x link = ${num(rate * row.n)} Mbit/s`, color: '#888' }, { y: rate, label: 'one link', color: '#bbb' }]
  })
}

/** Deployment time against N, one line per transport, with T_min. */
export function deployVsNChart (rows: TransportRow[]): string | null {
  const byT = new Map<string, TransportRow[]>()
  for (const r of rows) {
    if (r.tS === null) continue
    byT.set(r.transport, [...(byT.get(r.transport) ?? []), r])
  }
  if (byT.size === 0) return null
  const series: Series[] = []
  for (const [t, rs] of byT) {
    rs.sort((a, b) => a.n - b.n)
    series.push({ name: t, xs: rs.map(r => r.n), ys: rs.map(r => r.tS ?? NaN), color: TRANSPORT_COLORS[t] ?? '#333', width: 2, dots: true })
  }
  const ns = [...new Set(rows.map(r => r.n))].sort((a, b) => a - b)
  const tmin = ns.map(n => rows.find(r => r.n === n)?.tMinS ?? NaN)
  series.push({ name: 'T_min', xs: ns, ys: tmin, color: '#000', width: 1.5, dash: '6 4', dots: true })
  return lineChart({ title: `deployment time vs N (${rows[0].rate})`, xLabel: 'clients N', yLabel: 'seconds to the last client', series, xMin: 0 })
}
