/**
 * Network namespaces for the testbed, the processes started in them, and the cleanup that
 * removes both on any exit.
 *
 * Layout (every name starts with the run's prefix, e.g. `imt1234-`):
 *   <prefix>sw      the "switch": bridge br0 and the switch-side veth ends v0..vN
 *   <prefix>h0      the server (holds the image), eth0 = 10.77.0.1/16
 *   <prefix>h<i>    client i, eth0 = 10.77.0.(i+1)/16 (and on into 10.77.1.x past 254)
 * Each veth pair is created inside the switch namespace with its peer moved straight into the
 * host namespace, so no end ever lives in the root namespace. Addresses exist only inside host
 * namespaces, there is no default route anywhere, and the bridge has no address. Every link is
 * shaped with htb to RATE on both ends (host eth0 egress = upload, switch vI egress = download).
 * The kernel's neighbour tables, shared by all namespaces, are enlarged for the run and restored
 * after (raiseNeighbourTables).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'

// ---------------------------------------------------------------------------------------------
// Root, rates, small sync helpers

export function requireRoot (what: string): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`${what} needs root (network namespaces, veth, tc, cgroups); run it as root, e.g. sudo -E npm run testbed -- ...\n`)
    process.exit(2)
  }
}

export interface Rate {
  /** bits per second */
  bps: number
  /** the same rate spelled for tc, e.g. "50mbit" */
  tc: string
}

const RATE_UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 }

/** Parses "50mbit", "1gbit", "800kbit" (tc's decimal bit units; "mbps" would be bytes in tc, so it is refused). */
export function parseRate (text: string): Rate {
  const m = /^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$/i.exec(text.trim())
  if (m === null) throw new Error(`bad rate ${JSON.stringify(text)}: use e.g. 50mbit, 100mbit, 1gbit`)
  const bps = Number(m[1]) * RATE_UNITS[m[2].toLowerCase()]
  if (!(bps >= 1e5 && bps <= 1e11)) throw new Error(`rate ${text} out of range (100kbit..100gbit)`)
  return { bps, tc: `${Math.round(bps)}bit` }
}

/** Sleeps synchronously (only for cleanup paths, where the event loop may not run again). */
export function sleepSync (ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** Runs a command synchronously; throws with its stderr when it fails. */
export function run (cmd: string, args: string[], timeoutMs = 30_000): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 })
  } catch (err) {
    const e = err as { stderr?: string, message: string }
    throw new Error(`${cmd} ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`)
  }
}

/** `ip netns exec NS cmd args...`, synchronously. */
export function nsRun (ns: string, cmd: string, args: string[], timeoutMs = 30_000): string {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], timeoutMs)
}

// ---------------------------------------------------------------------------------------------
// Cleanup registry: runs once, on normal exit, error, SIGINT, SIGTERM, SIGHUP.

interface CleanupItem { name: string, fn: () => void }
const cleanupItems: CleanupItem[] = []
let cleanedUp = false
let handlersInstalled = false

/** Registers a synchronous cleanup step; steps run in reverse order, after every live process is stopped. */
export function onCleanup (name: string, fn: () => void): () => void {
  const item = { name, fn }
  cleanupItems.push(item)
  return () => {
    const i = cleanupItems.indexOf(item)
    if (i >= 0) cleanupItems.splice(i, 1)
  }
}

/** Stops every live process we started, then runs the cleanup steps (LIFO). Idempotent. */
export function cleanupNow (reason: string): void {
  if (cleanedUp) return
  cleanedUp = true
  if (reason !== 'exit') process.stderr.write(`testbed: cleaning up (${reason})\n`)
  killAllSync()
  while (cleanupItems.length > 0) {
    const item = cleanupItems.pop() as CleanupItem
    try { item.fn() } catch (err) { process.stderr.write(`testbed: cleanup ${item.name} failed: ${(err as Error).message}\n`) }
  }
}

/** Installs exit and signal handlers that run the cleanup. */
export function installCleanupHandlers (): void {
  if (handlersInstalled) return
  handlersInstalled = true
  process.on('exit', () => cleanupNow('exit'))
  const onSignal = (sig: NodeJS.Signals, code: number): void => {
    cleanupNow(sig)
    process.exit(code)
  }
  process.on('SIGINT', () => onSignal('SIGINT', 130))
  process.on('SIGTERM', () => onSignal('SIGTERM', 143))
  process.on('SIGHUP', () => onSignal('SIGHUP', 129))
  process.on('uncaughtException', err => {
    process.stderr.write(`testbed: ${err.stack ?? err.message}\n`)
    cleanupNow('uncaught exception')
    process.exit(1)
  })
  process.on('unhandledRejection', reason => {
    process.stderr.write(`testbed: unhandled rejection: ${String((reason as Error)?.stack ?? reason)}\n`)
    cleanupNow('unhandled rejection')
    process.exit(1)
  })
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
  /** Date.now() when the exit was seen */
  at: number
}

