/**
 * Discrete-event simulation of one image deployment: an origin (node 0, the only holder, super-
 * seeding) and N clients that all start fetching at once. Each client runs the agent's real
 * PieceScheduler and the origin the real SuperSeed (node/fetch/); what the simulator models is
 * what node/exchange/ does around them (version-fetcher.ts, block-exchange.ts):
 *
 *   client (VersionFetcher)                      server (BlockExchange.serve, one per requesting peer)
 *   - asks every neighbour HAVE at start         - answers with its bitmap (origin: its super-seed offer),
 *   - HAVE answer/update → setPeer/peerHas,        then watches: every HAVE_UPDATE_MS, the pieces it got
 *     then next(peer) → WANT                       since the last update (origin: the offer's growth),
 *                                                  held back while the watcher can ask it for enough
 *                                                  (have-pacing.ts; not the origin's)
 *   - each block → received(), CANCEL the        - queues WANTs FIFO per requesting peer; a worker takes
 *     endgame losers, next() for that peer and     up to FRAME_BYTES of them (super-seed check on the way,
 *     for the losers                               DONT_HAVE for refused ones) and sends them as BLOCK
 *   - DONT_HAVE → failed(peer, i, true), next()    messages; a message is usable only once all of it
 *     for every peer                               arrived; the origin's offer grows when a message went
 *   - a 500 ms tick: 20 s request timeouts,        out (and is told to that peer at once)
 *     next() for every peer
 *
 * Time advances event by event; transfers share bandwidth max-min fairly (bandwidth.ts), the
 * rates recomputed every `stepMs` for all active transfers; between recomputations a transfer
 * that starts takes what its two links have left, one that ends leaves its share unused.
 */
import { Bitfield } from '../../node/fetch/bitfield.ts'
import { PieceScheduler } from '../../node/fetch/piece-scheduler.ts'
import { SuperSeed } from '../../node/fetch/super-seed.ts'
import { PeerRates, DEFAULT_MAX_IN_FLIGHT } from '../../node/fetch/peer-rates.ts'
import { HAVE_PACING, haveDue, type HavePacing } from '../../node/fetch/have-pacing.ts'
import { DEFAULT_PEERS } from '../../node/swarm/peer-keeper.ts'
import { Allocator } from './bandwidth.ts'
import { buildGraph, type Graph } from './graph.ts'
import { EventQueue } from './heap.ts'
import { pieceSizes, wireSizes } from './pieces.ts'
import { rng, type Random } from './rng.ts'

export interface SimConfig {
  /** Clients (the origin is extra). */
  clients: number
  /** Link rates in bits/s: each client's upload and download, the origin's upload and download. */
  upBps: number
  downBps: number
  originUpBps?: number
  originDownBps?: number
  /** Image bytes (F); ignored when `pieces` is given. */
  imageBytes: number
  /** Piece sizes in bytes (default: generated from imageBytes and the seed, see pieces.ts). */
  pieces?: number[]
  seed: number
  /**
   * Neighbours per client when the swarm is larger than this (full mesh below). Default: the
   * connections an agent keeps (DEFAULT_PEERS, node/swarm/peer-keeper.ts).
   */
  neighbours?: number
  /** Clients connected to the origin in a large swarm (default = neighbours). */
  originNeighbours?: number
  /** Round-trip time between any two nodes, ms (default 0.5). */
  rttMs?: number
  /** Period of HAVE updates to watchers (block-exchange HAVE_UPDATE_MS, default 100)... */
  haveMs?: number
  /**
   * ...for up to this many watchers; beyond, the period grows with their number up to haveMaxMs
   * (a variant; default Infinity: a fixed period, as the agent; haveMaxMs default 500).
   */
  havePeers?: number
  haveMaxMs?: number
  /**
   * When a client's HAVE news to a watcher may wait (node/fetch/have-pacing.ts, as the agent's
   * block exchange; default HAVE_PACING); null sends every turn's news at once. The origin's
   * super-seeded offer is never paced.
   */
  havePacing?: Readonly<HavePacing> | null
  /** The fetcher's tick (default 500). */
  tickMs?: number
  /**
   * Requests in flight per peer follow its measured rate (PeerRates, as the agent's fetcher):
   * this many ms of it (default 600, the fetcher's inFlightTargetMs); 0 keeps maxInFlight for
   * every peer.
   */
  inFlightTargetMs?: number
  /** PeerRates min: fewest requests in flight per peer (default: the fetcher's). */
  inFlightMin?: number
  /** Scheduler options (default: the agent's maxInFlight, DEFAULT_MAX_IN_FLIGHT; endgame is the scheduler's default, 16 for a fetch of 512 pieces or more). */
  maxInFlight?: number
  endgamePieces?: number
  /** PieceScheduler endgameFanout (default: the scheduler's, 3). */
  endgameFanout?: number
  /**
   * Driver variant: at most this many requests in flight per client over all its peers (passed
   * as next()'s limit). Default: none, as the agent (only maxInFlight per peer).
   */
  maxInFlightTotal?: number
  /**
   * Server variant: at most this many BLOCK messages on the wire at once per node (the others'
   * streams wait their turn, round robin per message). Default: none, as the agent (every
   * requesting peer's stream is served at once and TCP shares the uplink among them).
   */
  uploadSlots?: number
  /** Variant: upload slots of the origin alone (default: uploadSlots). */
  originUploadSlots?: number
  /** SuperSeed pieces per peer (default 2, as the agent). */
  superSeedPerPeer?: number
  /**
   * When the origin tells SuperSeed a piece went out: 'sent' once its BLOCK message is written
   * (the agent), or 'queued' as soon as the worker takes it into a batch (a variant: no other
   * peer is allowed the piece meanwhile, and the offer grows a message earlier).
   */
  superSeedCommit?: 'sent' | 'queued'
  /** Make the origin's SuperSeed (default: the real one), to try a variant. */
  makeSuperSeed?: (pieces: number, perPeer: number) => SuperSeed
  /** Block data per BLOCK message, usable once all of it arrived (block-exchange MESSAGE_BYTES, default 64 KiB). */
  frameBytes?: number
  /** Payload share of link rate (TCP/IP, noise, yamux headers; default 0.95). */
  efficiency?: number
  /**
   * Blocks compressed on the wire (the agent's default, node/exchange/zblocks.ts): each piece
   * travels as this share of its bytes, drawn from these quantiles (wire-ratios.json, measured on
   * the testbed image) with the run's seed. Batches, messages, links and the origin's upload
   * count wire bytes; requests per peer follow its rate in block bytes, as the fetcher's
   * PeerRates does; T_min and duplicates count block bytes. Default: none, every piece plain.
   */
  wireShares?: readonly number[]
  /** Each piece's wire bytes, exactly (with `pieces`, e.g. the testbed image's; overrides wireShares). */
  wireBytes?: readonly number[]
  /** Request timeout (version-fetcher REQUEST_TIMEOUT_MS, default 20000). */
  requestTimeoutMs?: number
  /** Clients start at a uniform random time in [0, startJitterMs) (default 0: all at once). */
  startJitterMs?: number
  /**
   * A shared CPU (the testbed: every agent on one machine): this many cores for all nodes
   * together, and CPU-seconds per GB on the wire each byte costs its sender and receiver together
   * (noise, yamux, decompressing, hash, store, writing the files). When the flows would need more,
   * all slow down alike.
   * Default: no CPU limit (a real cluster, one machine per node).
   */
  cpuCores?: number
  cpuSecondsPerGB?: number
  /** Bandwidth recomputation period, ms (default T_min/500). */
  stepMs?: number
  /** Rounds of the max-min approximation (default 3). */
  allocRounds?: number
  /** Give up after this many simulated seconds (default 20·T_min + 60). */
  maxSimS?: number
  /** Called about every `progressEveryS` simulated seconds. */
  onProgress?: (p: { t: number, done: number, wallS: number, events: number, active: number }) => void
  progressEveryS?: number
  /**
   * Skip next(peer) calls that provably return nothing (default true; see "Skipped calls" in
   * README.md). Results are identical either way; false is slower and is what the test compares.
   */
  skipEmptyCalls?: boolean
  /** Make a scheduler (default: the real PieceScheduler): lets a variant be tried side by side. */
  makeScheduler?: (pieces: number, have: Bitfield, opts: { maxInFlight: number, endgamePieces: number | undefined, random: Random }) => PieceScheduler
}

