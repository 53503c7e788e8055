/**
 * Scenarios beyond the first deploy, on the same testbed (namespaces, shaped links, cleanup):
 *
 *   updates  Every client runs the agent with `--group all --target T`; h0 captures v1 and
 *            assigns it to the group (policy apply): every client applies v1 (setup, timed for
 *            the record). Then a client (h1, a trusted publisher), not h0, captures v2: a copy of
 *            v1 with CHANGE % of its files rewritten and a few large files edited in place (a few
 *            bytes each). Its agent announces v2 by gossip and every client applies it. Measured:
 *            wire bytes per client (switch counters, from the publish on) against the changed-chunk
 *            bytes D (`imgmesh diff v1 v2`), the time until every client runs v2 against
 *            T_min(D) = D / rate, and the same change by rsync (daemon on h0 serving v2, every
 *            client holding a copy of v1, `rsync -aHAX --numeric-ids --delete` at once).
 *   faults   Every client deploys at once, as the imgmesh transport does; once the clients hold
 *            one full copy between them (the union of their piece bitfields), h0 and KILL % of
 *            the clients are killed (SIGKILL): the clients holding the most pieces whose loss
 *            still leaves a full copy among the others. Every survivor must finish, and every
 *            survivor's copy must verify.
 *
 *   node simulations/testbed/scenarios.ts updates|faults|all --clients 10[,20] --rate 50mbit \
 *        --image-mb 64 [--opt imgmesh.compress=zstd] [--change 5] [--kill 30] [--work DIR] [--out DIR]
 *
 * Needs root. Outputs: scenarios.json and scenarios.md in the results folder.
 */
import { parseArgs } from 'node:util'
import { cpSync, existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync, lstatSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  cleanupNow, createTestbed, destroyTestbed, installCleanupHandlers, listNamespaces, onCleanup,
  parseRate, requireRoot, spawnProc, stopAll, stopProc, sweepNamespace, waitExit
} from './netns.ts'
import type { Proc, Rate, Testbed } from './netns.ts'
import { prepareImage } from './image.ts'
import type { PreparedImage } from './image.ts'
import { parseSamples } from './sampler.ts'
import { verifyCopy } from './verify.ts'
import { chooseVictims, countBits } from './victims.ts'
import { mulberry32 } from '../sim/rng.ts'
import { newOutcomes, waitListening } from './transports/common.ts'
import { CLI, IMAGE, monotonicWindow, schedstat, startSwarm, type AgentHandle } from './transports/imgmesh.ts'
import type { SpawnRequest, TransportContext } from './transports/types.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const REPO = resolve(HERE, '..', '..')

interface Options {
  scenarios: string[]
  clients: number[]
  rate: Rate
  rateText: string
  imageMiB: number
  image: string | undefined
  timeoutS: number
  work: string
  out: string
  keep: boolean
  prefix: string
  intervalMs: number
  change: number
  bigEdits: number
  kill: number
  opts: Record<string, string>
}

