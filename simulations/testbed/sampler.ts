/**
 * Byte-counter sampler, run inside the switch namespace by the testbed:
 *
 *   ip netns exec <prefix>sw node simulations/testbed/sampler.ts INTERVAL_MS MAX_MS > samples.jsonl
 *
 * Every INTERVAL_MS it prints one JSON line {"t": Date.now(), "c": {"v1": [rx, tx], ...}} with
 * the counters of the switch-side veth ends. The switch end of host i's link sends what host i
 * receives, so tx_bytes of vI = bytes downloaded by host i and rx_bytes of vI = bytes uploaded by
 * host i (layer-2 bytes, headers included). Each line also carries "cpu": [busy, total], the
 * machine's cumulative CPU ticks from /proc/stat (busy = total − idle − iowait; the file is not
 * namespaced, so this is the whole machine). It stops on SIGTERM or after MAX_MS.
 *
 * parseSamples() turns the file back into rates per host; busyFraction() tells how busy the
 * machine's cores were over a span of the run.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

export interface Sample {
  t: number
  /** per switch-side interface: [rx_bytes, tx_bytes] */
  c: Record<string, [number, number]>
  /** the machine's cumulative CPU ticks: [busy, total] */
  cpu?: [number, number]
}

export interface RateSeries {
  /** seconds since t0, at the end of each interval */
  t: number[]
  /** per host name ("h0", "h1"...): download bits/s per interval */
  down: Map<string, number[]>
  /** per host name: upload bits/s per interval */
  up: Map<string, number[]>
  /** per host: bytes downloaded / uploaded between the first and last sample */
  downBytes: Map<string, number>
  upBytes: Map<string, number>
  /** the machine's cumulative CPU ticks at each sample: t in seconds since t0 */
  cpu: Array<{ t: number, busy: number, total: number }>
}

export function parseSamples (text: string, t0: number): RateSeries {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    try { samples.push(JSON.parse(line) as Sample) } catch { /* a torn last line */ }
  }
  const series: RateSeries = { t: [], down: new Map(), up: new Map(), downBytes: new Map(), upBytes: new Map(), cpu: [] }
  for (const s of samples) {
    if (s.cpu !== undefined) series.cpu.push({ t: (s.t - t0) / 1000, busy: s.cpu[0], total: s.cpu[1] })
  }
  const host = (ifname: string): string => 'h' + ifname.slice(1)
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]
    const b = samples[i]
    const dt = (b.t - a.t) / 1000
    if (dt <= 0) continue
    series.t.push((b.t - t0) / 1000)
    for (const [ifname, [rx, tx]] of Object.entries(b.c)) {
      const prev = a.c[ifname]
      if (prev === undefined) continue
      const h = host(ifname)
      if (!series.down.has(h)) { series.down.set(h, []); series.up.set(h, []) }
      series.down.get(h)?.push(((tx - prev[1]) * 8) / dt)
      series.up.get(h)?.push(((rx - prev[0]) * 8) / dt)
    }
  }
  if (samples.length >= 2) {
    const first = samples[0]
    const last = samples[samples.length - 1]
    for (const [ifname, [rx, tx]] of Object.entries(last.c)) {
      const f = first.c[ifname]
      if (f === undefined) continue
      series.downBytes.set(host(ifname), tx - f[1])
      series.upBytes.set(host(ifname), rx - f[0])
    }
  }
  return series
}

/**
 * The share of the machine's CPU time (0..1, all cores) that was busy between fromS and toS
 * (seconds since t0), from the samples that bracket the span: the last at or before fromS and
 * the first at or after toS. Null without such samples.
 */
export function busyFraction (series: RateSeries, fromS: number, toS: number): number | null {
  let a: RateSeries['cpu'][number] | undefined
  let b: RateSeries['cpu'][number] | undefined
  for (const s of series.cpu) {
    if (s.t <= fromS) a = s
    if (s.t >= toS && b === undefined) b = s
  }
  if (a === undefined || b === undefined || b.total <= a.total) return null
  return (b.busy - a.busy) / (b.total - a.total)
}

/** The first line of /proc/stat ("cpu user nice system idle iowait irq softirq steal ..."). */
export function readCpuTicks (stat: string): [number, number] | undefined {
  const f = stat.split('\n', 1)[0].trim().split(/\s+/)
  if (f[0] !== 'cpu' || f.length < 5) return undefined
  // guest and guest_nice are already counted in user and nice
  const ticks = f.slice(1, 9).map(Number)
  if (ticks.some(x => !Number.isFinite(x))) return undefined
  const total = ticks.reduce((x, y) => x + y, 0)
  const idle = ticks[3] + (ticks[4] ?? 0)
  return [total - idle, total]
}

function sampleOnce (ifnames: string[]): Sample {
  const c: Record<string, [number, number]> = {}
  for (const n of ifnames) {
    try {
      const rx = Number(readFileSync(`/sys/class/net/${n}/statistics/rx_bytes`, 'utf8'))
      const tx = Number(readFileSync(`/sys/class/net/${n}/statistics/tx_bytes`, 'utf8'))
      c[n] = [rx, tx]
    } catch { /* interface gone */ }
  }
  let cpu: [number, number] | undefined
  try { cpu = readCpuTicks(readFileSync('/proc/stat', 'utf8')) } catch { /* no /proc */ }
  return cpu === undefined ? { t: Date.now(), c } : { t: Date.now(), c, cpu }
}

function main (): void {
  const interval = Number(process.argv[2] ?? 250)
  const maxMs = Number(process.argv[3] ?? 600_000)
  if (!(interval >= 50 && interval <= 10_000) || !(maxMs > 0 && maxMs <= 24 * 3600_000)) {
    process.stderr.write('usage: sampler.ts INTERVAL_MS(50..10000) MAX_MS\n')
    process.exit(2)
  }
  const ifnames = readdirSync('/sys/class/net').filter(n => /^v\d+$/.test(n)).sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
  const end = Date.now() + maxMs
  const tick = (): void => {
    process.stdout.write(JSON.stringify(sampleOnce(ifnames)) + '\n')
    if (Date.now() >= end) process.exit(0)
  }
  tick()
  setInterval(tick, interval)
  process.on('SIGTERM', () => { tick(); process.exit(0) })
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main()