export interface SimResult {
  clients: number
  neighbours: number
  originNeighbours: number
  pieces: number
  imageBytes: number
  meanPieceBytes: number
  tMinS: number
  /** Deployment time: the last client's finish (s); null if some client did not finish. */
  tS: number | null
  ratio: number | null
  /** Each client's finish time (s), NaN if unfinished; index 0 is client 1. */
  finishS: number[]
  finished: number
  meanS: number
  p50S: number
  p90S: number
  p99S: number
  firstS: number
  /** Origin upload in units of F. */
  originUpF: number
  /** Bytes clients received that they already had (endgame duplicates, late arrivals), per client, in F. */
  duplicateF: number
  /** Mean client upload in F. */
  clientUpF: number
  /** The origin's super-seed finished (every piece sent once) at this time, s. */
  superSeedDoneS: number | null
  /** Origin upload until then, in F (1 = no piece sent twice while super-seeding). */
  originSeedUpF: number
  /** Per `bucketS` of simulated time: the origin's upload rate, clients' mean download rate (bits/s, duplicates included), clients done, most transfers active at once. */
  timeline: Array<{ t: number, originUpBps: number, clientDownBps: number, done: number, active: number }>
  bucketS: number
  dontHave: number
  timeouts: number
  cancels: number
  /** HAVE updates the clients sent to watchers, per client (the origin's not counted). */
  havesPerClient: number
  /** next() calls made, and skipped because they provably return nothing. */
  nextCalls: number
  nextSkipped: number
  events: number
  steps: number
  wallS: number
  stepS: number
  /** Share of the bandwidth steps where the shared CPU, not the links, set the rates. */
  cpuLimitedShare: number
}

/** T_min = max(F/u_s, F/d_min, N·F/(u_s + Σu_i)) (Kumar & Ross 2006), seconds. */
export function tMinSeconds (imageBytes: number, clients: number, originUpBps: number, clientUpBps: number[], clientDownBps: number[]): number {
  const f = imageBytes * 8
  let sumU = 0
  let dMin = Number.POSITIVE_INFINITY
  for (const u of clientUpBps) sumU += u
  for (const d of clientDownBps) dMin = Math.min(dMin, d)
  return Math.max(f / originUpBps, f / dMin, (clients * f) / (originUpBps + sumU))
}

const EV = {
  START: 0,
  ASK: 1,
  ANSWER: 2,
  FLUSH: 3,
  DELIVER: 4,
  WANT: 5,
  FRAME_DONE: 6,
  BLOCKS: 7,
  OFFER: 8,
  DONT_HAVE: 9,
  CANCEL: 10,
  TICK: 11,
  STEP: 12,
  HAVE_ONE: 13
} as const

interface Ev {
  t: number
  seq: number
  kind: number
  /** node, or edge index (server side for server-bound messages, client side for client-bound) */
  a: number
  /** extra numbers (version of a transfer, log positions) */
  b: number
  c: number
  list: number[] | null
  have: Bitfield | null
  stream: Stream | null
}

/** One served stream: server → client, a FIFO of requested pieces and the batch on the wire. */
class Stream {
  readonly server: number
  readonly client: number
  /** Edge index at the server (server → client) and at the client (its peer id for the scheduler). */
  readonly edge: number
  readonly back: number
  q: number[] = []
  qt: number[] = []
  qh = 0
  /** Queue entries before this index were checked for timeouts already. */
  qto = 0
  cancelled: Set<number> | null = null
  /** The batch being sent: pieces, their request times (-1 once timed out), message ends. */
  batch: number[] = []
  batchT: number[] = []
  msgEnds: number[] = []
  msg = 0
  rem = 0
  rate = 0
  since = 0
  /** When the message on the wire started. */
  began = 0
  /**
   * HAVE updates wait behind the BLOCK message being sent on the same stream: the end of the
   * acquisition log to announce once it is out (-1: none), and whether the origin owes a flush.
   */
  haveUpto = -1
  originFlush = false
  active = false
  /** Waiting for an upload slot. */
  waiting = false
  slot = -1
  ver = 0

  constructor (server: number, client: number, edge: number, back: number) {
    this.server = server
    this.client = client
    this.edge = edge
    this.back = back
  }
}

/**
 * Two PieceScheduler settings the simulator needs to skip calls that cannot return anything:
 * the endgame threshold and the in-flight bound (read, in case the defaults change). Private in
 * TypeScript, plain fields at run time; if they ever change shape the shortcut turns itself off.
 */
interface SchedulerInternals { endgamePieces: number, maxInFlight: number }

function internals (s: PieceScheduler): SchedulerInternals | null {
  const x = s as unknown as Partial<SchedulerInternals>
  if (typeof x.endgamePieces !== 'number' || typeof x.maxInFlight !== 'number') return null
  return { endgamePieces: x.endgamePieces, maxInFlight: x.maxInFlight }
}

export function simulate (cfg: SimConfig): SimResult {
  return new Simulation(cfg).run()
}