const started = Date.now()
function log (msg: string): void {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(7)}s] ${msg}\n`)
}

function parseOptions (argv: string[]): Options {
  const { values: v, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      clients: { type: 'string', default: '10' },
      rate: { type: 'string', default: '50mbit' },
      'image-mb': { type: 'string', default: '64' },
      image: { type: 'string' },
      timeout: { type: 'string', default: '3600' },
      work: { type: 'string', default: '/dev/shm/imgmesh-testbed' },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
      prefix: { type: 'string' },
      interval: { type: 'string', default: '250' },
      change: { type: 'string', default: '5' },
      'big-edits': { type: 'string', default: '3' },
      kill: { type: 'string', default: '30' },
      opt: { type: 'string', multiple: true, default: [] }
    }
  })
  const which = positionals[0] ?? 'all'
  if (!['updates', 'faults', 'all'].includes(which)) throw new Error('scenario: updates, faults or all')
  const opts: Record<string, string> = {}
  for (const o of v.opt) {
    const m = /^imgmesh\.([a-z0-9-]+)=(.*)$/s.exec(o)
    if (m === null) throw new Error(`--opt ${o}: use imgmesh.KEY=VALUE`)
    opts[m[1]] = m[2]
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '').slice(0, 17)
  return {
    scenarios: which === 'all' ? ['updates', 'faults'] : [which],
    clients: v.clients.split(',').map(Number),
    rate: parseRate(v.rate),
    rateText: v.rate,
    imageMiB: Number(v['image-mb']),
    image: v.image,
    timeoutS: Number(v.timeout),
    work: resolve(v.work),
    out: resolve(v.out ?? join(REPO, 'results', `scenarios-${stamp}`)),
    keep: v.keep,
    prefix: v.prefix ?? `ims${process.pid}-`,
    intervalMs: Number(v.interval),
    change: Number(v.change),
    bigEdits: Number(v['big-edits']),
    kill: Number(v.kill),
    opts
  }
}

/** A TransportContext for the shared imgmesh setup, with its own process list. */
function makeContext (o: Options, tb: Testbed, image: PreparedImage, dir: string, deadline: number, options: Record<string, string>): { ctx: TransportContext, procs: Set<Proc> } {
  const procs = new Set<Proc>()
  const targets = tb.clients.map(h => join(dir, h.name, 'tree'))
  const scratch = tb.clients.map(h => join(dir, h.name, 'scratch'))
  for (const d of [...targets, ...scratch]) mkdirSync(d, { recursive: true })
  const spawn = (req: SpawnRequest): Proc => {
    const p = spawnProc({ name: req.name, ns: req.host === null ? null : req.host.ns, cmd: req.cmd, args: req.args, log: join(dir, 'logs', `${req.name}.log`), cwd: req.cwd, env: req.env === undefined ? undefined : { ...process.env, ...req.env } })
    procs.add(p)
    return p
  }
  const ctx: TransportContext = {
    tb, image, tar: null, dir, targets, scratch, deadline, options,
    log: (msg: string) => log(`N=${tb.clients.length}: ${msg}`),
    spawn,
    stopAll: async () => { await stopAll([...procs].filter(p => p.exit === null)) }
  }
  return { ctx, procs }
}

function startSampler (o: Options, tb: Testbed, file: string, maxMs: number): Proc {
  return spawnProc({ name: 'sampler', ns: tb.switchNs, cmd: process.execPath, args: ['--no-warnings', join(HERE, 'sampler.ts'), String(o.intervalMs), String(maxMs)], log: file })
}

/** Bytes each host downloaded from t0 on (sums of the intervals that end after t0). */
function downBytesSince (file: string, t0: number): Map<string, number> {
  const series = parseSamples(readFileSync(file, 'utf8'), t0)
  const out = new Map<string, number>()
  for (const [h, rates] of series.down) {
    let bytes = 0
    for (let k = 0; k < rates.length; k++) {
      if (series.t[k] <= 0) continue
      const dt = k === 0 ? o0(series.t) : series.t[k] - series.t[k - 1]
      bytes += rates[k] * dt / 8
    }
    out.set(h, bytes)
  }
  return out
}
function o0 (t: number[]): number { return t.length > 1 ? t[1] - t[0] : 0.25 }

/** The last JSON object a CLI printed into its log. */
function lastJson<T> (logFile: string): T {
  const text = readFileSync(logFile, 'utf8')
  const start = text.lastIndexOf('\n{') >= 0 ? text.lastIndexOf('\n{') + 1 : text.indexOf('{')
  return JSON.parse(text.slice(start)) as T
}

async function cli (ctx: TransportContext, name: string, host: AgentHandle, args: string[], deadline: number): Promise<string> {
  const p = ctx.spawn({ name, host: host.host, cmd: process.execPath, args: [CLI, ...args, '--data-dir', host.dataDir], role: 'server' })
  const ex = await waitExit(p, deadline)
  const logFile = join(ctx.dir, 'logs', `${name}.log`)
  if (ex === null || ex.code !== 0) throw new Error(`imgmesh ${args[0]} on ${host.host.name} failed (${ex === null ? 'timeout' : `exit ${String(ex.code)}`}); see ${logFile}`)
  return logFile
}

interface UpdateStatus { updates: { deployed: { image: string, number: number } | null, state: string, error: string | null } }

/** Polls until every agent runs `number` (its update manager says so); returns when each did (null: never). */
async function waitDeployed (agents: AgentHandle[], number: number, deadline: number, onDeployed?: (k: number) => void): Promise<Array<number | null>> {
  const at: Array<number | null> = agents.map(() => null)
  for (let i = 0; i < 100_000 && Date.now() < deadline && at.some(x => x === null); i++) {
    await Promise.all(agents.map(async (a, k) => {
      if (at[k] !== null) return
      try {
        const s = await a.client.call<UpdateStatus>('status')
        if (s.updates.deployed?.image === IMAGE && s.updates.deployed.number === number) { at[k] = Date.now(); onDeployed?.(k) }
      } catch {}
    }))
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return at
}

// ------------------------------------------------------------------------------ v2 of the image

function regularFiles (root: string, rel = '', out: Array<{ rel: string, size: number }> = []): Array<{ rel: string, size: number }> {
  for (const name of readdirSync(join(root, rel)).sort()) {
    const r = rel === '' ? name : `${rel}/${name}`
    const st = lstatSync(join(root, r))
    if (st.isDirectory()) regularFiles(root, r, out)
    else if (st.isFile() && st.nlink === 1) out.push({ rel: r, size: st.size })
  }
  return out
}

/**
 * v2 = a copy of v1 where `pct` % of the regular files get new content (a small part of each
 * rewritten: a few KiB replaced near the start, the file otherwise kept, so content-defined
 * chunking moves only the chunks around the change; small files rewritten whole), and the
 * `big` largest files get a few bytes edited in the middle. Returns what was changed.
 */
function makeV2 (v1: string, v2: string, pct: number, big: number): { files: number, bytesTouched: number } {
  rmSync(v2, { recursive: true, force: true })
  cpSync(v1, v2, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true })
  const files = regularFiles(v2)
  const r = mulberry32(4242)
  const bySize = [...files].sort((a, b) => b.size - a.size)
  const bigOnes = new Set(bySize.slice(0, big).map(f => f.rel))
  const rest = files.filter(f => !bigOnes.has(f.rel) && f.size > 0)
  const count = Math.max(1, Math.round(files.length * pct / 100) - big)
  const chosen = new Set<string>()
  for (let i = 0; i < count * 20 && chosen.size < count && rest.length > 0; i++) chosen.add(rest[Math.floor(r() * rest.length)].rel)
  let bytesTouched = 0
  const patch = (rel: string, offset: number, length: number): void => {
    const buf = Buffer.alloc(length)
    for (let k = 0; k < length; k++) buf[k] = Math.floor(r() * 256)
    const fd = openSync(join(v2, rel), 'r+')
    try { writeSync(fd, buf, 0, length, offset) } finally { closeSync(fd) }
    bytesTouched += length
  }
  for (const rel of chosen) {
    const size = files.find(f => f.rel === rel)?.size ?? 0
    if (size <= 4096) patch(rel, 0, size)
    else patch(rel, Math.floor(size * 0.1), Math.min(4096, size - Math.floor(size * 0.1)))
  }
  for (const rel of bigOnes) {
    const size = files.find(f => f.rel === rel)?.size ?? 0
    if (size > 64) patch(rel, Math.floor(size / 2), 16)
  }
  return { files: chosen.size + bigOnes.size, bytesTouched }
}

// ------------------------------------------------------------------------------ scenarios

interface UpdatesResult {
  n: number
  v1AppliedS: number | null
  captureS: number
  changedFiles: number
  deltaBytes: number
  deltaChunks: number
  tMinS: number
  tS: number | null
  ratio: number | null
  updated: number
  verified: number
  wireMeanPerD: number | null
  wireMaxPerD: number | null
  publisherUpPerD: number | null
  rsync: { tS: number | null, ratio: number | null, wireMeanPerD: number | null, verified: number, finished: number }
  notes: string[]
}

async function updatesScenario (o: Options, tb: Testbed, image: PreparedImage, work: string, deadline: number): Promise<UpdatesResult> {
  const n = tb.clients.length
  const dir = join(work, `N${n}`, 'updates')
  const { ctx } = makeContext(o, tb, image, dir, deadline, o.opts)
  const notes: string[] = []
  const swarm = await startSwarm(ctx, { clientArgs: i => ['--group', 'all', '--target', ctx.targets[i]], publishers: [0] })
  notes.push(...swarm.notes)
  const { h0, agents } = swarm
  const publisher = agents[0]

  // v1 through an assignment: every client applies it.
  const a0 = Date.now()
  await cli(ctx, 'h0-assign', h0, ['assign', IMAGE, '--group', 'all', '--policy', 'apply', '--json'], deadline)
  const v1 = await waitDeployed(agents, 1, Math.min(deadline, Date.now() + 600_000))
  const v1AppliedS = v1.every(x => x !== null) ? (Math.max(...(v1 as number[])) - a0) / 1000 : null
  log(`N=${n} updates: v1 applied on ${v1.filter(x => x !== null).length}/${n} clients${v1AppliedS === null ? '' : ` in ${v1AppliedS.toFixed(1)} s`}`)
  if (v1AppliedS === null) throw new Error('v1 was not applied everywhere')

  // v2 from the publisher client.
  const v2 = join(work, `v2-N${n}`)
  const changed = makeV2(image.dir, v2, o.change, o.bigEdits)
  const samples = join(dir, 'samples.jsonl')
  const sampler = startSampler(o, tb, samples, Math.max(1000, deadline - Date.now()))
  await new Promise(resolve => setTimeout(resolve, 2 * o.intervalMs))
  const c0 = Date.now()
  const capLog = await cli(ctx, `${publisher.host.name}-capture-v2`, publisher, ['capture', v2, '--image', IMAGE, '--no-default-excludes', '--json'], deadline)
  const t0 = Date.now()
  const cap = lastJson<{ version: number, newBytes: number, published: boolean }>(capLog)
  if (cap.version !== 2 || !cap.published) throw new Error(`capture of v2 on ${publisher.host.name}: version ${cap.version}, published ${String(cap.published)}`)
  // Watch the clients from the publish on: CPU time (and run-queue wait) of each agent from
  // the publish to its own update, h0's to the last one. The diff (a CLI run on the publisher)
  // only once every client is done, so it takes no CPU from the update.
  const t0Monotonic = process.hrtime.bigint()
  const cpu0 = [h0, ...agents].map(a => schedstat(a.proc.pid))
  const cpu1 = [...cpu0]
  const done = await waitDeployed(agents, 2, Math.min(deadline, Date.now() + 600_000), (k) => { cpu1[k + 1] = schedstat(agents[k].proc.pid) })
  cpu1[0] = schedstat(h0.proc.pid)
  // The update window on CLOCK_MONOTONIC, to slice a profile (perf record -k CLOCK_MONOTONIC, or --cpu-prof).
  log(`N=${n} updates: window on CLOCK_MONOTONIC: ${monotonicWindow(t0Monotonic)}`)
  const diffLog = await cli(ctx, `${publisher.host.name}-diff`, publisher, ['diff', `${IMAGE}@1`, `${IMAGE}@2`, '--json'], deadline)
  const diff = lastJson<{ newChunks: number, newBytes: number, changed: unknown[], added: unknown[] }>(diffLog)
  const D = diff.newBytes
  const tMinS = D * 8 / o.rate.bps
  const cpuS = cpu0.map((b, k) => (cpu1[k][0] - b[0]) / 1e9)
  const waitS = cpu0.map((b, k) => (cpu1[k][1] - b[1]) / 1e9)
  const others = agents.map((a, k) => k + 1).filter(k => agents[k - 1] !== publisher)
  await new Promise(resolve => setTimeout(resolve, 2 * o.intervalMs))
  await stopProc(sampler)
  const bytes = downBytesSince(samples, t0)
  const mean = (xs: number[]): number | null => xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length
  // T: the clients that learn v2 through gossip (the publisher, which applies its own v2, is
  // reported apart).
  const fin = done.filter((x, k): x is number => x !== null && agents[k] !== publisher)
  const tS = fin.length === n - 1 ? (Math.max(...fin) - t0) / 1000 : null
  const pubAt = done[agents.indexOf(publisher)]
  notes.push(`the publisher ${publisher.host.name} ran v2 ${pubAt === null ? 'never' : `after ${((pubAt - t0) / 1000).toFixed(1)} s`}`)
  notes.push(`agent CPU from the publish to its update: clients mean ${mean(others.map(k => cpuS[k]))?.toFixed(2) ?? '-'} s (run-queue wait ${mean(others.map(k => waitS[k]))?.toFixed(2) ?? '-'} s), the publisher ${cpuS[agents.indexOf(publisher) + 1].toFixed(2)} s, h0 (to the last update) ${cpuS[0].toFixed(2)} s`)
  const updated = done.filter(x => x !== null).length
  const wire = agents.filter(a => a !== publisher).map(a => (bytes.get(a.host.name) ?? 0) / D)
  const series = parseSamples(readFileSync(samples, 'utf8'), t0)
  await ctx.stopAll()
  let verified = 0
  for (let i = 0; i < n; i++) {
    const v = await verifyCopy(v2, ctx.targets[i])
    if (v.ok) verified++
    else writeFileSync(join(dir, `verify-${tb.clients[i].name}.txt`), v.sample.join('\n') + '\n')
  }
  log(`N=${n} updates: D ${(D / 1048576).toFixed(2)} MiB, all updated in ${tS?.toFixed(2) ?? '-'} s (T_min(D) ${tMinS.toFixed(2)} s), verified ${verified}/${n}`)

  // The same change by rsync.
  const rdir = join(dir, 'rsync')
  const copies = tb.clients.map(h => join(rdir, h.name))
  for (const c of copies) cpSync(image.dir, c, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true })
  const conf = join(rdir, 'rsyncd.conf')
  writeFileSync(conf, [`address = ${tb.server.addr}`, 'port = 873', 'uid = root', 'gid = root', 'use chroot = yes', 'numeric ids = yes', 'max connections = 0', '[image]', `  path = ${v2}`, '  read only = yes', ''].join('\n'))
  const daemon = ctx.spawn({ name: 'rsyncd', host: tb.server, cmd: 'rsync', args: ['--daemon', '--no-detach', `--config=${conf}`], role: 'server' })
  await waitListening(tb.server, 873, 'tcp', Math.min(deadline, Date.now() + 20_000), daemon)
  const rsamples = join(rdir, 'samples.jsonl')
  const rsampler = startSampler(o, tb, rsamples, Math.max(1000, deadline - Date.now()))
  await new Promise(resolve => setTimeout(resolve, 2 * o.intervalMs))
  const r0 = Date.now()
  const outcomes = newOutcomes(ctx)
  await Promise.all(tb.clients.map(async (h, i) => {
    const p = ctx.spawn({ name: `${h.name}-rsync`, host: h, cmd: 'rsync', args: ['-aHAX', '--numeric-ids', '--delete', `rsync://${tb.server.addr}:873/image/`, copies[i] + '/'], role: 'client' })
    const ex = await waitExit(p, deadline)
    if (ex !== null && ex.code === 0) outcomes[i].finishedAt = ex.at
  }))
  await new Promise(resolve => setTimeout(resolve, 2 * o.intervalMs))
  await stopProc(rsampler)
  await ctx.stopAll()
  const rbytes = downBytesSince(rsamples, r0)
  const rfin = outcomes.map(x => x.finishedAt).filter((x): x is number => x !== null)
  let rverified = 0
  for (const c of copies) if ((await verifyCopy(v2, c)).ok) rverified++
  const rT = rfin.length === n ? (Math.max(...rfin) - r0) / 1000 : null
  const rwire = tb.clients.map(h => (rbytes.get(h.name) ?? 0) / D)
  if (!o.keep) { rmSync(rdir, { recursive: true, force: true }); rmSync(v2, { recursive: true, force: true }) }
  notes.push(`v2: ${changed.files} files changed (${o.change} % rewritten in part, ${o.bigEdits} large files edited in place), ${diff.changed.length} paths changed, ${diff.newChunks} new chunks`)
  notes.push(`capture of v2 on ${publisher.host.name} ${((t0 - c0) / 1000).toFixed(1)} s (before t0)`)
  return {
    n,
    v1AppliedS,
    captureS: (t0 - c0) / 1000,
    changedFiles: changed.files,
    deltaBytes: D,
    deltaChunks: diff.newChunks,
    tMinS,
    tS,
    ratio: tS === null ? null : tS / tMinS,
    updated,
    verified,
    wireMeanPerD: mean(wire),
    wireMaxPerD: wire.length === 0 ? null : Math.max(...wire),
    publisherUpPerD: (series.upBytes.get(publisher.host.name) ?? 0) / D,
    rsync: { tS: rT, ratio: rT === null ? null : rT / tMinS, wireMeanPerD: mean(rwire), verified: rverified, finished: rfin.length },
    notes
  }
}