export interface Proc {
  name: string
  pid: number
  ns: string | null
  startedAt: number
  exited: Promise<ExitInfo>
  exit: ExitInfo | null
}

const liveProcs = new Set<Proc>()

export interface SpawnOptions {
  /** a short name, used for the log file and messages */
  name: string
  /** namespace to run in, or null for the root namespace (only for local file work like tar) */
  ns: string | null
  cmd: string
  args: string[]
  /** stdout and stderr are appended here */
  log: string
  /** cgroup directory (cpuacct) the process is placed in before it execs, for CPU accounting */
  cgroup?: string | null
  cwd?: string
  env?: NodeJS.ProcessEnv
}

/**
 * Starts a process, optionally inside a namespace and a cgroup. The pid is the command's own:
 * `ip netns exec` and the `sh -c 'echo $$ > cgroup.procs; exec "$@"'` wrapper both exec.
 */
export function spawnProc (opts: SpawnOptions): Proc {
  let argv = [opts.cmd, ...opts.args]
  if (opts.ns !== null) argv = ['ip', 'netns', 'exec', opts.ns, ...argv]
  // outside `ip netns exec`, which mounts a fresh /sys (hiding /sys/fs/cgroup) in the namespace
  if (opts.cgroup != null) argv = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', opts.cgroup, ...argv]
  mkdirSync(dirname(opts.log), { recursive: true })
  const fd = openSync(opts.log, 'a')
  let child
  try {
    child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', fd, fd], detached: true, cwd: opts.cwd, env: opts.env ?? process.env })
  } finally {
    closeSync(fd)
  }
  if (child.pid === undefined) throw new Error(`could not start ${opts.name}: ${argv.join(' ')}`)
  const proc: Proc = { name: opts.name, pid: child.pid, ns: opts.ns, startedAt: Date.now(), exit: null, exited: Promise.resolve({ code: null, signal: null, at: 0 }) }
  proc.exited = new Promise<ExitInfo>(resolve => {
    child.on('exit', (code, signal) => {
      proc.exit = { code, signal, at: Date.now() }
      liveProcs.delete(proc)
      resolve(proc.exit)
    })
    child.on('error', err => {
      proc.exit = { code: -1, signal: null, at: Date.now() }
      liveProcs.delete(proc)
      process.stderr.write(`testbed: ${opts.name}: ${err.message}\n`)
      resolve(proc.exit)
    })
  })
  liveProcs.add(proc)
  return proc
}

/** Waits for a process to exit, at most until `deadline` (Date.now() value); null on timeout. */
export async function waitExit (proc: Proc, deadline: number): Promise<ExitInfo | null> {
  if (proc.exit !== null) return proc.exit
  const ms = Math.max(0, deadline - Date.now())
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<null>(resolve => { timer = setTimeout(() => resolve(null), ms) })
  const r = await Promise.race([proc.exited, timeout])
  clearTimeout(timer)
  return r
}

function signalPid (pid: number, sig: NodeJS.Signals): void {
  try { process.kill(pid, sig) } catch { /* already gone */ }
}

/** Stops a process by its pid: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopProc (proc: Proc, graceMs = 2000): Promise<ExitInfo | null> {
  if (proc.exit !== null) return proc.exit
  signalPid(proc.pid, 'SIGTERM')
  const r = await waitExit(proc, Date.now() + graceMs)
  if (r !== null) return r
  signalPid(proc.pid, 'SIGKILL')
  return await waitExit(proc, Date.now() + 5000)
}

export async function stopAll (procs: Iterable<Proc>, graceMs = 2000): Promise<void> {
  await Promise.all([...procs].map(p => stopProc(p, graceMs)))
}

function pidGone (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state === 'Z' || state === 'X'
  } catch {
    return true
  }
}

/** Synchronous stop of every live process (for exit paths): SIGTERM, up to 1.5 s, SIGKILL. */
function killAllSync (): void {
  const procs = [...liveProcs]
  if (procs.length === 0) return
  for (const p of procs) signalPid(p.pid, 'SIGTERM')
  for (let i = 0; i < 30 && procs.some(p => !pidGone(p.pid)); i++) sleepSync(50)
  for (const p of procs) if (!pidGone(p.pid)) signalPid(p.pid, 'SIGKILL')
  for (let i = 0; i < 40 && procs.some(p => !pidGone(p.pid)); i++) sleepSync(50)
  liveProcs.clear()
}

/** Processes still live that this run started. */
export function liveProcesses (): Proc[] {
  return [...liveProcs]
}

// ---------------------------------------------------------------------------------------------
// Namespaces