class Simulation {
  private readonly cfg: SimConfig
  private readonly n: number
  private readonly sizes: number[]
  /** Bytes each piece takes on the wire (= sizes without compression). */
  private readonly wire: number[]
  private readonly pieces: number
  private readonly imageBytes: number
  private readonly g: Graph
  private readonly edgeId: string[]
  private readonly lat: number
  private readonly haveS: number
  private readonly tickS: number
  private readonly frameBytes: number
  private readonly timeoutS: number
  private readonly maxInFlight: number
  private readonly maxTotal: number
  private readonly slots: number
  private readonly originSlots: number
  /** Per node: messages on the wire, and streams waiting for a slot (FIFO, with a head index). */
  private readonly sending: Int32Array
  private readonly waitQ: Array<Stream[] | undefined>
  private readonly waitHead: Int32Array
  private readonly commitQueued: boolean
  private readonly endgamePieces: number | undefined
  private readonly tMin: number
  private readonly dt: number
  private readonly r: Random

  private readonly q = new EventQueue<Ev>()
  private readonly sched: Array<PieceScheduler | null>
  /** Per client: the fetcher's PeerRates (null when inFlightTargetMs is 0). */
  private readonly rates: Array<PeerRates | null>
  private readonly targetMs: number
  private readonly have: Bitfield[]
  private readonly started: Uint8Array
  private readonly done: Uint8Array
  private readonly finish: Float64Array
  private readonly acqLog: Array<Int32Array | null>
  private readonly acqCount: Int32Array
  private readonly flushed: Int32Array
  private readonly watchPos: Int32Array
  /** Per node: where each piece is in its acquisition log (pacing only). */
  private readonly acqPos: Array<Int32Array | null>
  /** Per server-side edge: pieces the watcher was told of and lacks (what it can ask for). */
  private readonly askable: Int32Array
  /** Per server-side edge: when its waiting news was first held back (s), or -1. */
  private readonly waitingSince: Float64Array
  /** Per node: server-side edges with news held back at its last delivery. */
  private readonly held: Int32Array
  private readonly pacing: Readonly<HavePacing> | null
  private readonly streams: Array<Stream | undefined>
  private readonly ss: SuperSeed
  private readonly originShown: Map<number, Bitfield> = new Map()
  private readonly originAll: Set<number> = new Set()
  private superSeedDone: number | null = null

  private readonly alloc: Allocator
  private readonly slackUp: Float64Array
  private readonly slackDown: Float64Array
  private act: Stream[] = []
  private fsrc = new Int32Array(1024)
  private fdst = new Int32Array(1024)
  private frate = new Float64Array(1024)
  private nextStep = 0
  private stepping = false

  private readonly upBytes: Float64Array
  private readonly inner: Array<SchedulerInternals | null>
  private readonly skipEmpty: boolean
  /** Per client-side edge: next(peer) must really be called next time (see pumpPeer). */
  private readonly dirty: Uint8Array
  /**
   * Per client: pieces certainly requested from some peer (set when next() picks them, cleared
   * when a request fails or a peer is replaced): a subset of the scheduler's own record, so a
   * piece not marked here may still be requested (then a call is made that returns nothing).
   */
  private readonly asked: Array<Uint8Array | null>
  /** Per client-side edge: a HAVE since the last call brought a piece neither held nor (certainly) requested. */
  private readonly freshNews: Uint8Array
  private nextCalls = 0
  private nextSkipped = 0
  private originSeedUp = 0
  private readonly bucket: number
  private readonly tlOrigin: number[] = []
  private readonly tlDown: number[] = []
  private readonly tlDone: number[] = []
  private readonly tlActive: number[] = []
  private duplicateBytes = 0
  private doneCount = 0
  private dontHave = 0
  private timeouts = 0
  private cancels = 0
  private haves = 0
  private steps = 0
  private cpuLimitedSteps = 0
  private now = 0

  constructor (cfg: SimConfig) {
    this.cfg = cfg
    this.n = cfg.clients + 1
    this.r = rng(cfg.seed, 1)
    this.sizes = cfg.pieces ?? pieceSizes({ imageBytes: cfg.imageBytes, seed: cfg.seed })
    this.pieces = this.sizes.length
    this.imageBytes = this.sizes.reduce((a, b) => a + b, 0)
    if (cfg.wireBytes !== undefined && cfg.wireBytes.length !== this.pieces) throw new Error('wireBytes needs one entry per piece')
    this.wire = cfg.wireBytes?.slice() ?? wireSizes(this.sizes, cfg.wireShares, cfg.seed)
    const k = cfg.neighbours ?? DEFAULT_PEERS
    this.g = buildGraph(cfg.clients, k, cfg.originNeighbours ?? k, rng(cfg.seed, 2))
    this.edgeId = Array.from({ length: this.g.adj.length }, (_, e) => String(e))
    this.lat = (cfg.rttMs ?? 0.5) / 2000
    this.haveS = (cfg.haveMs ?? 100) / 1000
    this.tickS = (cfg.tickMs ?? 500) / 1000
    this.frameBytes = cfg.frameBytes ?? 64 * 1024
    this.timeoutS = (cfg.requestTimeoutMs ?? 20_000) / 1000
    this.maxInFlight = cfg.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT
    this.maxTotal = cfg.maxInFlightTotal ?? Number.POSITIVE_INFINITY
    this.slots = cfg.uploadSlots ?? Number.POSITIVE_INFINITY
    this.originSlots = cfg.originUploadSlots ?? this.slots
    this.commitQueued = cfg.superSeedCommit === 'queued'
    this.endgamePieces = cfg.endgamePieces
    const originUp = cfg.originUpBps ?? cfg.upBps
    const originDown = cfg.originDownBps ?? cfg.downBps
    this.tMin = tMinSeconds(this.imageBytes, cfg.clients, originUp, new Array<number>(cfg.clients).fill(cfg.upBps), new Array<number>(cfg.clients).fill(cfg.downBps))
    this.dt = cfg.stepMs !== undefined ? cfg.stepMs / 1000 : this.tMin / 500
    this.bucket = this.tMin / 40

    const n = this.n
    this.sched = new Array<PieceScheduler | null>(n).fill(null)
    this.rates = new Array<PeerRates | null>(n).fill(null)
    this.targetMs = cfg.inFlightTargetMs ?? 600
    this.have = Array.from({ length: n }, (_, v) => v === 0 ? Bitfield.full(this.pieces) : new Bitfield(this.pieces))
    this.started = new Uint8Array(n)
    this.done = new Uint8Array(n)
    this.finish = new Float64Array(n).fill(Number.NaN)
    this.acqLog = new Array<Int32Array | null>(n).fill(null)
    this.acqCount = new Int32Array(n)
    this.flushed = new Int32Array(n)
    this.watchPos = new Int32Array(this.g.adj.length).fill(-1)
    this.pacing = cfg.havePacing === undefined ? HAVE_PACING : cfg.havePacing
    this.acqPos = new Array<Int32Array | null>(n).fill(null)
    this.askable = new Int32Array(this.g.adj.length)
    this.waitingSince = new Float64Array(this.g.adj.length).fill(-1)
    this.held = new Int32Array(n)
    this.streams = new Array<Stream | undefined>(this.g.adj.length)
    this.ss = cfg.makeSuperSeed?.(this.pieces, cfg.superSeedPerPeer ?? 2) ?? new SuperSeed(this.pieces, cfg.superSeedPerPeer ?? 2, undefined, { now: () => this.now * 1000 })
    this.upBytes = new Float64Array(n)
    this.sending = new Int32Array(n)
    this.waitQ = new Array<Stream[] | undefined>(n)
    this.waitHead = new Int32Array(n)
    this.inner = new Array<SchedulerInternals | null>(n).fill(null)
    this.asked = new Array<Uint8Array | null>(n).fill(null)
    this.skipEmpty = cfg.skipEmptyCalls ?? cfg.makeScheduler === undefined
    this.dirty = new Uint8Array(this.g.adj.length).fill(1)
    this.freshNews = new Uint8Array(this.g.adj.length)

    const eff = cfg.efficiency ?? 0.95
    const capUp = new Float64Array(n)
    const capDown = new Float64Array(n)
    for (let v = 0; v < n; v++) {
      capUp[v] = (v === 0 ? originUp : cfg.upBps) * eff / 8
      capDown[v] = (v === 0 ? originDown : cfg.downBps) * eff / 8
    }
    this.alloc = new Allocator(capUp, capDown, cfg.allocRounds ?? 3)
    this.slackUp = Float64Array.from(capUp)
    this.slackDown = Float64Array.from(capDown)
  }

