/**
 * The imgmesh testbed: deploys one image from h0 to N clients over shaped links in network
 * namespaces, with each transport in turn (imgmesh, rsync, multicast, bittorrent), and reports
 * per-client finish times, deployment time, verification, CPU, and the ratio to T_min.
 * See simulations/testbed/README.md. Needs root.
 */
import { parseArgs } from 'node:util'
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  cleanupNow, createTestbed, destroyTestbed, installCleanupHandlers, listNamespaces, onCleanup,
  parseRate, readDrops, requireRoot, spawnProc, stopAll, stopProc, sweepNamespace, run as runSync
} from './netns.ts'
import type { Proc, Rate, Testbed } from './netns.ts'
import { CpuGroup } from './cpu.ts'
import { ensureTar, prepareImage } from './image.ts'
import type { PreparedImage } from './image.ts'
import { busyFraction, parseSamples } from './sampler.ts'
import type { RateSeries } from './sampler.ts'
import { verifyCopy } from './verify.ts'
import { clientsCsv, fmt, ratesCsv, summaryCsv, table, tMin } from './metrics.ts'
import type { ClientRow, TransportRow } from './metrics.ts'
import { aggregateChart, deployVsNChart, perClientChart } from './charts.ts'
import { TRANSPORTS, transportByName } from './transports/index.ts'
import { TransportUnavailable } from './transports/types.ts'
import type { SpawnRequest, Transport, TransportContext, TransportResult } from './transports/types.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const REPO = resolve(HERE, '..', '..')

const USAGE = `usage: node simulations/testbed/run.ts [options]   (as root)

  --clients N[,N...]     clients per run (default 10); several values run one after another
  --rate RATE            every link, both directions, htb (default 50mbit)
  --image-mb MIB         slice of the image to deploy, 0 = all (default 64)
  --image DIR            deploy (a slice of) DIR instead of the cached Debian root's /usr
  --transports LIST      comma list of ${TRANSPORTS.map(t => t.name).join(',')} (default: all)
  --timeout SECONDS      global timeout for the whole run (default 3600)
  --transport-timeout S  per transport and N (default max(120, 1.5·(N+2)·T_min + 60))
  --out DIR              results folder (default results/testbed-<date>)
  --work DIR             scratch parent (default /var/tmp/imgmesh-testbed); removed at the end
  --keep                 keep the scratch directory (copies, logs)
  --stop-grace S         seconds a process has between SIGTERM and SIGKILL at the end of a transport
                         (default 2; more for agents started with --cpu-prof, which write on exit)
  --interval MS          byte-counter sampling interval (default 250)
  --opt T.KEY=VALUE      transport option, e.g. bittorrent.seed=leave, multicast.max-bitrate=45m,
                         rsync.flags="-aH" (repeatable)
  --prefix P             namespace/cgroup name prefix (default imt<pid>-)
`

interface Options {
  clients: number[]
  rate: Rate
  rateText: string
  imageMiB: number
  image: string | null
  transports: Transport[]
  timeoutS: number
  transportTimeoutS: number | null
  out: string
  work: string
  keep: boolean
  stopGraceS: number
  intervalMs: number
  opts: Record<string, Record<string, string>>
  prefix: string
}

function fail (msg: string): never {
  process.stderr.write(`testbed: ${msg}\n${USAGE}`)
  process.exit(2)
}