interface FaultsResult {
  n: number
  killed: string[]
  killAtS: number | null
  survivors: number
  finished: number
  verified: number
  tS: number | null
  tMinS: number
  ratio: number | null
  notes: string[]
}

interface DeployEvent { pieces?: number, bitmap?: string }

async function faultsScenario (o: Options, tb: Testbed, image: PreparedImage, work: string, deadline: number): Promise<FaultsResult> {
  const n = tb.clients.length
  const dir = join(work, `N${n}`, 'faults')
  const { ctx, procs } = makeContext(o, tb, image, dir, deadline, o.opts)
  const notes: string[] = []
  const swarm = await startSwarm(ctx)
  notes.push(...swarm.notes)
  const { h0, agents } = swarm
  const nv = Math.max(1, Math.round(n * o.kill / 100))
  // The victims are chosen at the kill, not before: the clients holding the most pieces whose
  // loss still leaves one full copy among the others (see chooseVictims).
  const victims = new Set<number>()
  const outcomes = newOutcomes(ctx)
  // What each client holds, from its deploy's own progress events (every 500 ms, with the
  // bitfield): asking every agent for its status instead waits for the slowest of twenty agents
  // sharing two cores, seconds at a time. A finished client holds every piece.
  const held: Uint8Array[] = agents.map(() => new Uint8Array(0))
  let pieces = 0
  let events = 0
  let killAt: number | null = null
  let heldAtKill: number[] = []
  let killed: () => void = () => {}
  const killedP = new Promise<void>(resolve => { killed = resolve })
  const t0 = Date.now()
  let unionAt: number | null = null
  /** Once the clients hold every piece between them: kill h0 and the victims (chooseVictims). */
  const consider = (): void => {
    if (killAt !== null || pieces === 0 || Date.now() >= deadline) return
    // Recorded apart from the kill, which needs nv clients whose every piece another client
    // holds too: the two moments can differ.
    if (unionAt === null && chooseVictims(held, pieces, 0) !== null) unionAt = Date.now()
    const chosen = chooseVictims(held, pieces, nv)
    if (chosen === null) return
    killAt = Date.now()
    for (const i of chosen) victims.add(i)
    heldAtKill = held.map(b => countBits(b, pieces) / pieces)
    for (const v of [h0, ...agents.filter((_a, i) => victims.has(i))]) {
      try { process.kill(v.proc.pid, 'SIGKILL') } catch {}
    }
    killed()
    log(`N=${n} faults: the clients hold every piece at ${((killAt - t0) / 1000).toFixed(2)} s: killed h0 and ${[...victims].map(i => tb.clients[i].name).join(' ')}`)
  }
  // A control connection to an agent killed mid-answer is not always ended (ControlClient waits
  // for 'end'): a victim's deploy is not waited for past the kill.
  const calls = agents.map(async (a, i) => {
    const call = a.client.call('deploy', { spec: IMAGE, target: ctx.targets[i], excludes: [], dryRun: false, delete: true }, (e) => {
      const ev = e as DeployEvent
      if (ev.bitmap === undefined || ev.pieces === undefined || ev.pieces === 0) return
      if (killAt === null) events++
      pieces = ev.pieces
      held[i] = new Uint8Array(Buffer.from(ev.bitmap, 'base64'))
      consider()
    })
    call.catch(() => {})
    try {
      await Promise.race([call, killedP.then(async () => { if (victims.has(i)) throw new Error('killed'); await call })])
      outcomes[i].finishedAt = Date.now()
      if (pieces > 0) { held[i] = new Uint8Array(Math.ceil(pieces / 8)).fill(0xff); consider() }
    } catch (err) {
      outcomes[i].error = (err as Error).message
    }
  })
  // The survivors' deploys end by themselves (finished or failed); bounded by the deadline.
  let timer: NodeJS.Timeout | undefined
  await Promise.race([Promise.all(calls), new Promise<void>(resolve => { timer = setTimeout(resolve, Math.max(0, deadline - Date.now())) })])
  clearTimeout(timer)
  killed()
  const survivors = agents.filter((_a, i) => !victims.has(i))
  notes.push(`${events} progress events with a client's pieces until the kill`)
  if (unionAt !== null) notes.push(`the clients held every piece between them from ${((unionAt - t0) / 1000).toFixed(2)} s`)
  if (killAt !== null) {
    const kept = heldAtKill.filter((_h, i) => !victims.has(i))
    const avg = (xs: number[]): number => xs.reduce((x, y) => x + y, 0) / Math.max(1, xs.length)
    notes.push(`at the kill the survivors held ${(avg(kept) * 100).toFixed(0)} % of the pieces on average (${(Math.min(...kept) * 100).toFixed(0)}–${(Math.max(...kept) * 100).toFixed(0)} %), the victims ${(avg(heldAtKill.filter((_h, i) => victims.has(i))) * 100).toFixed(0)} %`)
  }
  await ctx.stopAll()
  void procs
  let verified = 0
  let finished = 0
  const fin: number[] = []
  for (let i = 0; i < n; i++) {
    if (victims.has(i)) continue
    if (outcomes[i].finishedAt !== null) { finished++; fin.push(outcomes[i].finishedAt as number) }
    const v = await verifyCopy(image.dir, ctx.targets[i])
    if (v.ok) verified++
    else writeFileSync(join(dir, `verify-${tb.clients[i].name}.txt`), [outcomes[i].error ?? '', ...v.sample].join('\n') + '\n')
  }
  // Survivors that had finished before the kill: the kill tested only the others.
  const doneBeforeKill = killAt === null ? 0 : fin.filter(t => t <= (killAt as number)).length
  if (killAt !== null) notes.push(`${doneBeforeKill} of ${survivors.length} survivors had finished before the kill`)
  const tMinS = image.bytes * 8 / o.rate.bps
  const tS = finished === survivors.length && fin.length > 0 ? (Math.max(...fin) - t0) / 1000 : null
  const errors = [...new Set(outcomes.filter((_x, i) => !victims.has(i)).map(x => x.error).filter((e): e is string => e !== undefined))]
  if (errors.length > 0) notes.push(`survivor errors: ${errors.slice(0, 3).join('; ')}`)
  log(`N=${n} faults: ${finished}/${survivors.length} survivors finished, ${verified} verified, T ${tS?.toFixed(2) ?? '-'} s`)
  return { n, killed: ['h0', ...[...victims].map(i => tb.clients[i].name)], killAtS: killAt === null ? null : (killAt - t0) / 1000, survivors: survivors.length, finished, verified, tS, tMinS, ratio: tS === null ? null : tS / tMinS, notes }
}