  private ev (t: number, kind: number, a: number, b = 0, list: number[] | null = null, stream: Stream | null = null, have: Bitfield | null = null, c = 0): void {
    this.q.push({ t, seq: 0, kind, a, b, c, list, have, stream })
  }

  run (): SimResult {
    const wall0 = performance.now()
    const jitter = (this.cfg.startJitterMs ?? 0) / 1000
    for (let v = 1; v < this.n; v++) this.ev(jitter > 0 ? this.r() * jitter : 0, EV.START, v)
    // Every node's HAVE updates run on their own 100 ms clock, at a random phase.
    for (let v = 0; v < this.n; v++) this.ev(this.r() * this.havePeriod(v), EV.FLUSH, v)
    this.nextStep = this.dt
    this.ev(this.nextStep, EV.STEP, 0)
    this.stepping = true
    const maxT = this.cfg.maxSimS ?? 20 * this.tMin + 60
    const every = this.cfg.progressEveryS ?? Number.POSITIVE_INFINITY
    let nextReport = every
    let events = 0
    for (;;) {
      const e = this.q.pop()
      if (e === undefined) break
      if (e.t > maxT) break
      this.now = e.t
      events++
      if (e.t >= nextReport) {
        nextReport += every
        this.cfg.onProgress?.({ t: e.t, done: this.doneCount, wallS: (performance.now() - wall0) / 1000, events, active: this.act.length })
      }
      this.handle(e)
      if (this.doneCount === this.n - 1) break
    }
    return this.result(events, (performance.now() - wall0) / 1000)
  }

  private handle (e: Ev): void {
    const t = e.t
    switch (e.kind) {
      case EV.START: this.start(e.a, t); break
      case EV.ASK: this.onAsk(e.a, t); break
      case EV.ANSWER: this.onAnswer(e.a, e.have!); break
      case EV.FLUSH: this.onFlush(e.a, t); break
      case EV.DELIVER: this.onDeliver(e.a, e.b, t); break
      case EV.WANT: this.onWant(e.a, e.list!, t); break
      case EV.FRAME_DONE: if (e.stream!.ver === e.b) this.onFrameDone(e.stream!, t); break
      case EV.BLOCKS: this.onBlocks(e.a, e.list!, t); break
      case EV.OFFER: this.onOffer(e.a, e.list, e.have, t); break
      case EV.DONT_HAVE: this.onDontHave(e.a, e.list!, t); break
      case EV.CANCEL: this.onCancel(e.a, e.list!); break
      case EV.TICK: this.onTick(e.a, t); break
      case EV.STEP: this.onStep(t); break
      case EV.HAVE_ONE: this.onHaveOne(e.a, e.b, e.c); break
    }
  }

  // ------------------------------------------------------------------ client side (VersionFetcher)

  private start (u: number, t: number): void {
    const opts = { maxInFlight: this.maxInFlight, endgamePieces: this.endgamePieces, endgameFanout: this.cfg.endgameFanout, random: rng(this.cfg.seed, 1000 + u) }
    const s = this.cfg.makeScheduler?.(this.pieces, this.have[u], opts) ??
      new PieceScheduler(this.pieces, this.have[u], opts)
    this.sched[u] = s
    if (this.targetMs > 0) this.rates[u] = new PeerRates(this.imageBytes / this.pieces, { targetMs: this.targetMs, max: this.maxInFlight, ...(this.cfg.inFlightMin === undefined ? {} : { min: this.cfg.inFlightMin }) })
    this.inner[u] = this.skipEmpty ? internals(s) : null
    if (this.inner[u] !== null) this.asked[u] = new Uint8Array(this.pieces)
    this.started[u] = 1
    this.acqLog[u] = new Int32Array(this.pieces)
    this.acqPos[u] = new Int32Array(this.pieces).fill(-1)
    const { off, rev } = this.g
    for (let e = off[u]; e < off[u + 1]; e++) this.ev(t + this.lat, EV.ASK, rev[e])
    this.ev(t + this.tickS, EV.TICK, u)
  }

  /** A HAVE answer (bitmap snapshot, or all) reached client-side edge e. */
  private onAnswer (e: number, have: Bitfield): void {
    const u = this.g.adj[this.g.rev[e]]
    const s = this.sched[u]
    if (s === null) return
    this.setPeer(u, s, e, have)
    this.pumpPeer(u, s, e)
  }

  private setPeer (u: number, s: PieceScheduler, e: number, have: Bitfield): void {
    // Replacing a known peer returns its requests to the pool: any peer may have fresh pieces now.
    if (s.inFlight(this.edgeId[e]) > 0) { this.allDirty(u); this.asked[u]?.fill(0) }
    this.dirty[e] = 1
    s.setPeer(this.edgeId[e], have)
  }

