/**
 * The interface every transport implements (rsync, multicast, bittorrent, and imgmesh later).
 *
 * The framework (run.ts) builds the namespaces, prepares the image (and its tar when
 * `needsTar`), creates one empty target directory per client, starts the byte-counter sampler,
 * then calls `run(ctx)`. A transport:
 *   1. starts its servers on h0 (ctx.tb.server) with ctx.spawn(..., 'server') — setup, not timed;
 *   2. sets t0 = Date.now() and starts every client at once with ctx.spawn(..., 'client');
 *   3. records, per client, when the data had arrived (receivedAt: for tar transports, the tar
 *      complete on disk) and when the files were on disk in ctx.targets[i] (finishedAt);
 *   4. stops everything it started by pid (ctx.stopAll), also when ctx.deadline passes — then
 *      unfinished clients keep finishedAt = null — and returns.
 * The framework then stops any process the transport left running, verifies each target with
 * rsync -naHAXc against the image, and computes the metrics. A transport may throw
 * TransportUnavailable to be reported as skipped.
 */
import type { Host, Proc, Testbed } from '../netns.ts'
import type { PreparedImage } from '../image.ts'

export interface ClientOutcome {
  host: string
  /** Date.now() when the data had arrived (tar on disk / download done); null if never */
  receivedAt: number | null
  /** Date.now() when the tree was on disk in the target; null if never */
  finishedAt: number | null
  error?: string
}

export interface TransportResult {
  /** Date.now() when the clients were started (all at once) */
  t0: number
  /** one per ctx.tb.clients, same order */
  clients: ClientOutcome[]
  /** server setup time before t0, ms (daemon start, torrent creation...) */
  setupMs: number
  /** free-form remarks printed with the results (options used, caveats) */
  notes: string[]
}

export type Role = 'server' | 'client'

export interface SpawnRequest {
  name: string
  host: Host | null
  cmd: string
  args: string[]
  role: Role
  cwd?: string
  /** extra environment variables (added to the testbed's own) */
  env?: Record<string, string>
}

export interface TransportContext {
  tb: Testbed
  image: PreparedImage
  /** tar of the image (only when the transport declares needsTar) */
  tar: string | null
  /** scratch directory of this transport (configs, logs, per-client downloads) */
  dir: string
  /** targets[i]: the directory client i must fill with the image tree (exists, empty) */
  targets: string[]
  /** scratch[i]: a per-client scratch directory (exists, empty) for downloads */
  scratch: string[]
  /** Date.now() by which the transport must have returned */
  deadline: number
  /** options given with --opt transport.key=value */
  options: Record<string, string>
  log: (msg: string) => void
  /** starts a process in a host's namespace (or the root namespace when host is null), logged and CPU-accounted by role */
  spawn: (req: SpawnRequest) => Proc
  /** stops, by pid, every process this transport started that is still running */
  stopAll: () => Promise<void>
}

export interface Transport {
  name: string
  /** whether the framework must make image.tar first */
  needsTar: boolean
  /** commands that must be installed (checked before the run; missing ones skip the transport) */
  tools: string[]
  /** one line for the README and the table */
  description: string
  run: (ctx: TransportContext) => Promise<TransportResult>
}

/** Thrown by a transport that cannot run here (missing tool, not implemented yet). */
export class TransportUnavailable extends Error {
  override name = 'TransportUnavailable'
}