function stamp (): string {
  const d = new Date()
  const p = (n: number): string => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`
}

function parseOptions (argv: string[]): Options {
  let v
  try {
    v = parseArgs({
      args: argv,
      options: {
        clients: { type: 'string', default: '10' },
        rate: { type: 'string', default: '50mbit' },
        'image-mb': { type: 'string', default: '64' },
        image: { type: 'string' },
        transports: { type: 'string', default: TRANSPORTS.map(t => t.name).join(',') },
        timeout: { type: 'string', default: '3600' },
        'transport-timeout': { type: 'string' },
        out: { type: 'string' },
        work: { type: 'string', default: '/var/tmp/imgmesh-testbed' },
        keep: { type: 'boolean', default: false },
        'stop-grace': { type: 'string', default: '2' },
        interval: { type: 'string', default: '250' },
        opt: { type: 'string', multiple: true, default: [] },
        prefix: { type: 'string', default: `imt${process.pid}-` },
        help: { type: 'boolean', short: 'h', default: false }
      },
      strict: true,
      allowPositionals: false
    }).values
  } catch (err) {
    fail((err as Error).message)
  }
  if (v.help) { process.stdout.write(USAGE); process.exit(0) }
  const clients = v.clients.split(',').map(s => Number(s.trim()))
  if (clients.some(n => !Number.isInteger(n) || n < 1 || n > 250)) fail('--clients: integers 1..250')
  let rate: Rate
  try { rate = parseRate(v.rate) } catch (err) { fail((err as Error).message) }
  const imageMiB = Number(v['image-mb'])
  if (!Number.isFinite(imageMiB) || imageMiB < 0) fail('--image-mb: a number of MiB, 0 for all')
  let transports: Transport[]
  try { transports = v.transports.split(',').filter(s => s !== '').map(s => transportByName(s.trim())) } catch (err) { fail((err as Error).message) }
  if (transports.length === 0) fail('--transports: none given')
  const timeoutS = Number(v.timeout)
  if (!(timeoutS > 0 && timeoutS <= 7 * 86400)) fail('--timeout: seconds > 0')
  const tt = v['transport-timeout'] === undefined ? null : Number(v['transport-timeout'])
  if (tt !== null && !(tt > 0)) fail('--transport-timeout: seconds > 0')
  const stopGraceS = Number(v['stop-grace'])
  if (!(stopGraceS >= 0 && stopGraceS <= 600)) fail('--stop-grace: 0..600 seconds')
  const intervalMs = Number(v.interval)
  if (!(intervalMs >= 50 && intervalMs <= 10_000)) fail('--interval: 50..10000 ms')
  const opts: Record<string, Record<string, string>> = {}
  for (const o of v.opt) {
    const m = /^([a-z][a-z0-9-]*)\.([a-z0-9-]+)=(.*)$/s.exec(o)
    if (m === null) fail(`--opt ${o}: use TRANSPORT.KEY=VALUE`)
    opts[m[1]] = { ...(opts[m[1]] ?? {}), [m[2]]: m[3] }
  }
  if (!/^[a-z0-9-]{1,24}$/.test(v.prefix)) fail('--prefix: lower-case letters, digits, dashes (<= 24)')
  return {
    clients,
    rate,
    rateText: v.rate,
    imageMiB,
    image: v.image === undefined ? null : resolve(v.image),
    transports,
    timeoutS,
    transportTimeoutS: tt,
    out: resolve(v.out ?? join(REPO, 'results', `testbed-${stamp()}`)),
    work: resolve(v.work),
    keep: v.keep,
    stopGraceS,
    intervalMs,
    opts,
    prefix: v.prefix
  }
}

const T_START = Date.now()
function log (msg: string): void {
  process.stderr.write(`[${((Date.now() - T_START) / 1000).toFixed(1).padStart(7)}s] ${msg}\n`)
}

function haveTool (name: string): boolean {
  try { runSync('sh', ['-c', `command -v ${name}`]); return true } catch { return false }
}

interface RunState {
  o: Options
  work: string
  image: PreparedImage
  tar: string | null
  globalDeadline: number
}

/** Runs one transport on a testbed and returns its row (never throws for transport failures). */
async function runTransport (st: RunState, tb: Testbed, t: Transport): Promise<TransportRow> {
  const { o, image } = st
  const n = tb.clients.length
  const tMinS = tMin({ imageBytes: image.bytes, clients: n, uS: o.rate.bps, dMin: o.rate.bps, sumU: n * o.rate.bps })
  const row: TransportRow = {
    n, transport: t.name, status: 'failed', reason: '', clients: [], finished: 0, verified: 0,
    tS: null, tRecvS: null, meanS: null, tMinS, ratio: null, ratioRecv: null, setupS: 0,
    imageBytes: image.bytes, tarBytes: t.needsTar ? image.tarBytes : null, serverUpF: null, clientDownF: null,
    cpuServerS: null, cpuClientsS: null, busy: null, qdiscDrops: null, udpRcvbufErrors: null, notes: [], series: null, rate: o.rateText, rateBps: o.rate.bps
  }
  const missing = t.tools.filter(x => !haveTool(x))
  if (missing.length > 0) {
    row.status = 'skipped'
    row.reason = `not installed: ${missing.join(', ')}`
    return row
  }
  const budgetS = o.transportTimeoutS ?? Math.max(120, Math.ceil(1.5 * (n + 2) * tMinS + 60))
  const deadline = Math.min(st.globalDeadline - 10_000, Date.now() + budgetS * 1000)
  const dir = join(st.work, `N${n}`, t.name)
  const targets = tb.clients.map(h => join(dir, h.name, 'tree'))
  const scratch = tb.clients.map(h => join(dir, h.name, 'scratch'))
  for (const d of [...targets, ...scratch]) mkdirSync(d, { recursive: true })
  const cgServer = CpuGroup.create(`${o.prefix}n${n}-${t.name}-server`)
  const cgClients = CpuGroup.create(`${o.prefix}n${n}-${t.name}-clients`)
  const procs = new Set<Proc>()
  const spawn = (req: SpawnRequest): Proc => {
    const cg = req.role === 'server' ? cgServer : cgClients
    const p = spawnProc({ name: req.name, ns: req.host === null ? null : req.host.ns, cmd: req.cmd, args: req.args, log: join(dir, 'logs', `${req.name}.log`), cgroup: cg?.path ?? null, cwd: req.cwd, env: req.env === undefined ? undefined : { ...process.env, ...req.env } })
    procs.add(p)
    return p
  }
  const stopMine = async (): Promise<void> => { await stopAll([...procs].filter(p => p.exit === null), o.stopGraceS * 1000) }
  const samplesFile = join(dir, 'samples.jsonl')
  const sampler = spawnProc({
    name: 'sampler',
    ns: tb.switchNs,
    cmd: process.execPath,
    args: ['--no-warnings', join(HERE, 'sampler.ts'), String(o.intervalMs), String(Math.max(1000, deadline - Date.now() + 15_000))],
    log: samplesFile
  })
  const ctx: TransportContext = {
    tb, image, tar: t.needsTar ? st.tar : null, dir, targets, scratch, deadline,
    options: o.opts[t.name] ?? {},
    log: (msg: string) => log(`N=${n} ${t.name}: ${msg}`),
    spawn,
    stopAll: stopMine
  }
  const dropsBefore = readDrops(tb)
  log(`N=${n} ${t.name}: start (T_min ${tMinS.toFixed(2)} s, budget ${budgetS} s)`)
  let result: TransportResult | null = null
  let guard: NodeJS.Timeout | undefined
  try {
    // a transport must return by its deadline; 15 s later it is abandoned (and stopped below)
    const late = new Promise<never>((_resolve, reject) => {
      guard = setTimeout(() => reject(new Error('did not return by its deadline')), Math.max(0, deadline - Date.now()) + 15_000)
    })
    result = await Promise.race([t.run(ctx), late])
  } catch (err) {
    row.status = err instanceof TransportUnavailable ? 'skipped' : 'failed'
    row.reason = (err as Error).message
    log(`N=${n} ${t.name}: ${row.status}: ${row.reason}`)
  } finally {
    clearTimeout(guard)
    await stopMine()
    await new Promise(resolve => setTimeout(resolve, 2 * o.intervalMs))
    await stopProc(sampler)
    const dropsAfter = readDrops(tb)
    row.qdiscDrops = dropsAfter.qdiscDrops - dropsBefore.qdiscDrops
    row.udpRcvbufErrors = dropsAfter.udpRcvbufErrors - dropsBefore.udpRcvbufErrors
    for (const h of tb.hosts) {
      const left = sweepNamespace(h.ns)
      if (left.length > 0) row.notes.push(`${left.length} leftover process(es) in ${h.name} stopped by pid`)
    }
  }
  if (result !== null) {
    const t0 = result.t0
    row.setupS = result.setupMs / 1000
    row.notes.push(...result.notes)
    let series: RateSeries | null = null
    try { series = parseSamples(readFileSync(samplesFile, 'utf8'), t0) } catch { /* no samples */ }
    row.series = series
    log(`N=${n} ${t.name}: verifying ${n} copies`)
    const clientRows: ClientRow[] = []
    for (let i = 0; i < n; i++) {
      const c = result.clients[i]
      const cr: ClientRow = {
        host: tb.clients[i].name,
        receivedS: c?.receivedAt != null ? (c.receivedAt - t0) / 1000 : null,
        finishedS: c?.finishedAt != null ? (c.finishedAt - t0) / 1000 : null,
        verified: false,
        mismatches: 0,
        downBytes: series?.downBytes.get(tb.clients[i].name) ?? null,
        upBytes: series?.upBytes.get(tb.clients[i].name) ?? null,
        error: c?.error ?? null
      }
      if (cr.finishedS !== null) {
        const v = await verifyCopy(image.dir, targets[i])
        cr.verified = v.ok
        cr.mismatches = v.mismatches
        if (!v.ok) {
          cr.error = v.error ?? `${v.mismatches} differences, e.g. ${v.sample.join(' | ')}`
          writeFileSync(join(dir, `verify-${cr.host}.txt`), v.sample.join('\n') + '\n')
        }
      }
      clientRows.push(cr)
    }
    row.clients = clientRows
    row.finished = clientRows.filter(c => c.finishedS !== null).length
    row.verified = clientRows.filter(c => c.verified).length
    const fin = clientRows.map(c => c.finishedS)
    const rec = clientRows.map(c => c.receivedS)
    if (fin.every(x => x !== null)) {
      row.tS = Math.max(...(fin as number[]))
      row.meanS = (fin as number[]).reduce((a, b) => a + b, 0) / n
      row.ratio = row.tS / tMinS
    }
    if (rec.every(x => x !== null)) {
      row.tRecvS = Math.max(...(rec as number[]))
      row.ratioRecv = row.tRecvS / tMinS
    }
    if (series !== null) {
      const up = series.upBytes.get(tb.server.name)
      row.serverUpF = up === undefined ? null : up / image.bytes
      const downs = tb.clients.map(h => series.downBytes.get(h.name)).filter((x): x is number => x !== undefined)
      row.clientDownF = downs.length === 0 ? null : downs.reduce((a, b) => a + b, 0) / downs.length / image.bytes
      if (row.tS !== null) row.busy = busyFraction(series, 0, row.tS)
    }
    if (row.finished < n) {
      row.status = 'incomplete'
      row.reason = `${n - row.finished} client(s) did not finish: ${[...new Set(clientRows.filter(c => c.finishedS === null).map(c => c.error ?? '?'))].slice(0, 3).join('; ')}`
    } else if (row.verified < n) {
      row.status = 'failed'
      row.reason = `${n - row.verified} copy(ies) differ from the image`
    } else {
      row.status = 'ok'
    }
  }
  if (cgServer !== null) { const c = cgServer.times(); row.cpuServerS = c.userS + c.sysS }
  if (cgClients !== null) { const c = cgClients.times(); row.cpuClientsS = c.userS + c.sysS }
  cgServer?.remove()
  cgClients?.remove()
  if (!o.keep) for (const h of tb.clients) rmSync(join(dir, h.name), { recursive: true, force: true })
  log(`N=${n} ${t.name}: ${row.status}${row.reason !== '' ? ` (${row.reason})` : ''}; T ${fmt(row.tS)} s = ${fmt(row.ratio)} T_min; verified ${row.verified}/${n}`)
  return row
}

function writeOutputs (o: Options, image: PreparedImage, rows: TransportRow[], argv: string[]): void {
  mkdirSync(o.out, { recursive: true })
  writeFileSync(join(o.out, 'summary.csv'), summaryCsv(rows))
  writeFileSync(join(o.out, 'clients.csv'), clientsCsv(rows))
  writeFileSync(join(o.out, 'rates.csv'), ratesCsv(rows))
  const charts: string[] = []
  const put = (name: string, svg: string | null): void => {
    if (svg === null) return
    writeFileSync(join(o.out, name), svg)
    charts.push(name)
  }
  for (const n of [...new Set(rows.map(r => r.n))]) {
    const rs = rows.filter(r => r.n === n)
    for (const r of rs) put(`rate-N${n}-${r.transport}.svg`, perClientChart(r))
    put(`aggregate-N${n}.svg`, aggregateChart(rs))
  }
  put('deploy-vs-n.svg', deployVsNChart(rows))
  const meta = {
    date: new Date().toISOString(),
    command: `node simulations/testbed/run.ts ${argv.join(' ')}`,
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '?', kernel: safe(() => runSync('uname', ['-r']).trim()) },
    rate: o.rateText,
    image: { source: image.source, sliceMiB: o.imageMiB, bytes: image.bytes, files: image.files, dirs: image.dirs, symlinks: image.symlinks, entries: image.entries, tarBytes: image.tar === null ? null : image.tarBytes }
  }
  writeFileSync(join(o.out, 'results.json'), JSON.stringify({ ...meta, rows: rows.map(r => ({ ...r, series: undefined })) }, null, 2) + '\n')
  const md = [
    `# imgmesh testbed, ${meta.date}`,
    '',
    `Command: \`${meta.command}\``,
    '',
    `Machine: ${meta.machine.cpus} × ${meta.machine.cpuModel}, kernel ${meta.machine.kernel}. Links: ${o.rateText} each way (htb).`,
    `Image: ${image.source}, ${o.imageMiB > 0 ? `${o.imageMiB} MiB slice` : 'whole tree'}: F = ${image.bytes} bytes (${(image.bytes / 1048576).toFixed(1)} MiB) in ${image.files} files, ${image.dirs} directories, ${image.symlinks} symlinks${image.tar !== null ? `; tar ${image.tarBytes} bytes` : ''}.`,
    '',
    'T = last client finished (files on disk); recv = last client had the data (tar transports: before unpacking).',
    'h0 up/F and down/F: layer-2 bytes from the switch counters over the image size.',
    'drops: packets dropped by the htb shapers plus UDP receive-buffer overflows during the run.',
    '',
    '```',
    table(rows),
    '```',
    '',
    ...rows.filter(r => r.reason !== '' || r.notes.length > 0).map(r => `- N=${r.n} ${r.transport}: ${[r.reason, ...r.notes].filter(s => s !== '').join('; ')}`),
    '',
    ...charts.map(c => `![${c}](${c})`),
    ''
  ].join('\n')
  writeFileSync(join(o.out, 'summary.md'), md)
}