  private allDirty (u: number): void {
    const { off } = this.g
    this.dirty.fill(1, off[u], off[u + 1])
  }

  /** HAVE update: pieces the server at the other end of client-side edge e got. */
  private peerGot (u: number, s: PieceScheduler, e: number, list: ArrayLike<number>, from: number, to: number): void {
    const id = this.edgeId[e]
    const asked = this.asked[u]
    if (asked === null) {
      for (let k = from; k < to; k++) s.peerHas(id, list[k])
      this.freshNews[e] = 1
      this.pumpPeer(u, s, e)
      return
    }
    // A piece the client holds already never matters to its scheduler again (next() skips held
    // pieces before looking at who has them or how rare they are), so its HAVE is not passed on.
    const have = s.have
    let news = this.freshNews[e] === 1
    for (let k = from; k < to; k++) {
      const i = list[k]
      if (have.has(i)) continue
      s.peerHas(id, i)
      if (asked[i] === 0) news = true
    }
    if (news) this.freshNews[e] = 1
    this.pumpPeer(u, s, e)
  }

  private pump (u: number, s: PieceScheduler): void {
    for (const id of s.peerIds()) this.pumpPeer(u, s, Number(id))
  }

  /**
   * next(peer) and a WANT with its picks. Skipped when it cannot pick anything: not in endgame,
   * and since the last call (which left no fresh piece of that peer unpicked) no HAVE brought a
   * fresh piece and no request went back to the pool (failed, peer replaced). With no fresh
   * piece and no endgame, next() returns [] without drawing a random number, so skipping it
   * changes nothing.
   */
  private pumpPeer (u: number, s: PieceScheduler, e: number): void {
    if (s.done) return
    const inner = this.inner[u]
    if (inner !== null && this.dirty[e] === 0 && this.freshNews[e] === 0 && s.missing > inner.endgamePieces) { this.nextSkipped++; return }
    const id = this.edgeId[e]
    let limit = Number.POSITIVE_INFINITY
    if (this.maxTotal !== Number.POSITIVE_INFINITY) {
      let total = 0
      for (const p of s.peerIds()) total += s.inFlight(p)
      limit = Math.max(0, this.maxTotal - total)
    }
    // The fetcher's pump: requests up to the peer's allowance, topped up only once half of it
    // is free (except for the last 64 pieces), so WANTs go out in batches.
    const rates = this.rates[u]
    const allowance = rates === null ? inner?.maxInFlight ?? this.maxInFlight : rates.allowance(id, this.now * 1000)
    const free = allowance - s.inFlight(id)
    if (rates !== null && (free <= 0 || (s.missing > 64 && allowance >= 4 && free < Math.floor(allowance / 2)))) return
    limit = Math.min(limit, free)
    const room = inner === null ? 0 : Math.min(limit, inner.maxInFlight - s.inFlight(id))
    const picks = s.next(id, limit)
    this.nextCalls++
    this.freshNews[e] = 0
    // Fewer picks than room: every fresh piece of this peer is requested now.
    this.dirty[e] = picks.length >= room ? 1 : 0
    if (picks.length === 0) return
    const asked = this.asked[u]
    if (asked !== null) for (const i of picks) asked[i] = 1
    this.ev(this.now + this.lat, EV.WANT, this.g.rev[e], 0, picks)
  }

  /** A BLOCK message from the server of client-side edge e (pieces in order). */
  private onBlocks (e: number, list: number[], t: number): void {
    const u = this.g.adj[this.g.rev[e]]
    for (let k = 0; k < list.length; k++) {
      const i = list[k]
      const s = this.sched[u]
      if (s === null || s.have.has(i)) { this.duplicateBytes += this.sizes[i]; continue }
      this.rates[u]?.delivered(this.edgeId[e], this.sizes[i], t * 1000)
      const others = s.received(this.edgeId[e], i)
      for (const o of others) { this.cancels++; this.ev(t + this.lat, EV.CANCEL, this.g.rev[Number(o)], 0, [i]) }
      const pos = this.acqCount[u]++
      this.acqLog[u]![pos] = i
      this.acqPos[u]![i] = pos
      if (s.done) { this.complete(u, t); continue }
      this.pumpPeer(u, s, e)
      for (const o of others) this.pumpPeer(u, s, Number(o))
    }
  }

  private complete (u: number, t: number): void {
    this.done[u] = 1
    this.addTo(this.tlDone, t, 1)
    this.finish[u] = t
    this.sched[u] = null
    this.doneCount++
  }

  private onDontHave (e: number, list: number[], t: number): void {
    const u = this.g.adj[this.g.rev[e]]
    this.dontHave += list.length
    for (const i of list) {
      const s = this.sched[u]
      if (s === null || s.have.has(i)) continue
      s.failed(this.edgeId[e], i, true)
      this.allDirty(u)
      const asked = this.asked[u]
      if (asked !== null) asked[i] = 0
      this.now = t
      this.pump(u, s)
    }
  }

  private onTick (u: number, t: number): void {
    const s = this.sched[u]
    if (s === null) return
    // Requests older than the timeout go back to the pool (the server may still send them).
    const limit = t - this.timeoutS
    const { off, rev } = this.g
    for (let e = off[u]; e < off[u + 1]; e++) {
      const st = this.streams[rev[e]]
      if (st === undefined) continue
      for (let k = 0; k < st.batch.length; k++) this.expire(s, st, st.batch, st.batchT, k, limit)
      let k = Math.max(st.qh, st.qto)
      while (k < st.q.length && st.qt[k] <= limit) { this.expire(s, st, st.q, st.qt, k, limit); k++ }
      st.qto = k
    }
    this.pump(u, s)
    this.ev(t + this.tickS, EV.TICK, u)
  }

  private expire (s: PieceScheduler, st: Stream, ps: number[], ts: number[], k: number, limit: number): void {
    if (ts[k] < 0 || ts[k] > limit) return
    ts[k] = -1
    if (s.have.has(ps[k])) return
    this.timeouts++
    s.failed(this.edgeId[st.back], ps[k])
    this.allDirty(st.client)
    const asked = this.asked[st.client]
    if (asked !== null) asked[ps[k]] = 0
  }

  // ------------------------------------------------------------------ server side (BlockExchange.serve)

