/**
 * imgmesh: one agent per host, the image captured on h0, every client deploys at once.
 *
 * Setup (before t0, like the rsync daemon or the torrent seeder; its time goes to setupMs):
 *   1. every host's data dir is initialised in this process (node/agent/node-identity.ts, what
 *      `imgmesh init` does): h0 makes the cluster key and its publisher key, every client joins
 *      with that cluster key and trusts h0's publisher key;
 *   2. h0's agent starts (`node cli/imgmesh.ts agent --data-dir D --listen /ip4/<addr>/tcp/4001
 *      --no-mdns`, in h0's namespace) and prints its multiaddr;
 *   3. `imgmesh capture <image> --image testbed --no-default-excludes` on h0 stores the image and
 *      announces it through h0's agent, which super-seeds it (excluded from T, like making the tar
 *      for the tar transports; reported in the notes);
 *   4. the client agents start, a few at a time, each bootstrapping to h0 and to the agents
 *      started before it (`--opt imgmesh.mesh=h0`: to h0 only), and the run waits (bounded)
 *      until every client is connected to the others and knows the version (heads exchange on
 *      connect). Agents are long-running daemons on every machine: a formed swarm is their
 *      normal state when an operator deploys.
 * t0 = Date.now(); then every client's agent is asked at once to deploy `testbed` into its
 * target, through its control socket (the request `imgmesh deploy` sends; `--opt
 * imgmesh.client=cli` runs the CLI process instead, whose Node start-up then counts, 50 of them
 * at once on the testbed's 2 cores). finishedAt = the deploy's answer (files on disk, written
 * by the agent); receivedAt = the first progress event with every piece in the store.
 * End: each agent's status (traffic) is saved in the transport's directory, then ctx.stopAll()
 * stops every agent by pid.
 *
 * Options (--opt imgmesh.KEY=VALUE): client=api|cli, mesh=peers|full|h0 (peers, the default: every
 * agent keeps `peers` connections of its own choosing, see node/swarm/peer-keeper.ts; full: every
 * agent connected to every other; h0: clients bootstrap to h0 alone), peers=K (the agents'
 * --peers, default 16; mesh=full passes N+1), mdns=on|off (default off),
 * compress=zstd|off (blocks on the wire, zstd by default; IMGMESH_WIRE_COMPRESSION of the agents), cache-mb=N
 * (IMGMESH_BLOCK_CACHE_MB), max-in-flight=N, upload-limit=SIZE (e.g. 6M), log=LEVEL (IMGMESH_LOG of the agents, e.g.
 * info), start-batch=N (agents started at once during setup, default 4), settle=MS (pause after
 * the mesh formed, default 1000), node-args="..." (extra node flags for the agents, e.g. --cpu-prof),
 * agent-args="..." (extra `imgmesh agent` flags, e.g. --status-interval 60).
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ImageStore } from '../../../node/image/image-store.ts'
import { initNode } from '../../../node/agent/node-identity.ts'
import { ControlClient } from '../../../node/control/control-api.ts'
import { sleep, waitExit } from '../netns.ts'
import type { Host, Proc } from '../netns.ts'
import { newOutcomes } from './common.ts'
import type { Transport, TransportContext, TransportResult } from './types.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const REPO = resolve(HERE, '..', '..', '..')
export const CLI = join(REPO, 'cli', 'imgmesh.ts')
const PORT = 4001
export const IMAGE = 'testbed'

export interface AgentHandle {
  host: Host
  dataDir: string
  proc: Proc
  log: string
  addr: string
  client: ControlClient
}

interface PeersAnswer { peer: string }
interface StatusAnswer {
  versions: Array<{ image: string, number: number, percent: number }>
  traffic: { sent: number, received: number, blocksServed: number, blocksFetched: number }
}
interface ProgressEvent { type?: string, have?: number, pieces?: number, done?: boolean }

/** Per thread name of a process: [ns on CPU, ns waiting for a CPU while runnable], from /proc/PID/task/TID/schedstat. */
function threadStats (pid: number): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>()
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const f = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(/\s+/)
        const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim().replace(/[0-9]+$/, '')
        const x = out.get(name) ?? [0, 0]
        x[0] += Number(f[0])
        x[1] += Number(f[1])
        out.set(name, x)
      } catch {}
    }
  } catch {}
  return out
}

/** [ns on CPU, ns waiting for a CPU while runnable] summed over a threadStats reading. */
function sumThreads (threads: Map<string, [number, number]>): [number, number] {
  let run = 0
  let wait = 0
  for (const [r, w] of threads.values()) { run += r; wait += w }
  return [run, wait]
}

