/**
 * Byte-counter sampler, run inside the switch namespace by the testbed:
 *
 *   ip netns exec <prefix>sw node simulations/testbed/sampler.ts INTERVAL_MS MAX_MS > samples.jsonl
 *
 * Every INTERVAL_MS it prints one JSON line {"t": Date.now(), "c": {"v1": [rx, tx], ...}} with
 * the counters of the switch-side veth ends. The switch end of host i's link sends what host i
 * receives, so tx_bytes of vI = bytes downloaded by host i and rx_bytes of vI = bytes uploaded by
 * host i (layer-2 bytes, headers included). It stops on SIGTERM or after MAX_MS.
 *
 * parseSamples() turns the file back into rates per host.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

export interface Sample {
  t: number
  /** per switch-side interface: [rx_bytes, tx_bytes] */
  c: Record<string, [number, number]>
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
}

export function parseSamples (text: string, t0: number): RateSeries {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    try { samples.push(JSON.parse(line) as Sample) } catch { /* a torn last line */ }
  }
  const series: RateSeries = { t: [], down: new Map(), up: new Map(), downBytes: new Map(), upBytes: new Map() }
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

function sampleOnce (ifnames: string[]): Sample {
  const c: Record<string, [number, number]> = {}
  for (const n of ifnames) {
    try {
      const rx = Number(readFileSync(`/sys/class/net/${n}/statistics/rx_bytes`, 'utf8'))
      const tx = Number(readFileSync(`/sys/class/net/${n}/statistics/tx_bytes`, 'utf8'))
      c[n] = [rx, tx]
    } catch { /* interface gone */ }
  }
  return { t: Date.now(), c }
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