  /** A client asked what we hold (server-side edge e): answer, and watch it from now on. */
  private onAsk (e: number, t: number): void {
    const v = this.g.adj[this.g.rev[e]]
    let have: Bitfield
    if (v === 0) {
      if (this.ss.finished) {
        have = Bitfield.full(this.pieces)
        this.originAll.add(e)
      } else {
        const offer = this.ss.offer(this.edgeId[e])
        this.originShown.set(e, new Bitfield(this.pieces, offer.bytes))
        have = new Bitfield(this.pieces, offer.bytes)
      }
    } else {
      have = this.done[v] === 1 ? Bitfield.full(this.pieces) : new Bitfield(this.pieces, this.have[v].bytes)
      // The answer tells the asker every piece logged so far.
      this.watchPos[e] = 0
      this.waitingSince[e] = -1
      this.told(e, 0, this.acqCount[v])
    }
    this.ev(t + this.lat, EV.ANSWER, this.g.rev[e], 0, null, null, have)
  }

  /** The HAVE period of node v: longer when it serves many peers (all its neighbours watch it). */
  private havePeriod (v: number): number {
    const peers = this.cfg.havePeers ?? Number.POSITIVE_INFINITY
    const watchers = this.g.off[v + 1] - this.g.off[v]
    if (!Number.isFinite(peers) || watchers <= peers) return this.haveS
    return Math.min(Math.max(this.haveS, (this.cfg.haveMaxMs ?? 500) / 1000), this.haveS * Math.ceil(watchers / peers))
  }

  /** Every HAVE_UPDATE_MS: tell watchers what changed. */
  private onFlush (v: number, t: number): void {
    if (v === 0) {
      this.flushOrigin(t)
      if (this.originAll.size < this.g.off[1] - this.g.off[0] || !this.ss.finished) this.ev(t + this.havePeriod(v), EV.FLUSH, v)
      return
    }
    const upto = this.acqCount[v]
    if (upto !== this.flushed[v] || this.held[v] > 0) {
      this.flushed[v] = upto
      this.ev(t + this.lat, EV.DELIVER, v, upto)
    }
    if (this.done[v] === 0 || this.flushed[v] !== this.acqCount[v] || this.held[v] > 0) this.ev(t + this.havePeriod(v), EV.FLUSH, v)
  }

  private onDeliver (v: number, upto: number, t: number): void {
    const { off } = this.g
    this.now = t
    let held = 0
    for (let e = off[v]; e < off[v + 1]; e++) {
      const from = this.watchPos[e]
      if (from < 0 || from >= upto) continue
      if (this.pacing !== null && this.done[v] === 0) {
        // As flushHave: news the watcher is not known to hold waits while it can ask us for enough.
        const fresh = this.fresh(e, from, upto)
        if (fresh > 0) {
          if (this.waitingSince[e] < 0) this.waitingSince[e] = t
          if (!haveDue(fresh, this.askable[e], (t - this.waitingSince[e]) * 1000, this.pacing)) { held++; continue }
        }
      }
      this.waitingSince[e] = -1
      const st = this.streams[e]
      if (st !== undefined && st.active) { st.haveUpto = upto; continue }
      this.haveTo(e, from, upto)
    }
    this.held[v] = held
  }

  /**
   * Whether the server of server-side edge e knows its watcher holds piece i: the watcher told
   * it so (its HAVEs on the reverse edge have reached that piece of its log), as the agent's
   * peer-pieces.ts knows only what a peer's HAVEs said.
   */
  private knownHeld (e: number, i: number): boolean {
    const at = this.acqPos[this.g.adj[e]]?.[i] ?? -1
    return at >= 0 && at < this.watchPos[this.g.rev[e]]
  }

  /** Log entries [from, upto) of the server of edge e that its watcher is not known to hold. */
  private fresh (e: number, from: number, upto: number): number {
    const log = this.acqLog[this.g.adj[this.g.rev[e]]]!
    let n = 0
    for (let k = from; k < upto; k++) if (!this.knownHeld(e, log[k])) n++
    return n
  }

  /**
   * The server of edge e told its watcher of log entries [from, upto) (watchPos[e] is upto now):
   * what the watcher can ask it for grows by those it is not known to hold, and what the
   * server can ask the watcher for (the reverse edge) shrinks by those the watcher told it of.
   * Returns how many were news (not known held), the pieces a HAVE names.
   */
  private told (e: number, from: number, upto: number): number {
    const log = this.acqLog[this.g.adj[this.g.rev[e]]]!
    const r = this.g.rev[e]
    let news = 0
    for (let k = from; k < upto; k++) {
      if (this.knownHeld(e, log[k])) this.askable[r]--
      else news++
    }
    this.askable[e] += news
    this.watchPos[e] = upto
    return news
  }

  /** Tells the watcher at the other end of server-side edge e about log entries [from, upto). */
  private haveTo (e: number, from: number, upto: number): void {
    // A HAVE goes out only with pieces the watcher is not known to hold (the rest are marked told).
    if (this.told(e, from, upto) > 0) this.haves++
    const u = this.g.adj[e]
    const s = this.sched[u]
    if (s === null) return
    this.peerGot(u, s, this.g.rev[e], this.acqLog[this.g.adj[this.g.rev[e]]]!, from, upto)
  }

  private onHaveOne (e: number, from: number, upto: number): void {
    if (from < this.watchPos[e]) from = this.watchPos[e]
    if (from < upto) this.haveTo(e, from, upto)
  }

  private flushOrigin (t: number): void {
    const { off } = this.g
    for (let e = off[0]; e < off[1]; e++) this.flushOriginTo(e, t)
  }

  /** The origin's offer to one watcher grew (or became everything): say so (after the BLOCK message on the wire, if any). */
  private flushOriginTo (e: number, t: number, afterMessage = false): void {
    const shown = this.originShown.get(e)
    if (shown === undefined) return
    const st = this.streams[e]
    if (!afterMessage && st !== undefined && st.active) { st.originFlush = true; return }
    if (this.ss.finished) {
      if (this.originAll.has(e)) return
      this.originAll.add(e)
      this.ev(t + this.lat, EV.OFFER, this.g.rev[e], 0, null, null, Bitfield.full(this.pieces))
      return
    }
    const offer = this.ss.offer(this.edgeId[e])
    if (offer.cardinality === shown.cardinality) return
    const fresh: number[] = []
    for (let i = 0; i < this.pieces; i++) if (offer.has(i) && shown.set(i)) fresh.push(i)
    this.ev(t + this.lat, EV.OFFER, this.g.rev[e], 0, fresh)
  }

  private onOffer (e: number, list: number[] | null, all: Bitfield | null, t: number): void {
    const u = this.g.adj[this.g.rev[e]]
    const s = this.sched[u]
    if (s === null) return
    this.now = t
    if (all !== null) { this.setPeer(u, s, e, all); this.pumpPeer(u, s, e); return }
    this.peerGot(u, s, e, list!, 0, list!.length)
  }