// ------------------------------------------------------------------------------ main

function fmt (x: number | null, d = 2): string { return x === null ? '-' : x.toFixed(d) }

function writeOutputs (o: Options, image: PreparedImage, updates: UpdatesResult[], faults: FaultsResult[]): void {
  mkdirSync(o.out, { recursive: true })
  writeFileSync(join(o.out, 'scenarios.json'), JSON.stringify({ date: new Date().toISOString(), command: `node simulations/testbed/scenarios.ts ${process.argv.slice(2).join(' ')}`, rate: o.rateText, imageBytes: image.bytes, updates, faults }, null, 2) + '\n')
  const md: string[] = [`# imgmesh testbed scenarios, ${new Date().toISOString()}`, '', `Command: \`node simulations/testbed/scenarios.ts ${process.argv.slice(2).join(' ')}\``, '', `Links ${o.rateText}; image F = ${image.bytes} bytes.`, '']
  if (updates.length > 0) {
    md.push('## Updates', '', 'D = bytes of the chunks v2 has and v1 has not (`imgmesh diff`); wire = bytes each client downloaded (switch counters, layer 2: TCP/IP/Ethernet headers included) from the publish on; T = until every client other than the publisher runs v2.', '', '```',
      ' N  files  D (MiB)  T_min(D) s  T (s)  T/T_min  wire/D mean  wire/D max  publisher up/D  verified | rsync T (s)  rsync T/T_min  rsync wire/D  rsync verified',
      ...updates.map(u => `${String(u.n).padStart(2)}  ${String(u.changedFiles).padStart(5)}  ${(u.deltaBytes / 1048576).toFixed(2).padStart(7)}  ${fmt(u.tMinS).padStart(10)}  ${fmt(u.tS).padStart(5)}  ${fmt(u.ratio).padStart(7)}  ${fmt(u.wireMeanPerD, 3).padStart(11)}  ${fmt(u.wireMaxPerD, 3).padStart(10)}  ${fmt(u.publisherUpPerD).padStart(14)}  ${`${u.verified}/${u.n}`.padStart(8)} | ${fmt(u.rsync.tS).padStart(11)}  ${fmt(u.rsync.ratio).padStart(13)}  ${fmt(u.rsync.wireMeanPerD, 3).padStart(12)}  ${`${u.rsync.verified}/${u.n}`.padStart(14)}`),
      '```', '', ...updates.map(u => `- N=${u.n}: v1 applied through the assignment in ${fmt(u.v1AppliedS, 1)} s; ${u.notes.join('; ')}`), '')
  }
  if (faults.length > 0) {
    md.push('## Faults', '', '```', ' N  killed                 kill at (s)  survivors  finished  verified  T (s)  T/T_min',
      ...faults.map(f => `${String(f.n).padStart(2)}  ${f.killed.join(',').padEnd(22)}  ${fmt(f.killAtS).padStart(11)}  ${String(f.survivors).padStart(9)}  ${String(f.finished).padStart(8)}  ${String(f.verified).padStart(8)}  ${fmt(f.tS).padStart(5)}  ${fmt(f.ratio).padStart(7)}`),
      '```', '', ...faults.map(f => `- N=${f.n}: ${f.notes.join('; ')}`), '')
  }
  writeFileSync(join(o.out, 'scenarios.md'), md.join('\n'))
}

