/**
 * Transfer speed on loopback between two processes, each method measured in the same run:
 *
 *   1. raw TCP socket                                     (the ceiling of the machine)
 *   2. raw libp2p stream: one stream, noise + yamux, the   (the ceiling imgmesh can reach)
 *      same node configuration imgmesh uses (createSwarmNode)
 *   3. imgmesh agent to agent: fetch into the store, and deploy into a target
 *
 * Each method moves N MiB (default 512) from this process to a receiver child process that
 * acknowledges once it has every byte; median of 3 runs. Also prints the RSS of the raw libp2p
 * receiver and of the serving agent: 2 s after start, after 30 s idle, while serving, and
 * 30 s after serving.
 *
 *   node simulations/bench-transfer.ts [--mib 512] [--runs 3] [--chunk-kib 64]
 *
 * Traffic stays on 127.0.0.1. Children are stopped by their pid; every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createServer, connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { readFileSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { cpus, loadavg } from 'node:os'
import { randomFillSync } from 'node:crypto'
import { createInterface } from 'node:readline'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import { createSwarmNode, type ClusterGate, type SwarmNode } from '../node/swarm/libp2p-node.ts'
import { generatePeerKey } from '../node/swarm/peer-key.ts'
import { generateClusterKey } from '../node/swarm/cluster-key.ts'
import { streamSource, waitForDrain } from '../protocols/blocks/frame.ts'
import { ControlClient } from '../node/control/control-api.ts'

export const MIB = 1024 * 1024
const BENCH_PROTOCOL = '/imgmesh/bench/1.0.0'
const SELF = fileURLToPath(import.meta.url)
const CLI = fileURLToPath(new URL('../cli/imgmesh.ts', import.meta.url))
const NODE = process.execPath
/** Longest any single transfer, handshake or child start may take. */
const STEP_TIMEOUT_MS = 180_000

// ------------------------------------------------------------------------------- helpers

export function median (xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y)
  return s.length % 2 === 1 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

export function mbps (bytes: number, seconds: number): number {
  return bytes / 1e6 / seconds
}

/** Resident set size of a process in MiB, from /proc (Linux). */
export function rssMiB (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const m = /VmRSS:\s+(\d+) kB/.exec(status)
  return m === null ? Number.NaN : Number(m[1]) / 1024
}

/** How long an idle process is watched before its RSS counts as settled. */
const SETTLE_MS = 30_000

/**
 * RSS of an idle process: right away, and after SETTLE_MS without work (V8's memory reducer
 * gives back the young generation that startup grew, about 10-20 s after activity stops).
 */
export async function idleRssMiB (pid: number): Promise<{ now: number, settled: number }> {
  const now = rssMiB(pid)
  await new Promise(resolve => setTimeout(resolve, SETTLE_MS))
  return { now, settled: rssMiB(pid) }
}