  private stream (e: number): Stream {
    let st = this.streams[e]
    if (st === undefined) {
      const { adj, rev } = this.g
      st = new Stream(adj[rev[e]], adj[e], e, rev[e])
      this.streams[e] = st
    }
    return st
  }

  private onWant (e: number, list: number[], t: number): void {
    const st = this.stream(e)
    for (const i of list) {
      st.cancelled?.delete(i)
      st.q.push(i)
      st.qt.push(t - this.lat)
    }
    if (!st.active && !st.waiting) this.wantSlot(st, t)
  }

  /** A stream has requests: send if the node has a free upload slot, else wait in line. */
  private slotsOf (v: number): number { return v === 0 ? this.originSlots : this.slots }

  private wantSlot (st: Stream, t: number): void {
    const v = st.server
    if (this.sending[v] < this.slotsOf(v)) {
      this.sending[v]++
      if (!this.nextBatch(st, t)) this.release(st, t)
      return
    }
    st.waiting = true
    let q = this.waitQ[v]
    if (q === undefined) { q = []; this.waitQ[v] = q }
    q.push(st)
  }

  /** The stream stops sending: its slot goes to the next stream in line. */
  private release (st: Stream, t: number): void {
    const v = st.server
    this.idle(st)
    this.sending[v]--
    if (st.qh < st.q.length) {
      // More to send: to the back of the line, behind the streams already waiting.
      st.waiting = true
      let q = this.waitQ[v]
      if (q === undefined) { q = []; this.waitQ[v] = q }
      q.push(st)
    }
    this.grant(v, t)
  }

  private grant (v: number, t: number): void {
    const q = this.waitQ[v]
    if (q === undefined) return
    while (this.waitHead[v] < q.length && this.sending[v] < this.slotsOf(v)) {
      const st = q[this.waitHead[v]++]
      st.waiting = false
      this.sending[v]++
      if (!this.nextBatch(st, t)) { this.idle(st); this.sending[v]-- }
    }
    if (this.waitHead[v] === q.length) { q.length = 0; this.waitHead[v] = 0 }
  }

  private othersWaiting (v: number): boolean {
    const q = this.waitQ[v]
    return q !== undefined && this.waitHead[v] < q.length
  }

  private onCancel (e: number, list: number[]): void {
    const st = this.stream(e)
    if (st.cancelled === null) st.cancelled = new Set()
    for (const i of list) st.cancelled.add(i)
  }

  /**
   * The worker: up to FRAME_BYTES of queued pieces (refusing what super-seeding forbids), then
   * send. Returns false if there was nothing to send.
   */
  private nextBatch (st: Stream, t: number): boolean {
    const fromOrigin = st.server === 0 && !this.ss.finished
    const peer = this.edgeId[st.edge]
    const batch: number[] = []
    const batchT: number[] = []
    let missing: number[] | null = null
    let bytes = 0
    while (st.qh < st.q.length && bytes < this.frameBytes) {
      const i = st.q[st.qh]
      const rt = st.qt[st.qh]
      st.qh++
      if (st.cancelled !== null && st.cancelled.delete(i)) continue
      if (fromOrigin && !this.ss.allowed(peer, i)) { (missing ??= []).push(i); continue }
      batch.push(i)
      batchT.push(rt)
      bytes += this.wire[i]
    }
    if (st.qh > 256 && st.qh * 2 > st.q.length) {
      st.q = st.q.slice(st.qh)
      st.qt = st.qt.slice(st.qh)
      st.qto = Math.max(0, st.qto - st.qh)
      st.qh = 0
    }
    if (missing !== null) this.ev(t + this.lat, EV.DONT_HAVE, st.back, 0, missing)
    if (fromOrigin && this.commitQueued && batch.length > 0) {
      for (const i of batch) this.ss.sent(peer, i, t * 1000)
      if (this.ss.finished && this.superSeedDone === null) this.superSeedDone = t
      if (!this.ss.finished) this.flushOriginTo(st.edge, t, true)
    }
    st.batch = batch
    st.batchT = batchT
    st.msg = 0
    if (batch.length === 0) return false
    // packBlocks: messages of at most FRAME_BYTES + 64 KiB.
    const ends: number[] = []
    let size = 0
    for (let k = 0; k < batch.length; k++) {
      const add = this.wire[batch[k]]
      if (k > 0 && size + add > this.frameBytes + 64 * 1024) { ends.push(k); size = 0 }
      size += add
    }
    ends.push(batch.length)
    st.msgEnds = ends
    this.transmit(st, t)
    return true
  }

  /** Starts sending message st.msg of the current batch. */
  private transmit (st: Stream, t: number): void {
    const from = st.msg === 0 ? 0 : st.msgEnds[st.msg - 1]
    let bytes = 0
    for (let k = from; k < st.msgEnds[st.msg]; k++) bytes += this.wire[st.batch[k]]
    if (!st.active) {
      st.active = true
      st.slot = this.act.length
      this.act.push(st)
      const r = Math.max(0, Math.min(this.slackUp[st.server], this.slackDown[st.client]))
      st.rate = r
      this.slackUp[st.server] -= r
      this.slackDown[st.client] -= r
    }
    st.rem = bytes
    st.since = t
    st.began = t
    this.scheduleDone(st)
  }

  private scheduleDone (st: Stream): void {
    st.ver++
    if (st.rate <= 0) return
    const done = st.since + st.rem / st.rate
    if (done < this.nextStep) this.ev(done, EV.FRAME_DONE, 0, st.ver, null, st)
  }

  private idle (st: Stream): void {
    if (!st.active) return
    this.slackUp[st.server] += st.rate
    this.slackDown[st.client] += st.rate
    st.rate = 0
    st.active = false
    const last = this.act.pop()!
    if (last !== st) { this.act[st.slot] = last; last.slot = st.slot }
    st.slot = -1
  }