async function main (): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  requireRoot('the testbed scenarios')
  installCleanupHandlers()
  const deadline = Date.now() + o.timeoutS * 1000
  const timer = setTimeout(() => { log('global timeout reached; stopping everything'); cleanupNow('global timeout'); process.exit(124) }, o.timeoutS * 1000)
  const work = join(o.work, o.prefix.replace(/-+$/, ''))
  if (existsSync(work)) throw new Error(`${work} exists already`)
  mkdirSync(work, { recursive: true })
  onCleanup(`work dir ${work}`, () => { if (!o.keep) rmSync(work, { recursive: true, force: true }) })
  log(`prefix ${o.prefix}, work ${work}, results ${o.out}`)
  const image = await prepareImage({ source: o.image ?? null, sliceMiB: o.imageMiB, dest: join(work, 'image') })
  log(`image: ${image.bytes} bytes in ${image.files} files`)
  const updates: UpdatesResult[] = []
  const faults: FaultsResult[] = []
  for (const n of o.clients) {
    for (const sc of o.scenarios) {
      const tb = createTestbed(o.prefix, n, o.rate)
      try {
        const budget = Math.min(deadline - 10_000, Date.now() + 1_200_000 + n * 20_000)
        if (sc === 'updates') updates.push(await updatesScenario(o, tb, image, work, budget))
        else faults.push(await faultsScenario(o, tb, image, work, budget))
      } catch (err) {
        log(`N=${n} ${sc}: failed: ${(err as Error).message}`)
      } finally {
        for (const h of tb.hosts) sweepNamespace(h.ns)
        destroyTestbed(tb)
        const left = listNamespaces(o.prefix)
        if (left.length > 0) log(`warning: namespaces left: ${left.join(' ')}`)
        if (!o.keep) rmSync(join(work, `N${n}`), { recursive: true, force: true })
      }
      writeOutputs(o, image, updates, faults)
    }
  }
  clearTimeout(timer)
  process.stdout.write(readFileSync(join(o.out, 'scenarios.md'), 'utf8'))
  cleanupNow('done')
}

main().catch(err => {
  process.stderr.write(`scenarios: ${(err as Error).stack ?? String(err)}\n`)
  cleanupNow('error')
  process.exit(1)
})