export async function withTimeout<T> (what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what}: no result within ${ms} ms`)) }, ms) })
  try {
    return await Promise.race([p, t])
  } finally {
    clearTimeout(timer)
  }
}

/** One line describing the machine and its load: figures taken under load are not comparable. */
export function machineLine (): string {
  const [l1, l5] = loadavg()
  return `${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load average ${l1.toFixed(2)} / ${l5.toFixed(2)} (1 / 5 min)`
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
export function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[11], fields[12]: utime, stime in clock ticks (100 per second on Linux)
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** xorshift fill: incompressible, cheap, the same on every run. */
export function pseudoRandom (bytes: number): Uint8Array {
  const out = new Uint8Array(bytes)
  const words = new Uint32Array(out.buffer, 0, bytes >>> 2)
  let x = 0x9e3779b9
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    words[i] = x >>> 0
  }
  return out
}

function header (total: number): Uint8Array {
  const h = new Uint8Array(8)
  new DataView(h.buffer).setBigUint64(0, BigInt(total))
  return h
}

/** Counts bytes after an 8-byte length header; true once all have arrived. */
class Sink {
  private head = new Uint8Array(8)
  private headLen = 0
  private total = -1
  received = 0
  push (chunk: Uint8Array): boolean {
    let data = chunk
    if (this.total < 0) {
      const take = Math.min(8 - this.headLen, data.length)
      this.head.set(data.subarray(0, take), this.headLen)
      this.headLen += take
      data = data.subarray(take)
      if (this.headLen < 8) return false
      this.total = Number(new DataView(this.head.buffer).getBigUint64(0))
    }
    this.received += data.length
    return this.received >= this.total
  }
}

// ------------------------------------------------------------------------------- children

export interface ChildInfo { addr?: string, port?: number, pid: number }

export interface Child {
  proc: ChildProcess
  info: ChildInfo
  stop: () => Promise<void>
}

/** Starts this script as a child in `role`; resolves once it printed its ready line. */
export async function spawnChild (role: string, env: Record<string, string> = {}): Promise<Child> {
  const proc = spawn(NODE, [SELF, '--child', role], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } })
  const lines = createInterface({ input: proc.stdout! })
  const ready = new Promise<ChildInfo>((resolve, reject) => {
    lines.once('line', line => { try { resolve(JSON.parse(line) as ChildInfo) } catch (err) { reject(err) } })
    proc.once('exit', code => { reject(new Error(`child ${role} exited with ${code} before it was ready`)) })
  })
  const stop = async (): Promise<void> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return
    const exited = once(proc, 'exit')
    proc.kill('SIGTERM')
    const t = setTimeout(() => { proc.kill('SIGKILL') }, 5000)
    await exited
    clearTimeout(t)
  }
  try {
    const info = await withTimeout(`starting child ${role}`, 30_000, ready)
    return { proc, info, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

async function childTcpSink (): Promise<void> {
  const server = createServer(sock => {
    const sink = new Sink()
    sock.on('data', (chunk: Buffer) => { if (sink.push(chunk)) sock.end(Uint8Array.of(1)) })
    sock.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const addr = server.address()
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0
  process.stdout.write(JSON.stringify({ port, pid: process.pid }) + '\n')
}

async function childLibp2pSink (): Promise<SwarmNode> {
  const key = Buffer.from(process.env.IMGMESH_BENCH_KEY ?? '', 'hex')
  const gate = (process.env.IMGMESH_BENCH_GATE ?? 'prologue') as ClusterGate
  const node = await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey: key, gate, listen: ['/ip4/127.0.0.1/tcp/0'] })
  await node.libp2p.handle(BENCH_PROTOCOL, async (stream: Stream) => {
    const sink = new Sink()
    try {
      for await (const chunk of streamSource(stream)) {
        const bufs = chunk instanceof Uint8Array ? [chunk] : [...chunk]
        let done = false
        for (const b of bufs) done = sink.push(b) || done
        if (done) {
          stream.send(Uint8Array.of(1))
          await stream.close()
          return
        }
      }
    } catch (err) {
      process.stderr.write(`bench receiver: ${(err as Error).name}: ${(err as Error).message}\n`)
      stream.abort(err as Error)
    }
  }, { maxInboundStreams: 4 })
  process.stdout.write(JSON.stringify({ addr: node.multiaddrs()[0].toString(), pid: process.pid }) + '\n')
  return node
}

async function runChild (role: string): Promise<void> {
  let node: SwarmNode | undefined
  if (role === 'tcp-sink') await childTcpSink()
  else if (role === 'libp2p-sink') node = await childLibp2pSink()
  else throw new Error(`unknown child role ${role}`)
  const quit = (): void => {
    void (node?.stop() ?? Promise.resolve()).finally(() => { process.exit(0) })
  }
  process.on('SIGTERM', quit)
  process.on('SIGINT', quit)
  // the parent going away closes our stdin: leave then too
  process.stdin.on('end', quit)
  process.stdin.resume()
}

// ------------------------------------------------------------------------------- senders

const SOURCE = pseudoRandom(4 * MIB)

/** Sends `total` bytes in `chunk`-byte writes over a raw TCP socket; seconds until acked. */
export async function tcpTransfer (port: number, total: number, chunk: number): Promise<number> {
  const sock: Socket = connect({ host: '127.0.0.1', port, noDelay: true })
  await once(sock, 'connect')
  const acked = once(sock, 'data')
  const t0 = performance.now()
  sock.write(header(total))
  let sent = 0
  while (sent < total) {
    const n = Math.min(chunk, total - sent)
    const off = sent % (SOURCE.length - chunk)
    if (!sock.write(SOURCE.subarray(off, off + n))) await once(sock, 'drain')
    sent += n
  }
  await withTimeout('tcp ack', STEP_TIMEOUT_MS, acked)
  const seconds = (performance.now() - t0) / 1000
  sock.destroy()
  return seconds
}

/** Sends `total` bytes over one libp2p stream (new connection); seconds until acked. */
export async function libp2pTransfer (node: SwarmNode, addr: string, total: number, chunk: number): Promise<number> {
  const ma = multiaddr(addr)
  const stream = await node.libp2p.dialProtocol(ma, BENCH_PROTOCOL, { signal: AbortSignal.timeout(30_000) })
  const acked = (async () => {
    for await (const _c of streamSource(stream)) return true
    return false
  })()
  const t0 = performance.now()
  stream.send(header(total))
  let sent = 0
  while (sent < total) {
    const n = Math.min(chunk, total - sent)
    const off = sent % (SOURCE.length - chunk)
    // not stream.onDrain(): it stops waiting after the first drain (see protocols/blocks/frame.ts)
    stream.send(SOURCE.subarray(off, off + n))
    await waitForDrain(stream, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) })
    sent += n
  }
  const ok = await withTimeout('libp2p ack', STEP_TIMEOUT_MS, acked)
  const seconds = (performance.now() - t0) / 1000
  if (!ok) throw new Error('receiver closed the stream without acknowledging')
  await stream.close().catch(() => {})
  const peer = node.libp2p.getConnections().find(c => c.remoteAddr.toString() === ma.decapsulateCode(421).toString())?.remotePeer
  if (peer !== undefined) await node.libp2p.hangUp(peer).catch(() => {})
  else for (const c of node.libp2p.getConnections()) await c.close().catch(() => {})
  return seconds
}

// ------------------------------------------------------------------------------- methods

/** One way of moving bytes from this process to another; `run` returns seconds per transfer. */
export interface Method {
  name: string
  setup: () => Promise<void>
  run: (bytes: number) => Promise<number>
  teardown: () => Promise<void>
  /** Extra lines (e.g. memory) printed after the method's results. */
  notes?: () => string[]
  /** The receiving process, for CPU accounting. */
  receiverPid?: () => number | undefined
  /** The sending process, for CPU accounting, when it is not this one. */
  senderPid?: () => number | undefined
}

export function tcpMethod (chunk: number): Method {
  let child: Child | undefined
  return {
    name: 'raw TCP socket',
    setup: async () => { child = await spawnChild('tcp-sink') },
    run: async (bytes) => await tcpTransfer(child!.info.port!, bytes, chunk),
    teardown: async () => { await child?.stop() },
    receiverPid: () => child?.info.pid
  }
}

export function libp2pMethod (chunk: number, gate: ClusterGate = 'prologue', name = 'raw libp2p stream (noise+yamux)'): Method {
  let child: Child | undefined
  let node: SwarmNode | undefined
  let idle = { now: Number.NaN, settled: Number.NaN }
  let busyRss = Number.NaN
  return {
    name,
    setup: async () => {
      const key = generateClusterKey()
      child = await spawnChild('libp2p-sink', { IMGMESH_BENCH_KEY: Buffer.from(key).toString('hex'), IMGMESH_BENCH_GATE: gate })
      node = await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey: key, gate, listen: ['/ip4/127.0.0.1/tcp/0'] })
      await new Promise(resolve => setTimeout(resolve, 2000))
      idle = await idleRssMiB(child.info.pid)
    },
    run: async (bytes) => {
      const s = await libp2pTransfer(node!, child!.info.addr!, bytes, chunk)
      busyRss = Math.max(busyRss || 0, rssMiB(child!.info.pid))
      return s
    },
    teardown: async () => {
      await node?.stop()
      await child?.stop()
    },
    notes: () => [`receiver RSS: 2 s after start ${idle.now.toFixed(0)} MiB, idle ${SETTLE_MS / 1000} s ${idle.settled.toFixed(0)} MiB, after receiving ${busyRss.toFixed(0)} MiB`],
    receiverPid: () => child?.info.pid
  }
}

/**
 * imgmesh agent to agent: two agent processes on loopback; each run captures a fresh image of
 * `bytes` pseudo-random content (not timed) on the first, then times the second agent fetching
 * it into its store (`fetch`) — the same work as the raw stream plus hashing and storing every
 * block. `deploy` additionally writes the files into a target.
 */
export function imgmeshMethod (mode: 'fetch' | 'deploy'): Method {
  let work = ''
  let a: ChildProcess | undefined
  let b: ChildProcess | undefined
  let run = 0
  // the idle figures are taken in fetch mode only (the same agent, the same setup)
  let idle = { now: Number.NaN, settled: Number.NaN }
  let afterServing = Number.NaN
  let busyRss = 0
  const cli = (args: string[]): void => {
    const r = spawnSync(NODE, [CLI, ...args], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`imgmesh ${args.join(' ')}: ${r.stderr}`)
  }
  const startAgent = async (dir: string, bootstrap: string[]): Promise<[ChildProcess, string]> => {
    const child = spawn(NODE, [CLI, 'agent', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', ...bootstrap.flatMap(x => ['--bootstrap', x])], { stdio: ['ignore', 'pipe', 'inherit'] })
    const rl = createInterface({ input: child.stdout! })
    const addr = await withTimeout('agent start', 30_000, new Promise<string>((resolve) => { rl.on('line', (l) => { if (l.includes('/p2p/')) resolve(l.trim()) }) }))
    return [child, addr]
  }
  return {
    name: `imgmesh agent to agent (${mode})`,
    setup: async () => {
      work = mkdtempSync(join(tmpdir(), 'imgmesh-bench-transfer-'))
      cli(['init', '--data-dir', join(work, 'a')])
      const pub = JSON.parse(spawnSync(NODE, [CLI, 'keys', '--json', '--data-dir', join(work, 'a')], { encoding: 'utf8' }).stdout) as { publisher: string }
      cli(['init', '--data-dir', join(work, 'b'), '--cluster-key', join(work, 'a', 'cluster.key'), '--trust', pub.publisher])
      let addr: string
      ;[a, addr] = await startAgent(join(work, 'a'), [])
      ;[b] = await startAgent(join(work, 'b'), [addr])
      await new Promise(resolve => setTimeout(resolve, 2000))
      if (mode === 'fetch') idle = await idleRssMiB(a.pid!)
    },
    run: async (bytes) => {
      run++
      const src = join(work, `src${run}`)
      mkdirSync(src)
      // Fresh random content every run (nothing to deduplicate), in 64 MiB files.
      for (let f = 0; f * 64 * MIB < bytes; f++) {
        writeFileSync(join(src, `data-${f}.bin`), randomFillSync(Buffer.allocUnsafe(Math.min(64 * MIB, bytes - f * 64 * MIB))))
      }
      cli(['capture', src, '--image', `bench${run}`, '--no-default-excludes', '--data-dir', join(work, 'a')])
      rmSync(src, { recursive: true, force: true })
      const client = await ControlClient.require(join(work, 'b'))
      const sampler = setInterval(() => { busyRss = Math.max(busyRss, rssMiB(a!.pid!)) }, 100)
      const t0 = process.hrtime.bigint()
      try {
        if (mode === 'fetch') await client.call('fetch', { spec: `bench${run}` })
        else await client.call('deploy', { spec: `bench${run}`, target: join(work, `target${run}`) })
      } finally {
        clearInterval(sampler)
      }
      const s = Number(process.hrtime.bigint() - t0) / 1e9
      rmSync(join(work, `target${run}`), { recursive: true, force: true })
      return s
    },
    teardown: async () => {
      if (mode === 'fetch' && a !== undefined && a.exitCode === null) afterServing = (await idleRssMiB(a.pid!)).settled
      for (const c of [a, b]) {
        if (c === undefined || c.exitCode !== null) continue
        const exited = once(c, 'exit')
        c.kill('SIGTERM')
        await withTimeout('agent stop', 15_000, exited).catch(() => { c.kill('SIGKILL') })
      }
      rmSync(work, { recursive: true, force: true })
    },
    notes: () => [mode === 'fetch'
      ? `serving agent RSS: 2 s after start ${idle.now.toFixed(0)} MiB, idle ${SETTLE_MS / 1000} s ${idle.settled.toFixed(0)} MiB, while serving up to ${busyRss.toFixed(0)} MiB, idle ${SETTLE_MS / 1000} s after serving ${afterServing.toFixed(0)} MiB`
      : `serving agent RSS while serving up to ${busyRss.toFixed(0)} MiB`],
    receiverPid: () => b?.pid,
    senderPid: () => a?.pid
  }
}

export interface MethodResult {
  name: string
  mbps: number[]
  median: number
  /** CPU seconds per GB moved, medians over the runs. */
  senderCpuPerGB: number
  receiverCpuPerGB: number
  notes: string[]
}

/** One measured transfer of `bytes`: MB/s and the two processes' CPU seconds per GB. */
async function measureOnce (method: Method, bytes: number, label: string): Promise<{ mbps: number, sender: number, receiver: number }> {
  const pid = method.receiverPid?.()
  const spid = method.senderPid?.()
  const senderCpu = (): number => {
    if (spid !== undefined) return cpuSeconds(spid)
    const c = process.cpuUsage()
    return (c.user + c.system) / 1e6
  }
  const s0 = senderCpu()
  const r0 = pid === undefined ? 0 : cpuSeconds(pid)
  const s = await withTimeout(label, STEP_TIMEOUT_MS, method.run(bytes))
  return {
    mbps: mbps(bytes, s),
    sender: (senderCpu() - s0) / (bytes / 1e9),
    receiver: pid === undefined ? Number.NaN : (cpuSeconds(pid) - r0) / (bytes / 1e9)
  }
}

/**
 * Measures every method `runs` times, interleaved: round i runs each method once, one after
 * another, so that a slow spell of the machine hits all methods alike rather than the one that
 * happened to run then. All methods are set up first (their processes sit idle while the others
 * run) and each does one unmeasured warm-up transfer, so both processes run JIT-compiled code.
 */
export async function measureAll (methods: Method[], bytes: number, runs: number, warmupBytes = Math.min(bytes, 64 * MIB)): Promise<MethodResult[]> {
  const samples = methods.map(() => ({ mbps: [] as number[], sender: [] as number[], receiver: [] as number[] }))
  const ready: Method[] = []
  try {
    for (const m of methods) {
      ready.push(m)
      await m.setup()
      if (warmupBytes > 0) await withTimeout(`${m.name} warm-up`, STEP_TIMEOUT_MS, m.run(warmupBytes))
    }
    for (let i = 0; i < runs; i++) {
      for (const [k, m] of methods.entries()) {
        const r = await measureOnce(m, bytes, `${m.name} run ${i + 1}`)
        samples[k].mbps.push(r.mbps)
        samples[k].sender.push(r.sender)
        if (!Number.isNaN(r.receiver)) samples[k].receiver.push(r.receiver)
      }
    }
  } finally {
    for (const m of ready.reverse()) await m.teardown()
  }
  return methods.map((m, k) => ({
    name: m.name,
    mbps: samples[k].mbps,
    median: median(samples[k].mbps),
    senderCpuPerGB: median(samples[k].sender),
    receiverCpuPerGB: samples[k].receiver.length > 0 ? median(samples[k].receiver) : Number.NaN,
    notes: m.notes?.() ?? []
  }))
}

// ------------------------------------------------------------------------------- main

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      mib: { type: 'string', default: '512' },
      runs: { type: 'string', default: '3' },
      'chunk-kib': { type: 'string', default: '64' }
    }
  })
  const bytes = Number(values.mib) * MIB
  const runs = Number(values.runs)
  const chunk = Number(values['chunk-kib']) * 1024
  if (!(bytes > 0) || !(runs > 0) || !(chunk > 0) || chunk > SOURCE.length / 2) throw new Error('bad arguments')

  const methods: Method[] = [tcpMethod(chunk), libp2pMethod(chunk), imgmeshMethod('fetch'), imgmeshMethod('deploy')]

  console.log(`bench-transfer: ${values.mib} MiB per run, ${runs} runs, ${values['chunk-kib']} KiB writes, loopback, Node ${process.version}`)
  console.log(`  ${machineLine()}`)
  const results = await measureAll(methods, bytes, runs)
  for (const r of results) {
    console.log(`  ${r.name.padEnd(34)} median ${r.median.toFixed(0).padStart(5)} MB/s   runs ${r.mbps.map(x => x.toFixed(0)).join(', ')}`)
    console.log(`    CPU per GB: sender ${r.senderCpuPerGB.toFixed(2)} s, receiver ${r.receiverCpuPerGB.toFixed(2)} s`)
    for (const n of r.notes) console.log(`    ${n}`)
  }
  console.log(`  after: ${machineLine()}`)
  const base = results.find(r => r.name.startsWith('raw libp2p'))
  const tcpR = results.find(r => r.name.startsWith('raw TCP'))
  if (base !== undefined && tcpR !== undefined) {
    console.log('ratios (median):')
    for (const r of results) {
      // the same round's raw libp2p run is the fairest baseline on a noisy machine
      const paired = median(r.mbps.map((x, i) => x / base.mbps[i]))
      console.log(`  ${r.name.padEnd(34)} ${(r.median / tcpR.median * 100).toFixed(0).padStart(4)}% of TCP   ${(r.median / base.median * 100).toFixed(0).padStart(4)}% of raw libp2p   (per round: median ${(paired * 100).toFixed(0)}%)`)
    }
  }
}

const args = process.argv.slice(2)
if (process.argv[1] === SELF) {
  if (args[0] === '--child') {
    runChild(args[1]).catch((err: unknown) => { process.stderr.write(`child failed: ${String(err)}\n`); process.exit(1) })
  } else {
    main().then(() => { process.exit(0) }, (err: unknown) => { process.stderr.write(`bench-transfer failed: ${(err as Error).stack ?? String(err)}\n`); process.exit(1) })
  }
}