  /** The last byte of a message left the server. */
  private onFrameDone (st: Stream, t: number): void {
    const from = st.msg === 0 ? 0 : st.msgEnds[st.msg - 1]
    const to = st.msgEnds[st.msg]
    const list = st.batch.slice(from, to)
    let bytes = 0
    for (const i of list) bytes += this.wire[i]
    this.upBytes[st.server] += bytes
    if (st.server === 0) {
      if (this.superSeedDone === null) this.originSeedUp += bytes
      this.spread(this.tlOrigin, st.began, t, bytes)
    }
    this.spread(this.tlDown, st.began, t, bytes)
    this.ev(t + this.lat, EV.BLOCKS, st.back, 0, list)
    if (st.server === 0) {
      const seeding = !this.ss.finished
      const peer = this.edgeId[st.edge]
      if (!this.commitQueued) for (const i of list) this.ss.sent(peer, i, t * 1000)
      if (this.ss.finished && this.superSeedDone === null) this.superSeedDone = t
      // A super-seeded offer grew as its pieces went out: tell that peer now, not at the next tick.
      if ((seeding && !this.ss.finished) || st.originFlush) { st.originFlush = false; this.flushOriginTo(st.edge, t, true) }
    } else if (st.haveUpto >= 0) {
      this.ev(t + this.lat, EV.HAVE_ONE, st.edge, this.watchPos[st.edge], null, null, null, st.haveUpto)
      st.haveUpto = -1
    }
    st.msg++
    if (st.msg < st.msgEnds.length) { st.rem = 0; this.transmit(st, t); return }
    st.batch = []
    st.batchT = []
    // Keep the slot for the next batch unless another stream waits for one.
    if (st.qh < st.q.length && !this.othersWaiting(st.server) && this.nextBatch(st, t)) return
    this.release(st, t)
  }

  // ------------------------------------------------------------------ bandwidth

  private addTo (series: number[], t: number, x: number): void {
    const b = Math.floor(t / this.bucket)
    while (series.length <= b) series.push(0)
    series[b] += x
  }

  /** Adds x spread evenly over [t0, t1] (a message's bytes over its time on the wire). */
  private spread (series: number[], t0: number, t1: number, x: number): void {
    if (t1 - t0 < 1e-12) { this.addTo(series, t1, x); return }
    const rate = x / (t1 - t0)
    let b = Math.floor(t0 / this.bucket)
    let a = t0
    while (a < t1) {
      const end = Math.min(t1, (b + 1) * this.bucket)
      while (series.length <= b) series.push(0)
      series[b] += rate * (end - a)
      a = end
      b++
    }
  }

  private onStep (t: number): void {
    this.steps++
    const b = Math.floor(t / this.bucket)
    while (this.tlActive.length <= b) this.tlActive.push(0)
    this.tlActive[b] = Math.max(this.tlActive[b], this.act.length)
    const act = this.act
    const m = act.length
    if (this.fsrc.length < m) {
      const size = Math.max(m, this.fsrc.length * 2)
      this.fsrc = new Int32Array(size)
      this.fdst = new Int32Array(size)
      this.frate = new Float64Array(size)
    }
    for (let f = 0; f < m; f++) {
      const st = act[f]
      st.rem = Math.max(0, st.rem - st.rate * (t - st.since))
      st.since = t
      this.fsrc[f] = st.server
      this.fdst[f] = st.client
    }
    this.alloc.allocate({ count: m, src: this.fsrc, dst: this.fdst }, this.frate)
    const { capUp, capDown, usedUp, usedDown } = this.alloc
    for (let v = 0; v < this.n; v++) {
      this.slackUp[v] = capUp[v] - usedUp[v]
      this.slackDown[v] = capDown[v] - usedDown[v]
    }
    this.limitCpu(m)
    this.nextStep = t + this.dt
    for (let f = 0; f < m; f++) {
      const st = act[f]
      st.rate = this.frate[f]
      this.scheduleDone(st)
    }
    if (this.doneCount < this.n - 1) this.ev(this.nextStep, EV.STEP, 0)
  }

  /**
   * The shared CPU: if the flows' bytes per second would take more than the cores, every flow is
   * scaled down by the same factor, and no slack is left for a flow starting before the next step.
   */
  private limitCpu (m: number): void {
    const cores = this.cfg.cpuCores
    const perGB = this.cfg.cpuSecondsPerGB
    if (cores === undefined || perGB === undefined || perGB <= 0) return
    let total = 0
    for (let f = 0; f < m; f++) total += this.frate[f]
    const need = total * perGB / 1e9
    if (need <= cores) return
    const k = cores / need
    for (let f = 0; f < m; f++) this.frate[f] *= k
    this.slackUp.fill(0)
    this.slackDown.fill(0)
    this.cpuLimitedSteps++
  }

  // ------------------------------------------------------------------ results

  private result (events: number, wallS: number): SimResult {
    const finishS: number[] = []
    for (let v = 1; v < this.n; v++) finishS.push(this.finish[v])
    const ok = finishS.filter(x => !Number.isNaN(x)).sort((a, b) => a - b)
    const q = (p: number): number => ok.length === 0 ? Number.NaN : ok[Math.min(ok.length - 1, Math.floor(p * ok.length))]
    const all = ok.length === this.n - 1
    const tS = all ? ok[ok.length - 1] : null
    let clientUp = 0
    for (let v = 1; v < this.n; v++) clientUp += this.upBytes[v]
    const F = this.imageBytes
    const timeline: SimResult['timeline'] = []
    const buckets = Math.max(this.tlOrigin.length, this.tlDown.length, this.tlDone.length)
    let doneSoFar = 0
    for (let b = 0; b < buckets; b++) {
      doneSoFar += this.tlDone[b] ?? 0
      timeline.push({
        t: (b + 1) * this.bucket,
        originUpBps: (this.tlOrigin[b] ?? 0) * 8 / this.bucket,
        clientDownBps: (this.tlDown[b] ?? 0) * 8 / this.bucket / (this.n - 1),
        done: doneSoFar,
        active: this.tlActive[b] ?? 0
      })
    }
    return {
      clients: this.n - 1,
      neighbours: this.cfg.neighbours ?? DEFAULT_PEERS,
      originNeighbours: this.g.off[1] - this.g.off[0],
      pieces: this.pieces,
      imageBytes: F,
      meanPieceBytes: F / this.pieces,
      tMinS: this.tMin,
      tS,
      ratio: tS === null ? null : tS / this.tMin,
      finishS,
      finished: ok.length,
      meanS: ok.reduce((a, b) => a + b, 0) / Math.max(1, ok.length),
      p50S: q(0.5),
      p90S: q(0.9),
      p99S: q(0.99),
      firstS: ok.length > 0 ? ok[0] : Number.NaN,
      originUpF: this.upBytes[0] / F,
      duplicateF: this.duplicateBytes / F / (this.n - 1),
      clientUpF: clientUp / F / (this.n - 1),
      superSeedDoneS: this.superSeedDone,
      originSeedUpF: this.originSeedUp / F,
      timeline,
      bucketS: this.bucket,
      dontHave: this.dontHave,
      havesPerClient: this.haves / Math.max(1, this.cfg.clients),
      timeouts: this.timeouts,
      cancels: this.cancels,
      nextCalls: this.nextCalls,
      nextSkipped: this.nextSkipped,
      events,
      steps: this.steps,
      cpuLimitedShare: this.steps === 0 ? 0 : this.cpuLimitedSteps / this.steps,
      wallS,
      stepS: this.dt
    }
  }
}