function safe (fn: () => string): string {
  try { return fn() } catch { return '?' }
}

async function main (): Promise<void> {
  const argv = process.argv.slice(2)
  const o = parseOptions(argv)
  requireRoot('the testbed')
  installCleanupHandlers()
  const globalDeadline = Date.now() + o.timeoutS * 1000
  const timer = setTimeout(() => {
    log(`global timeout of ${o.timeoutS} s reached; stopping everything`)
    cleanupNow('global timeout')
    process.exit(124)
  }, o.timeoutS * 1000)
  for (const tool of ['ip', 'tc', 'rsync', 'tar', 'ss']) if (!haveTool(tool)) fail(`${tool} is not installed`)
  const work = join(o.work, o.prefix.replace(/-+$/, ''))
  if (existsSync(work)) fail(`${work} exists already`)
  mkdirSync(work, { recursive: true })
  onCleanup(`work dir ${work}`, () => { if (!o.keep) rmSync(work, { recursive: true, force: true }) })
  log(`prefix ${o.prefix}, work ${work}, results ${o.out}`)
  log(`preparing the image (${o.image ?? 'cached Debian root /usr'}, ${o.imageMiB > 0 ? `${o.imageMiB} MiB` : 'all'})`)
  const image = await prepareImage({ source: o.image, sliceMiB: o.imageMiB, dest: join(work, 'image') })
  log(`image: ${image.bytes} bytes in ${image.files} files, ${image.dirs} dirs, ${image.symlinks} symlinks`)
  let tar: string | null = null
  if (o.transports.some(t => t.needsTar)) {
    tar = ensureTar(image, join(work, 'image.tar'))
    log(`image.tar: ${image.tarBytes} bytes (made in ${image.tarMs} ms, not counted)`)
  }
  const st: RunState = { o, work, image, tar, globalDeadline }
  const rows: TransportRow[] = []
  for (const n of o.clients) {
    const t = Date.now()
    const tb = createTestbed(o.prefix, n, o.rate)
    log(`N=${n}: ${tb.hosts.length} host namespaces + switch up in ${Date.now() - t} ms, isolation checked`)
    try {
      for (const tr of o.transports) {
        rows.push(await runTransport(st, tb, tr))
        writeOutputs(o, image, rows, argv)
      }
    } finally {
      destroyTestbed(tb)
      const left = listNamespaces(o.prefix)
      if (left.length > 0) log(`warning: namespaces left: ${left.join(' ')}`)
    }
  }
  clearTimeout(timer)
  writeOutputs(o, image, rows, argv)
  process.stdout.write('\n' + table(rows) + '\n\n')
  for (const r of rows) {
    if (r.reason !== '' || r.notes.length > 0) process.stdout.write(`N=${r.n} ${r.transport}: ${[r.reason, ...r.notes].filter(s => s !== '').join('; ')}\n`)
  }
  process.stdout.write(`\nresults: ${o.out}\n`)
  cleanupNow('done')
  const bad = rows.filter(r => r.status === 'failed' || r.status === 'incomplete')
  process.exitCode = bad.length > 0 ? 1 : 0
}

main().catch(err => {
  process.stderr.write(`testbed: ${(err as Error).stack ?? String(err)}\n`)
  cleanupNow('error')
  process.exit(1)
})