/** "from,to" in seconds on CLOCK_MONOTONIC, from `from` (process.hrtime.bigint()) to now: a window to slice a profile with. */
export function monotonicWindow (from: bigint): string {
  return `${(Number(from) / 1e9).toFixed(6)},${(Number(process.hrtime.bigint()) / 1e9).toFixed(6)}`
}

/** [ns on CPU, ns waiting for a CPU while runnable] of a process, all its threads. */
export function schedstat (pid: number): [number, number] {
  return sumThreads(threadStats(pid))
}

/** [user, system] CPU seconds and minor page faults of a process (all threads), from /proc/PID/stat. */
function userSysFaults (pid: number): [number, number, number] {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ')
    return [Number(f[11]) / 100, Number(f[12]) / 100, Number(f[7])]
  } catch { return [0, 0, 0] }
}

/** Two "name: value" counters of a /proc file ([0, 0] when it cannot be read). */
function procCounters (path: string, names: [string, string], unit = ''): [number, number] {
  try {
    const text = readFileSync(path, 'utf8')
    const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)${unit}$`, 'm').exec(text)?.[1] ?? 0)
    return [field(names[0]), field(names[1])]
  } catch { return [0, 0] }
}

/** Read and write system calls of a process so far (/proc/PID/io syscr, syscw; sockets and files alike). */
function syscalls (pid: number): [number, number] {
  return procCounters(`/proc/${pid}/io`, ['syscr', 'syscw'])
}

/** [voluntary, involuntary] context switches of a process's main thread (its event loop's wakeups, and preemptions). */
function switches (pid: number): [number, number] {
  return procCounters(`/proc/${pid}/task/${pid}/status`, ['voluntary_ctxt_switches', 'nonvoluntary_ctxt_switches'])
}

/** What the testbed reads of an agent process at t0 and at its finish. */
interface ProcReading {
  threads: Map<string, [number, number]>
  sched: [number, number]
  userSys: [number, number]
  /** Minor page faults so far. */
  faults: number
  /** [resident, peak resident] KiB (VmRSS, VmHWM). */
  rss: [number, number]
  switches: [number, number]
  syscalls: [number, number]
}

/** Stands in for the finish reading of an agent whose deploy failed. */
const NO_READING: ProcReading = { threads: new Map(), sched: [0, 0], userSys: [0, 0], faults: 0, rss: [0, 0], syscalls: [0, 0], switches: [0, 0] }

function readProc (pid: number): ProcReading {
  const threads = threadStats(pid)
  const [user, sys, faults] = userSysFaults(pid)
  const rss = procCounters(`/proc/${pid}/status`, ['VmRSS', 'VmHWM'], ' kB')
  return { threads, sched: sumThreads(threads), userSys: [user, sys], faults, rss, syscalls: syscalls(pid), switches: switches(pid) }
}

/** CPU seconds per thread name between two threadStats readings. */
function threadDelta (a: Map<string, [number, number]>, b: Map<string, [number, number]>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, [run]] of b) out[name] = Math.round((run - (a.get(name)?.[0] ?? 0)) / 1e6) / 1000
  return out
}

function opt (ctx: TransportContext, key: string, fallback: string): string {
  return ctx.options[key] ?? fallback
}

/** Waits for the agent's multiaddr line (/ip4/ADDR/tcp/PORT/p2p/ID) in its log. */
async function agentAddress (ctx: TransportContext, proc: Proc, log: string, host: Host, deadline: number): Promise<string> {
  const prefix = `/ip4/${host.addr}/tcp/${PORT}/p2p/`
  for (let i = 0; i < 1200 && Date.now() < deadline; i++) {
    if (proc.exit !== null) throw new Error(`agent on ${host.name} exited (code ${String(proc.exit.code)}) before it was ready; see ${log}`)
    if (existsSync(log)) {
      const line = readFileSync(log, 'utf8').split('\n').find(l => l.startsWith(prefix))
      if (line !== undefined) return line.trim()
    }
    await sleep(100)
  }
  throw new Error(`agent on ${host.name} not ready in time; see ${log}`)
}

async function startAgent (ctx: TransportContext, host: Host, dataDir: string, bootstrap: string[], deadline: number, extra: string[] = []): Promise<AgentHandle> {
  const args = [
    ...opt(ctx, 'node-args', '').split(/\s+/).filter(s => s !== ''),
    CLI, 'agent', '--data-dir', dataDir, '--listen', `/ip4/${host.addr}/tcp/${PORT}`,
    opt(ctx, 'mdns', 'off') === 'on' ? '--mdns' : '--no-mdns'
  ]
  for (const b of bootstrap) args.push('--bootstrap', b)
  const peers = peersOf(ctx)
  if (peers !== undefined) args.push('--peers', String(peers))
  args.push(...extra)
  args.push(...opt(ctx, 'agent-args', '').split(/\s+/).filter(s => s !== ''))
  if (ctx.options['max-in-flight'] !== undefined) args.push('--max-in-flight', ctx.options['max-in-flight'])
  if (ctx.options['upload-limit'] !== undefined) args.push('--upload-limit', ctx.options['upload-limit'])
  const name = `${host.name}-agent`
  const env: Record<string, string> = { IMGMESH_LOG_FORMAT: 'json' }
  if (ctx.options.log !== undefined) env.IMGMESH_LOG = ctx.options.log
  if (ctx.options.compress !== undefined) env.IMGMESH_WIRE_COMPRESSION = ctx.options.compress
  if (ctx.options['cache-mb'] !== undefined) env.IMGMESH_BLOCK_CACHE_MB = ctx.options['cache-mb']
  const proc = ctx.spawn({ name, host, cmd: process.execPath, args, role: host === ctx.tb.server ? 'server' : 'client', cwd: dirname(dataDir), env })
  const log = join(ctx.dir, 'logs', `${name}.log`)
  const addr = await agentAddress(ctx, proc, log, host, deadline)
  let client: ControlClient | null = null
  for (let i = 0; i < 50 && client === null && Date.now() < deadline; i++) {
    client = await ControlClient.find(dataDir).catch(() => null)
    if (client === null) await sleep(200)
  }
  if (client === null) throw new Error(`agent on ${host.name} printed its address but its control socket does not answer`)
  return { host, dataDir, proc, log, addr, client }
}

/** The agents' --peers: the `peers` option, N+1 for a full mesh (so that the cap fits it), else unset. */
function peersOf (ctx: TransportContext): number | undefined {
  const mesh = opt(ctx, 'mesh', 'peers')
  if (mesh === 'full') return ctx.tb.clients.length + 1
  if (mesh === 'peers') return Number(opt(ctx, 'peers', '16'))
  return undefined
}

/**
 * Polls until every client agent knows the image and is connected to every agent in `mesh`
 * (besides itself), or, with `minPeers`, to at least that many of them, or until the deadline.
 * For a full mesh, missing peers are dialled through the agents' control sockets (a bootstrap
 * dial can fail on a loaded machine); with `minPeers` the agents choose their peers themselves.
 * Returns a note.
 */
async function waitForSwarm (clients: AgentHandle[], mesh: AgentHandle[], deadline: number, mustKnow = true, minPeers?: number): Promise<string> {
  const started = Date.now()
  const idOf = (a: AgentHandle): string => a.addr.slice(a.addr.lastIndexOf('/') + 1)
  let last = ''
  let lastDial = 0
  for (let i = 0; i < 1200 && Date.now() < deadline; i++) {
    const states = await Promise.all(clients.map(async (a) => {
      try {
        const [peers, status] = await Promise.all([a.client.call<PeersAnswer[]>('peers'), a.client.call<StatusAnswer>('status')])
        const have = new Set(peers.map(p => p.peer))
        return { a, missing: mesh.filter(m => m !== a && !have.has(idOf(m))), knows: status.versions.some(v => v.image === IMAGE) }
      } catch {
        return { a, missing: mesh.filter(m => m !== a), knows: false }
      }
    }))
    const need = (s: { missing: AgentHandle[] }): number => minPeers === undefined ? s.missing.length : Math.max(0, minPeers - (mesh.length - 1 - s.missing.length))
    const missing = states.reduce((n, s) => n + need(s), 0)
    const knowing = states.filter(s => s.knows).length
    last = `${missing} missing connection(s), ${knowing}/${clients.length} know the image`
    if (missing === 0 && (knowing === clients.length || !mustKnow)) return `swarm formed in ${((Date.now() - started) / 1000).toFixed(1)} s`
    if (minPeers === undefined && Date.now() - lastDial > 3000) {
      lastDial = Date.now()
      for (const s of states) for (const m of s.missing) s.a.client.call('dial', { peer: idOf(m) }).catch(() => {})
    }
    await sleep(500)
  }
  return `swarm not fully formed by t0: ${last}`
}

export interface SwarmOptions {
  /** Extra agent arguments for a client (e.g. --group, --target). */
  clientArgs?: (i: number) => string[]
  /** Clients whose publisher keys every node trusts too (they may publish versions). */
  publishers?: number[]
  /** Capture ctx.image.dir on h0 before the clients start (default true). */
  capture?: boolean
}

export interface Swarm {
  h0: AgentHandle
  agents: AgentHandle[]
  dataDirs: string[]
  notes: string[]
  mesh: string
}

/**
 * Setup shared by the transport and the scenarios (scenarios.ts): identities, h0's agent, the
 * capture on h0, the client agents (a few at a time), a formed mesh.
 */
export async function startSwarm (ctx: TransportContext, sopts: SwarmOptions = {}): Promise<Swarm> {
  const notes: string[] = []
  const { server, clients } = ctx.tb
  const setupDeadline = Math.min(ctx.deadline, Date.now() + 300_000 + clients.length * 5000)
  const mesh = opt(ctx, 'mesh', 'peers')
  if (mesh !== 'full' && mesh !== 'h0' && mesh !== 'peers') throw new Error('imgmesh.mesh must be peers, full or h0')
  const batch = Math.max(1, Number(opt(ctx, 'start-batch', '4')))

  // 1. identities: h0 founds the cluster, every client joins it and trusts h0's publisher key
  //    (and the keys of the clients that may publish).
  const dataDirs = ctx.tb.hosts.map(h => join(ctx.dir, h.name, 'data'))
  const first = await initNode(await ImageStore.open(dataDirs[0]))
  const keys = [first.publisher]
  const joined = new Map<number, string>()
  for (const i of sopts.publishers ?? []) {
    const r = await initNode(await ImageStore.open(dataDirs[i + 1]), { clusterKeyFile: first.clusterKeyFile, trust: [first.publisher] })
    keys.push(r.publisher)
    joined.set(i, r.publisher)
  }
  for (let i = 1; i < dataDirs.length; i++) {
    await initNode(await ImageStore.open(dataDirs[i]), { clusterKeyFile: first.clusterKeyFile, trust: keys })
  }
  if (keys.length > 1) await initNode(await ImageStore.open(dataDirs[0]), { trust: keys.slice(1) })

  // 2. h0's agent, 3. the capture on h0 (announced through its agent).
  const h0 = await startAgent(ctx, server, dataDirs[0], [], setupDeadline)
  if (sopts.capture !== false) {
    const captureStart = Date.now()
    const cap = ctx.spawn({
      name: 'h0-capture',
      host: server,
      cmd: process.execPath,
      args: [CLI, 'capture', ctx.image.dir, '--image', IMAGE, '--no-default-excludes', '--data-dir', dataDirs[0], '--json'],
      role: 'server'
    })
    const capEx = await waitExit(cap, setupDeadline)
    if (capEx === null || capEx.code !== 0) throw new Error(`capture on h0 failed (${capEx === null ? 'timeout' : `exit ${String(capEx.code ?? capEx.signal)}`}); see ${join(ctx.dir, 'logs', 'h0-capture.log')}`)
    notes.push(`capture on h0 ${((Date.now() - captureStart) / 1000).toFixed(1)} s (not in T)`)
  }

  // 4. client agents, a few at a time; each bootstraps to h0 and to the agents before it.
  const agents: AgentHandle[] = []
  for (let i = 0; i < clients.length; i += batch) {
    const group = clients.slice(i, i + batch)
    const known = [h0.addr, ...(mesh === 'h0' ? [] : agents.map(a => a.addr))]
    agents.push(...await Promise.all(group.map(async (h, j) => await startAgent(ctx, h, dataDirs[i + j + 1], known, setupDeadline, sopts.clientArgs?.(i + j) ?? []))))
  }
  // mesh=peers: each client has at least min(peers, N) connections (it dials up to `peers`).
  const minPeers = mesh === 'peers' ? Math.min(peersOf(ctx) ?? 1, clients.length) : undefined
  notes.push(await waitForSwarm(agents, mesh === 'h0' ? [h0] : [h0, ...agents], Math.min(setupDeadline, Date.now() + 30_000 + 2000 * clients.length), sopts.capture !== false, minPeers))
  await sleep(Number(opt(ctx, 'settle', '1000')))
  return { h0, agents, dataDirs, notes, mesh }
}

async function run (ctx: TransportContext): Promise<TransportResult> {
  const setupStart = Date.now()
  const mode = opt(ctx, 'client', 'api')
  if (mode !== 'api' && mode !== 'cli') throw new Error('imgmesh.client must be api or cli')
  const { h0, agents, notes, mesh } = await startSwarm(ctx)
  if (ctx.options['idle-probe'] !== undefined) {
    // CPU the agents use while idle in a formed swarm (timers, DHT, gossip), before any deploy.
    const seconds = Number(ctx.options['idle-probe'])
    const all = [h0, ...agents]
    const before = all.map(a => schedstat(a.proc.pid)[0])
    ctx.log(`idle probe: ${seconds} s`)
    await sleep(seconds * 1000)
    const used = all.map((a, i) => (schedstat(a.proc.pid)[0] - before[i]) / 1e9)
    notes.push(`idle swarm: ${(used.reduce((x, y) => x + y, 0) / all.length / seconds * 100).toFixed(1)} % of a CPU per agent over ${seconds} s`)
  }
  const setupMs = Date.now() - setupStart

  // t0: every client deploys at once.
  const outcomes = newOutcomes(ctx)
  const all = [h0, ...agents]
  const loadAt0 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
  const at0 = all.map(a => readProc(a.proc.pid))
  const at1 = all.map(() => NO_READING)
  ctx.log(`t0: swarm formed in ${((Date.now() - setupStart) / 1000).toFixed(1)} s, ${agents.length} clients deploy now`)
  const t0 = Date.now()
  const t0Monotonic = process.hrtime.bigint()
  await Promise.all(agents.map(async (a, i) => {
    const out = outcomes[i]
    const target = ctx.targets[i]
    if (mode === 'cli') {
      const p = ctx.spawn({ name: `${a.host.name}-deploy`, host: a.host, cmd: process.execPath, args: [CLI, 'deploy', IMAGE, target, '--data-dir', a.dataDir, '--json'], role: 'client' })
      const ex = await waitExit(p, ctx.deadline)
      if (ex === null) { out.error = 'timeout'; return }
      if (ex.code !== 0) { out.error = `imgmesh deploy exited ${String(ex.code ?? ex.signal)}`; return }
      out.receivedAt = ex.at
      out.finishedAt = ex.at
      return
    }
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error('timeout')) }, Math.max(0, ctx.deadline - Date.now())) })
    try {
      await Promise.race([late, a.client.call('deploy', { spec: IMAGE, target, excludes: [], dryRun: false, delete: true }, (e) => {
        const ev = e as ProgressEvent
        if (out.receivedAt === null && ev.pieces !== undefined && ev.pieces > 0 && ev.have === ev.pieces) out.receivedAt = Date.now()
      })])
      out.finishedAt = Date.now()
      out.receivedAt ??= out.finishedAt
      at1[i + 1] = readProc(a.proc.pid)
    } catch (err) {
      out.error = (err as Error).message
    } finally {
      clearTimeout(timer)
    }
  }))

  at1[0] = readProc(h0.proc.pid)
  // Every agent again at the last finish: a client that finished early went on serving the others.
  const atEnd = all.map((a, i) => {
    if (i === 0) return at1[0]
    try { return readProc(a.proc.pid) } catch { return NO_READING }
  })
  // The deploy window on CLOCK_MONOTONIC, to slice a system-wide profile (perf record -k CLOCK_MONOTONIC; perf report --time).
  ctx.log(`deploy window on CLOCK_MONOTONIC: ${monotonicWindow(t0Monotonic)}`)
  // CPU time and run-queue wait of each agent between t0 and its finish (h0: the last finish).
  const cpu = all.map((a, i) => {
    const [b, e] = [at0[i], at1[i]]
    return { host: a.host.name, cpuS: (e.sched[0] - b.sched[0]) / 1e9, waitS: (e.sched[1] - b.sched[1]) / 1e9, userS: e.userSys[0] - b.userSys[0], sysS: e.userSys[1] - b.userSys[1], faults: e.faults - b.faults, rssMiB: [b.rss[0], e.rss[0], e.rss[1]].map(k => Math.round(k / 1024)), readCalls: e.syscalls[0] - b.syscalls[0], writeCalls: e.syscalls[1] - b.syscalls[1], wakeups: e.switches[0] - b.switches[0], preempted: e.switches[1] - b.switches[1], threads: threadDelta(b.threads, e.threads) }
  })
  const cl = cpu.slice(1).filter(c => c.cpuS > 0)
  const mean = (xs: number[]): number => xs.reduce((x, y) => x + y, 0) / Math.max(1, xs.length)
  const toEnd = atEnd.map((e, i) => e === NO_READING ? 0 : (e.sched[0] - at0[i].sched[0]) / 1e9)
  const afterOwn = toEnd.slice(1).reduce((x, y, k) => x + (cpu[k + 1].cpuS > 0 ? y - cpu[k + 1].cpuS : 0), 0)
  notes.push(`agent CPU t0→finish: h0 ${cpu[0].cpuS.toFixed(1)} s (run-queue wait ${cpu[0].waitS.toFixed(1)} s), clients mean ${mean(cl.map(c => c.cpuS)).toFixed(1)} s (user ${mean(cl.map(c => c.userS)).toFixed(1)}, sys ${mean(cl.map(c => c.sysS)).toFixed(1)}; wait ${mean(cl.map(c => c.waitS)).toFixed(1)} s, max ${Math.max(0, ...cl.map(c => c.waitS)).toFixed(1)} s); load average at t0 ${loadAt0}`)
  notes.push(`agent CPU t0→last finish: all agents ${toEnd.reduce((x, y) => x + y, 0).toFixed(1)} s, of it clients after their own finish ${afterOwn.toFixed(1)} s`)
  notes.push(`system calls t0→finish: clients mean ${Math.round(mean(cl.map(c => c.readCalls)))} reads, ${Math.round(mean(cl.map(c => c.writeCalls)))} writes; h0 ${cpu[0].readCalls} reads, ${cpu[0].writeCalls} writes; main thread switches t0→finish: clients mean ${Math.round(mean(cl.map(c => c.wakeups)))} voluntary, ${Math.round(mean(cl.map(c => c.preempted)))} preempted`)
  notes.push(`minor page faults t0→finish: clients mean ${Math.round(mean(cl.map(c => c.faults)))}, h0 ${cpu[0].faults}; resident MiB at t0 → finish (peak): clients mean ${mean(cl.map(c => c.rssMiB[0])).toFixed(0)} → ${mean(cl.map(c => c.rssMiB[1])).toFixed(0)} (${mean(cl.map(c => c.rssMiB[2])).toFixed(0)}), h0 ${cpu[0].rssMiB[0]} → ${cpu[0].rssMiB[1]} (${cpu[0].rssMiB[2]})`)
  // What each agent sent and received, for the write-up.
  const statuses = await Promise.all(all.map(async (a, i) => {
    try { return { ...cpu[i], finishedS: i === 0 ? null : (outcomes[i - 1].finishedAt ?? t0) / 1000 - t0 / 1000, ...(await a.client.call<StatusAnswer>('status')).traffic } } catch { return cpu[i] }
  }))
  writeFileSync(join(ctx.dir, 'agent-traffic.json'), JSON.stringify(statuses, null, 1) + '\n')
  const h0Traffic = statuses[0] as { sent?: number }
  if (h0Traffic.sent !== undefined) notes.push(`h0 agent served ${(h0Traffic.sent / ctx.image.bytes).toFixed(2)} F of block data`)
  const lookups = statuses.slice(1).filter(st => ((st as { providerLookups?: number }).providerLookups ?? 0) > 0).length
  notes.push(`DHT provider lookups: ${lookups} of ${agents.length} clients`)
  await ctx.stopAll()
  notes.unshift(`one agent per host, ${mesh === 'full' ? 'full mesh' : mesh === 'peers' ? `${peersOf(ctx) ?? ''} peers each` : 'bootstrap to h0'}, deploy through the ${mode === 'api' ? 'control socket' : 'CLI'}, wire compression ${ctx.options.compress ?? 'default'}${ctx.options['max-in-flight'] === undefined ? '' : `, max-in-flight ${ctx.options['max-in-flight']}`}${ctx.options['upload-limit'] === undefined ? '' : `, upload-limit ${ctx.options['upload-limit']}`}`)
  return { t0, clients: outcomes, setupMs, notes }
}

export const imgmeshTransport: Transport = {
  name: 'imgmesh',
  needsTar: false,
  tools: [],
  description: 'one imgmesh agent per host, image captured on h0, every client deploys at once',
  run
}

/**
 * The same with blocks sent as they are (the agents' default compresses them; T_min stays on the
 * uncompressed bytes either way), to see what compression changes.
 */
export const imgmeshPlainTransport: Transport = {
  name: 'imgmesh-plain',
  needsTar: false,
  tools: [],
  description: 'imgmesh with blocks uncompressed on the wire',
  run: async (ctx) => await run({ ...ctx, options: { compress: 'off', ...ctx.options } })
}