export interface Host {
  index: number
  /** "h0", "h1", ... */
  name: string
  /** namespace name, prefix + name */
  ns: string
  addr: string
  /** interface inside the host namespace */
  ifname: string
  /** the switch-side end of the host's veth, in the switch namespace */
  swIf: string
}

export interface Testbed {
  prefix: string
  switchNs: string
  bridge: string
  rate: Rate
  prefixLen: number
  hosts: Host[]
  server: Host
  clients: Host[]
}

const SUBNET = [10, 77]

export function hostAddr (index: number): string {
  const n = index + 1
  if (n > 65_000) throw new Error('too many hosts')
  return `${SUBNET[0]}.${SUBNET[1]}.${n >> 8}.${n & 255}`
}

/** Namespaces whose name starts with `prefix`. */
export function listNamespaces (prefix: string): string[] {
  const out = run('ip', ['netns', 'list'])
  return out.split('\n').map(l => l.trim().split(/\s+/)[0]).filter(n => n !== undefined && n.startsWith(prefix))
}

function shape (ns: string, dev: string, rate: Rate): void {
  const quantum = Math.max(1514, Math.min(200_000, Math.round(rate.bps / 8 / 10)))
  run('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '1'])
  run('tc', ['-n', ns, 'class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', rate.tc, 'ceil', rate.tc, 'quantum', String(quantum)])
}

/**
 * Stops (SIGKILL, by pid) anything still running inside one of our own namespaces, e.g. a
 * daemon's forked child that outlived it. Returns the pids it found.
 */
export function sweepNamespace (ns: string): number[] {
  let pids: number[] = []
  try { pids = run('ip', ['netns', 'pids', ns]).split(/\s+/).filter(s => s !== '').map(Number) } catch { return [] }
  for (const pid of pids) signalPid(pid, 'SIGKILL')
  for (let i = 0; i < 40 && pids.some(p => !pidGone(p)); i++) sleepSync(50)
  return pids
}

function deleteNamespace (ns: string): void {
  if (!existsSync(`/run/netns/${ns}`)) return
  // anything still running in it was started by this run: stop it by pid, then remove it
  sweepNamespace(ns)
  try { run('ip', ['netns', 'del', ns]) } catch (err) { process.stderr.write(`testbed: ${(err as Error).message}\n`) }
}

/**
 * The kernel's neighbour (ARP, NDP) tables are shared by every network namespace, and by default
 * hold at most 1,024 entries (gc_thresh3): with every host talking to every other, 32 hosts fill
 * it, and a 33rd host can resolve no address ("neighbor table overflow", its SYNs fail with
 * ENOBUFS and are never sent). Raised for the run so that each of `hosts` can hold an entry for
 * every other, and restored at cleanup. Never lowered.
 */
function raiseNeighbourTables (hosts: number): void {
  const need = hosts * hosts
  for (const family of ['ipv4', 'ipv6']) {
    const want: Record<string, number> = { gc_thresh1: need, gc_thresh2: need + 512, gc_thresh3: need + 1024 }
    for (const [name, value] of Object.entries(want)) {
      const file = `/proc/sys/net/${family}/neigh/default/${name}`
      if (!existsSync(file)) continue
      const before = Number(readFileSync(file, 'utf8').trim())
      if (!(before < value)) continue
      writeFileSync(file, `${value}\n`)
      onCleanup(`${family} neighbour ${name}`, () => { writeFileSync(file, `${before}\n`) })
    }
  }
}

/**
 * Creates the switch namespace and N+1 host namespaces, links and shapes them, checks isolation,
 * and registers their removal with the cleanup registry.
 */
export function createTestbed (prefix: string, clients: number, rate: Rate): Testbed {
  if (!/^[a-z0-9-]{1,32}$/.test(prefix)) throw new Error(`bad namespace prefix ${prefix}`)
  if (!(clients >= 1 && clients <= 250)) throw new Error('clients must be 1..250')
  const existing = listNamespaces(prefix)
  if (existing.length > 0) throw new Error(`namespaces with prefix ${prefix} already exist: ${existing.join(' ')}`)
  const switchNs = `${prefix}sw`
  raiseNeighbourTables(clients + 1)
  const hosts: Host[] = []
  for (let i = 0; i <= clients; i++) {
    hosts.push({ index: i, name: `h${i}`, ns: `${prefix}h${i}`, addr: hostAddr(i), ifname: 'eth0', swIf: `v${i}` })
  }
  const tb: Testbed = { prefix, switchNs, bridge: 'br0', rate, prefixLen: 16, hosts, server: hosts[0], clients: hosts.slice(1) }
  const created: string[] = []
  onCleanup(`namespaces ${prefix}*`, () => destroyNamespaces(created))
  run('ip', ['netns', 'add', switchNs])
  created.push(switchNs)
  run('ip', ['-n', switchNs, 'link', 'set', 'lo', 'up'])
  run('ip', ['-n', switchNs, 'link', 'add', tb.bridge, 'type', 'bridge'])
  run('ip', ['-n', switchNs, 'link', 'set', tb.bridge, 'up'])
  for (const h of hosts) {
    run('ip', ['netns', 'add', h.ns])
    created.push(h.ns)
    run('ip', ['-n', h.ns, 'link', 'set', 'lo', 'up'])
    run('ip', ['-n', switchNs, 'link', 'add', h.swIf, 'type', 'veth', 'peer', 'name', h.ifname, 'netns', h.ns])
    run('ip', ['-n', switchNs, 'link', 'set', h.swIf, 'master', tb.bridge])
    run('ip', ['-n', switchNs, 'link', 'set', h.swIf, 'up'])
    run('ip', ['-n', h.ns, 'addr', 'add', `${h.addr}/${tb.prefixLen}`, 'broadcast', '+', 'dev', h.ifname])
    run('ip', ['-n', h.ns, 'link', 'set', h.ifname, 'up'])
    shape(h.ns, h.ifname, rate)
    shape(switchNs, h.swIf, rate)
  }
  checkIsolation(tb)
  return tb
}

/** Throws unless every host namespace lacks a default route and the switch has no address. */
export function checkIsolation (tb: Testbed): void {
  for (const h of tb.hosts) {
    const routes = run('ip', ['-n', h.ns, 'route', 'show', 'default']).trim()
    if (routes !== '') throw new Error(`isolation: ${h.ns} has a default route: ${routes}`)
    const routes6 = run('ip', ['-n', h.ns, '-6', 'route', 'show', 'default']).trim()
    if (routes6 !== '') throw new Error(`isolation: ${h.ns} has an IPv6 default route: ${routes6}`)
  }
  const swAddrs = run('ip', ['-n', tb.switchNs, '-4', '-o', 'addr', 'show']).split('\n').filter(l => l.trim() !== '' && !/ lo /.test(l))
  if (swAddrs.length > 0) throw new Error(`isolation: the switch namespace has addresses: ${swAddrs.join('; ')}`)
  const swRoutes = run('ip', ['-n', tb.switchNs, 'route', 'show']).trim()
  if (swRoutes !== '') throw new Error(`isolation: the switch namespace has routes: ${swRoutes}`)
}

function destroyNamespaces (names: string[]): void {
  // hosts first, the switch last
  for (const ns of [...names].reverse()) deleteNamespace(ns)
  names.length = 0
}

/** Removes a testbed's namespaces now (also done by the cleanup registry on exit). */
export function destroyTestbed (tb: Testbed): void {
  const names = [tb.switchNs, ...tb.hosts.map(h => h.ns)]
  for (const ns of names.reverse()) deleteNamespace(ns)
}

export interface DropCounters {
  /** packets dropped by the htb qdiscs (both ends of every link) */
  qdiscDrops: number
  /** UDP datagrams dropped because a receiving socket's buffer was full (all hosts) */
  udpRcvbufErrors: number
}

function sumQdiscDrops (text: string): number {
  let n = 0
  // one "qdisc htb 1: root ..." header per device, followed by " Sent ... (dropped N, ...)"
  const re = /qdisc htb 1: root[^\n]*\n\s*Sent \d+ bytes \d+ pkt \(dropped (\d+)/g
  for (let m = re.exec(text); m !== null; m = re.exec(text)) n += Number(m[1])
  return n
}

/** Cumulative drop counters of the whole testbed (diff two readings to get one run's). */
export function readDrops (tb: Testbed): DropCounters {
  let qdiscDrops = 0
  let udpRcvbufErrors = 0
  try { qdiscDrops += sumQdiscDrops(run('tc', ['-n', tb.switchNs, '-s', 'qdisc', 'show'])) } catch { /* ignore */ }
  for (const h of tb.hosts) {
    try {
      const out = nsRun(h.ns, 'sh', ['-c', 'tc -s qdisc show; cat /proc/net/snmp'])
      qdiscDrops += sumQdiscDrops(out)
      const lines = out.split('\n').filter(l => l.startsWith('Udp:'))
      if (lines.length >= 2) {
        const keys = lines[0].split(/\s+/)
        const vals = lines[1].split(/\s+/)
        const i = keys.indexOf('RcvbufErrors')
        if (i > 0) udpRcvbufErrors += Number(vals[i])
      }
    } catch { /* ignore */ }
  }
  return { qdiscDrops, udpRcvbufErrors }
}

/** A command's result, run inside a host namespace (for short probes). */
export function nsProbe (ns: string, cmd: string, args: string[], timeoutMs = 5000): { ok: boolean, out: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', timeout: timeoutMs })
  return { ok: r.status === 0, out: (r.stdout ?? '') + (r.stderr ?? '') }
}
