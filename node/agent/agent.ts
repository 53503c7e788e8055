/**
 * The agent: one per node. It owns the image store and the swarm node, serves blocks to peers,
 * keeps versions in sync (heads, gossip), announces what it holds on the DHT, fetches versions
 * from many peers at once, runs deploys, and answers the CLI on its control socket.
 */
import { hostname } from 'node:os'
import type { CID } from 'multiformats/cid'
import { peerIdFromString } from '@libp2p/peer-id'
import { ImageStore, parseImageSpec, type ResolvedVersion } from '../image/image-store.ts'
import { createSwarmNode, type SwarmNode } from '../swarm/libp2p-node.ts'
import { loadIdentity, type NodeIdentity } from './node-identity.ts'
import { BlockExchange, makeOffer, type Offer } from '../exchange/block-exchange.ts'
import { VersionFetcher, type FetchProgress } from '../exchange/version-fetcher.ts'
import { DEFAULT_MAX_IN_FLIGHT } from '../fetch/peer-rates.ts'
import { VersionSync, type LearntVersion } from './version-sync.ts'
import { SuperSeed } from '../fetch/super-seed.ts'
import { Bitfield } from '../fetch/bitfield.ts'
import { loadTree, pieceList, treeBlocks, type DirNode } from '../tree/tree-loader.ts'
import { deploy, type DeployOptions, type DeployResult } from '../target/deploy.ts'
import { startControlServer, type ControlServer, type EventSink } from '../control/control-api.ts'
import { UpdateManager } from './updates.ts'
import { planRollback } from '../target/rollback.ts'
import { pruneVersions } from '../image/retention.ts'
import type { Policy } from '../../protocols/assignment.ts'
import { ImgmeshError } from '../errors.ts'
import { createLogger } from '../logger.ts'
import { MemoryTrim } from './memory-trim.ts'
import { delayOptimization } from './tiering.ts'
import { steadyHeapGrowth } from './heap-growth.ts'
import { connectedPeerIds } from '../swarm/connected-peers.ts'
import { jittered, provideNow, PROVIDE_AFTER_MS, PROVIDER_LOOKUP_AFTER_MS, PROVIDER_LOOKUP_WITH_FETCHING_PEERS_MS } from './provide-pacing.ts'

/**
 * Pieces of a brand-new version shown to each peer before it takes them (more to a peer that
 * takes them fast, see SuperSeed). Few: with many peers asking at once, each piece then goes
 * out at a good share of the uplink and reaches its first receiver soon. In the simulator
 * (simulations/sim) 2 instead of 32 takes a 50-client deployment from 2.02 to 1.48 T_min.
 */
const SUPER_SEED_PER_PEER = 2
/** How long resolving a name no peer has told us of keeps asking while some connected peers do not answer. */
const RESOLVE_WAIT_MS = 60_000
const log = createLogger('agent')

export interface AgentOptions {
  dataDir: string
  listen?: string[]
  bootstrap?: string[]
  mdns?: boolean
  /** Requests in flight per peer. */
  maxInFlight?: number
  /** Connections the node dials up to and keeps (swarm option `peers`). */
  peers?: number
  /** Control socket path (default: agent.sock in the data dir). */
  api?: string
  /** Cap on the bytes per second this agent uploads to peers. */
  uploadLimit?: number
  /** Groups this node belongs to (assignments name groups). */
  groups?: string[]
  /** Where assigned images are applied. */
  target?: string
  /** Longest a hook may run (default 300 s). */
  hookTimeoutMs?: number
  /** Versions kept per image by the periodic GC (default 5; deployed and assigned ones always). */
  keep?: number
  /** How often the periodic GC runs (default 10 min). */
  gcIntervalMs?: number
}

export interface DeployJob {
  target: string
  image: string
  number: number
  cid: string
  started: number
  state: 'fetching' | 'writing' | 'done' | 'failed'
  error?: string
  fetcher: VersionFetcher
  result?: DeployResult
}

export interface VersionHeld { image: string, number: number, cid: string, pieces: number, have: number, percent: number, complete: boolean }

/** DHT providers of a version dialled by a fetch even when the node has its `peers` connections. */
const PROVIDERS_BEYOND_PEERS = 2

export class Agent {
  readonly store: ImageStore
  readonly identity: NodeIdentity
  readonly swarm: SwarmNode
  readonly exchange: BlockExchange
  readonly versions: VersionSync
  readonly updates: UpdateManager
  private control: ControlServer | null = null
  private readonly fetchers = new Map<string, Promise<VersionFetcher>>()
  /** The trees of the fetchers that have loaded theirs (a new version's fetch reads only the directories they lack). */
  private readonly trees = new Map<string, DirNode>()
  /** Fetches that looked for providers in the DHT (no connected peer offered the version in time). */
  private providerLookups = 0
  private readonly provideTimers = new Set<NodeJS.Timeout>()
  private readonly complete = new Map<string, Offer>()
  private readonly seeding = new Map<string, Offer>()
  readonly jobs = new Map<string, DeployJob>()
  private readonly providers = new Set<string>()
  readonly startedAt = Date.now()
  maxInFlight = DEFAULT_MAX_IN_FLIGHT
  private trustTimer: NodeJS.Timeout | undefined
  private gcTimer: NodeJS.Timeout | undefined
  /** Gives back the caches and the C heap's free pages once transfers have stopped (memory-trim.ts). */
  private readonly memoryTrim = new MemoryTrim({
    activity: () => this.exchange.bytesSent + this.exchange.bytesReceived + this.fetchers.size + this.jobs.size,
    busy: () => [...this.jobs.values()].some(j => j.state === 'fetching' || j.state === 'writing'),
    release: () => { this.exchange.cache.release(); this.exchange.zcache.release() }
  })

  private constructor (store: ImageStore, identity: NodeIdentity, swarm: SwarmNode, opts: AgentOptions) {
    this.store = store
    this.identity = identity
    this.swarm = swarm
    this.exchange = new BlockExchange(swarm.libp2p, store.blocks, async (v) => await this.offerFor(v), { uploadBytesPerSecond: opts.uploadLimit })
    this.versions = new VersionSync(swarm.libp2p, store, identity.clusterId, (v) => { this.onLearnt(v) })
    this.updates = new UpdateManager({
      libp2p: swarm.libp2p,
      store,
      clusterId: identity.clusterId,
      groups: opts.groups ?? [],
      target: opts.target,
      hookTimeoutMs: opts.hookTimeoutMs ?? 300_000,
      fetch: async (r) => await this.fetch(r),
      deploy: async (r, o) => await this.deploy(r, o),
      facts: { hostname: hostname(), peerId: identity.peerId, groups: opts.groups ?? [] }
    })
  }

  static async start (opts: AgentOptions): Promise<Agent> {
    delayOptimization()
    steadyHeapGrowth()
    const store = await ImageStore.open(opts.dataDir)
    const identity = await loadIdentity(store)
    const swarm = await createSwarmNode({
      privateKey: identity.peerKey,
      clusterKey: identity.clusterKey,
      listen: opts.listen ?? ['/ip4/0.0.0.0/tcp/4001'],
      bootstrap: opts.bootstrap ?? [],
      mdns: opts.mdns ?? false,
      peers: opts.peers
    })
    const agent = new Agent(store, identity, swarm, opts)
    if (opts.maxInFlight !== undefined) agent.maxInFlight = opts.maxInFlight
    try {
      await agent.exchange.start()
      await agent.versions.start()
      await agent.updates.start()
      agent.control = await startControlServer(opts.dataDir, agent.handlers(), opts.api)
      // `imgmesh keys trust|untrust` edits the file; the running agent follows it.
      agent.trustTimer = setInterval(() => { store.trust.refresh().catch(() => {}) }, 2000)
      agent.trustTimer.unref()
      agent.gcTimer = setInterval(() => { void agent.collect(opts.keep ?? 5) }, opts.gcIntervalMs ?? 600_000)
      agent.gcTimer.unref()
      agent.memoryTrim.start()
    } catch (err) {
      await agent.stop()
      throw err
    }
    return agent
  }

  async stop (): Promise<void> {
    if (this.trustTimer !== undefined) clearInterval(this.trustTimer)
    if (this.gcTimer !== undefined) clearInterval(this.gcTimer)
    this.memoryTrim.stop()
    for (const t of this.provideTimers) clearTimeout(t)
    this.provideTimers.clear()
    for (const f of this.fetchers.values()) void f.then(x => { x.stop() }).catch(() => {})
    await this.control?.close()
    await this.updates.stop().catch(() => {})
    await this.versions.stop().catch(() => {})
    await this.exchange.stop().catch(() => {})
    await this.swarm.stop()
  }

  addresses (): string[] { return this.swarm.multiaddrs().map(a => a.toString()) }

  // ------------------------------------------------------------------ what we hold and offer

  /** Our offer of a version: a running fetch, a super-seeded new version, or what the store holds. */
  async offerFor (version: CID): Promise<Offer | null> {
    const key = version.toString()
    const seeding = this.seeding.get(key)
    if (seeding !== undefined) return seeding
    const fetching = this.fetchers.get(key)
    if (fetching !== undefined) { try { return (await fetching).offer } catch { return null } }
    const done = this.complete.get(key)
    if (done !== undefined) return done
    return await this.scanOffer(version)
  }

  private async scanOffer (version: CID): Promise<Offer | null> {
    let tree: CID
    try { tree = (await this.store.getVersion(version)).body.tree } catch { return null }
    let pieces
    let blocks: CID[]
    try {
      const root = await loadTree(this.store.blocks, tree, { reuse: [...this.trees.values()] })
      // An offer is a version whose blocks are all here, tree blocks taken from memory included.
      blocks = treeBlocks(root)
      if (!(await this.store.blocks.hasAll(blocks))) return null
      pieces = pieceList(root)
    } catch { return null }
    const have = new Bitfield(pieces.length)
    const held = this.store.blocks.heldOf(pieces.map(p => p.cid))
    for (let i = 0; i < pieces.length; i++) if (held[i]) have.set(i)
    const offer = makeOffer(version, pieces.map(p => p.cid), have.complete ? 'all' : have, blocks)
    if (have.complete) this.complete.set(version.toString(), offer)
    return offer
  }

  /** Peers worth asking for a version: everyone connected, plus DHT providers found so far. */
  private candidates (): string[] {
    return connectedPeerIds(this.swarm.libp2p).filter(p => !this.exchange.isBanned(p))
  }

  private async findProviders (cids: CID[]): Promise<void> {
    const { libp2p, keeper, dialer } = this.swarm
    const dht = libp2p.services.dht
    // A node with its `peers` connections dials a few providers beyond them, in case none of its
    // neighbours holds the version; the others become the keeper's candidates.
    let beyond = 0
    await Promise.all(cids.map(async (cid) => {
      try {
        for await (const event of dht.findProviders(cid, { signal: AbortSignal.timeout(10_000) })) {
          if (event.name !== 'PROVIDER') continue
          for (const p of event.providers) {
            if (p.id.equals(libp2p.peerId) || libp2p.getConnections(p.id).length > 0) continue
            if (keeper.wantsMore() || beyond++ < PROVIDERS_BEYOND_PEERS) await dialer.dial(p.id, p.multiaddrs, 'provider')
            else keeper.add([{ id: p.id, addrs: p.multiaddrs }])
          }
        }
      } catch (err) {
        log.debug('findProviders ended', { cid: cid.toString(), error: (err as Error).message })
      }
    }))
  }

  /**
   * A node that fetched a version provides it in the DHT once it holds all of it and its block
   * traffic is quiet (provide-pacing.ts): until then it serves the nodes still fetching, and the
   * query would take their CPU. Nodes still fetching are found by their neighbours' probes and
   * the gossip; the publisher provides at once.
   */
  private provideLater (cid: CID): void {
    const since = Date.now()
    let last = { at: since, bytes: this.trafficBytes() }
    const arm = (): void => {
      const timer = setTimeout(() => {
        this.provideTimers.delete(timer)
        const now = { at: Date.now(), bytes: this.trafficBytes() }
        if (provideNow({ trafficBytes: now.bytes - last.bytes, spanMs: now.at - last.at, waitedMs: now.at - since })) this.provide(cid)
        else { last = now; arm() }
      }, jittered(PROVIDE_AFTER_MS))
      timer.unref()
      this.provideTimers.add(timer)
    }
    arm()
  }

  private trafficBytes (): number { return this.exchange.bytesSent + this.exchange.bytesReceived }

  private provide (cid: CID): void {
    const key = cid.toString()
    if (this.providers.has(key)) return
    this.providers.add(key)
    log.debug('providing', { cid: key })
    this.swarm.libp2p.contentRouting.provide(cid, { signal: AbortSignal.timeout(30_000) })
      .catch((err: unknown) => { this.providers.delete(key); log.debug('provide failed', { cid: key, error: (err as Error).message }) })
  }

  /** Fetches a version from the swarm (one fetch per version, shared by every deploy of it). */
  async fetch (resolved: ResolvedVersion): Promise<VersionFetcher> {
    const key = resolved.cid.toString()
    let f = this.fetchers.get(key)
    if (f === undefined) {
      f = (async () => {
        const fetcher = new VersionFetcher(this.exchange, this.store.blocks, resolved.cid, resolved.version.body.tree, { candidates: () => this.candidates(), maxInFlight: this.maxInFlight, reuse: [...this.trees.values()] })
        void fetcher.noHolderWithin(PROVIDER_LOOKUP_AFTER_MS).then(async (alone) => {
          if (!alone) return
          // Connected peers fetching it too will soon hold pieces of it: give them time first.
          if (this.exchange.peersAsking(resolved.cid) > 0 && !await fetcher.noHolderWithin(PROVIDER_LOOKUP_WITH_FETCHING_PEERS_MS)) return
          this.providerLookups++
          log.debug('no connected peer offers the version yet: looking for providers', { cid: key })
          await this.findProviders([resolved.cid, ...resolved.version.body.parents])
        })
        await fetcher.prepare()
        if (fetcher.tree !== null) this.trees.set(key, fetcher.tree)
        fetcher.start()
        // A finished fetcher stays: later deploys of the version reuse its loaded tree.
        fetcher.done.then(() => {
          if (fetcher.offer !== null) this.complete.set(key, { ...fetcher.offer, have: 'all' })
          this.provideLater(resolved.cid)
        }, () => { this.forget(key) })
        return fetcher
      })()
      this.fetchers.set(key, f)
      f.catch(() => { this.forget(key) })
    }
    return await f
  }

  private forget (version: string): void {
    this.fetchers.delete(version)
    this.trees.delete(version)
  }

  /** Resolves NAME[@N] locally, after a fresh heads exchange with connected peers if needed. */
  async resolve (spec: string): Promise<ResolvedVersion> {
    try {
      return await this.store.resolve(spec)
    } catch (err) {
      if (!(err instanceof ImgmeshError)) throw err
      if (err.code === 'ENOBLOCK') {
        // Known by number, but its version block is gone from the store: ask the peers for it.
        const { image, number } = parseImageSpec(spec)
        const cid = number === undefined ? (await this.store.refs.head(image))?.cid : await this.store.refs.get(image, number)
        if (cid === undefined || cid === null) throw err
        await this.exchange.fetchOne(cid, this.candidates())
        return await this.store.resolve(spec)
      }
      if (err.code !== 'ENOIMAGE' && err.code !== 'ENOVERSION') throw err
      // Ask the peers. When every connected peer answered and none knows the name, or no peer is
      // connected, it fails at once (a mistyped name does not wait). While some do not answer (not connected yet, or
      // exchanges failing on a busy machine), it asks again, for up to RESOLVE_WAIT_MS.
      const deadline = Date.now() + RESOLVE_WAIT_MS
      for (let round = 1; ; round++) {
        const { peers, answered } = await this.versions.syncAll()
        try {
          return await this.store.resolve(spec)
        } catch (again) {
          if (!(again instanceof ImgmeshError) || (again.code !== 'ENOIMAGE' && again.code !== 'ENOVERSION')) throw again
          if (peers === 0) throw new ImgmeshError(again.code, `${again.message} (no peer connected)`)
          if (answered === peers || Date.now() >= deadline) {
            throw new ImgmeshError(again.code, `${again.message} (${answered} of ${peers} connected peer(s) answered${answered < peers ? `, asked for ${Math.round(RESOLVE_WAIT_MS / 1000)} s` : ''})`)
          }
          log.info('no answer from every peer yet; asking again', { spec, peers, answered, round })
          await new Promise(resolve => setTimeout(resolve, Math.min(500 * round, 3000)))
        }
      }
    }
  }

  async deploy (spec: string | ResolvedVersion, opts: DeployOptions, events?: EventSink): Promise<DeployResult> {
    const resolved = typeof spec === 'string' ? await this.resolve(spec) : spec
    const fetcher = await this.fetch(resolved)
    const job: DeployJob = { target: opts.target, image: resolved.version.body.image, number: resolved.version.body.number, cid: resolved.cid.toString(), started: Date.now(), state: 'fetching', fetcher }
    this.jobs.set(opts.target, job)
    const timer = setInterval(() => { events?.event({ type: 'progress', ...fetcher.progress() }) }, 500)
    try {
      job.result = await deploy(this.store, resolved, { ...opts, blocks: fetcher, ...(fetcher.tree === null ? {} : { tree: fetcher.tree }), trees: [...this.trees.values()] })
      job.state = 'done'
      events?.event({ type: 'progress', ...fetcher.progress() })
      return job.result
    } catch (err) {
      job.state = 'failed'
      job.error = (err as Error).message
      throw err
    } finally {
      clearInterval(timer)
    }
  }

  /** Announces a version this node holds: gossip, DHT, and super-seeding until every piece went out once. */
  async publish (spec: string): Promise<{ image: string, number: number, cid: string, recipients: number, newChunks: number, newBytes: number }> {
    const resolved = await this.store.resolve(spec)
    const { body } = resolved.version
    const offer = await this.scanOffer(resolved.cid)
    if (offer === null || offer.have !== 'all') throw new ImgmeshError('ENOBLOCK', `${body.image}@${body.number} is not complete on this node; nothing to publish`)
    const key = resolved.cid.toString()
    // Delta against the parent: pieces the parent does not have. Those the parent has are already
    // spread through the swarm, so only the new ones are super-seeded.
    let newChunks = offer.pieces.length
    let newBytes = body.stats.chunkBytes
    const spread = new Bitfield(offer.pieces.length)
    if (body.parents.length > 0) {
      try {
        const parent = await this.store.getVersion(body.parents[0])
        const tree = await loadTree(this.store.blocks, body.tree)
        const old = new Set(pieceList(await loadTree(this.store.blocks, parent.body.tree, { reuse: [tree] })).map(p => p.cid.toString()))
        const pieces = pieceList(tree)
        pieces.forEach((p, i) => { if (old.has(p.cid.toString())) spread.set(i) })
        const fresh = pieces.filter(p => !old.has(p.cid.toString()))
        newChunks = fresh.length
        newBytes = fresh.reduce((s, p) => s + p.length, 0)
      } catch {}
    }
    const seed: Offer = { ...offer, superSeed: new SuperSeed(offer.pieces.length, SUPER_SEED_PER_PEER, spread) }
    if (!seed.superSeed!.finished) this.seeding.set(key, seed)
    const timer = setInterval(() => { if (seed.superSeed?.finished === true) { this.seeding.delete(key); clearInterval(timer) } }, 1000)
    timer.unref()
    const recipients = await this.versions.announce(resolved.cid, resolved.version, { newChunks, newBytes })
    this.provide(resolved.cid)
    // The publisher follows its own assignment like any node: it applies the new version now,
    // not at its update manager's next periodic check.
    this.updates.onVersion(body.image)
    return { image: body.image, number: body.number, cid: key, recipients, newChunks, newBytes }
  }

  private onLearnt (v: LearntVersion): void {
    log.info('new version available', { image: v.version.body.image, number: v.version.body.number, via: v.via })
    this.updates.onVersion(v.version.body.image)
  }

  /**
   * Periodic GC: drops versions beyond the newest `keep` (never a deployed, previous or assigned
   * one, nor one being fetched), then removes unreferenced blocks.
   */
  async collect (keep: number): Promise<{ versionsRemoved: number, blocksRemoved: number, bytes: number }> {
    if (this.fetchers.size > 0) {
      const busy = await Promise.all([...this.fetchers.values()].map(async f => await f.then(x => x.progress().done, () => true)))
      if (busy.some(done => !done)) return { versionsRemoved: 0, blocksRemoved: 0, bytes: 0 }
    }
    const pinned = this.updates.list().map(a => a.number === undefined ? { image: a.image } : { image: a.image, number: a.number })
    const before = new Map<string, CID>()
    for (const image of await this.store.refs.images()) for (const v of await this.store.refs.versions(image)) before.set(`${image}@${v.number}`, v.cid)
    const pruned = await pruneVersions(this.store, keep, pinned)
    // No longer held: stop re-providing (kad-dht re-provides what we provided until then).
    for (const v of pruned.removed) {
      const cid = before.get(`${v.image}@${v.number}`)
      if (cid === undefined) continue
      this.providers.delete(cid.toString())
      this.forget(cid.toString())
      await this.swarm.libp2p.contentRouting.cancelReprovide(cid).catch(() => {})
    }
    const r = await this.store.gc()
    for (const v of pruned.removed) log.info('dropped version', v)
    this.complete.clear()
    return { versionsRemoved: pruned.removed.length, blocksRemoved: r.removed, bytes: r.bytes }
  }

  /** Deploys the version the target ran before (with the excludes it was deployed with). */
  async rollback (target: string, events?: EventSink): Promise<DeployResult & { from: string }> {
    const plan = await planRollback(this.store, target)
    const r = await this.deploy(plan.spec, { target: plan.target, excludes: plan.excludes }, events)
    return { ...r, from: plan.from }
  }

  // ------------------------------------------------------------------ status

  async held (): Promise<VersionHeld[]> {
    const out: VersionHeld[] = []
    for (const image of await this.store.refs.images()) {
      for (const ref of await this.store.refs.versions(image)) {
        const offer = await this.offerFor(ref.cid)
        const pieces = offer?.pieces.length ?? 0
        const have = offer === null ? 0 : offer.have === 'all' ? pieces : offer.have.cardinality
        out.push({ image, number: ref.number, cid: ref.cid.toString(), pieces, have, percent: pieces === 0 ? (offer === null ? 0 : 100) : Math.floor(have * 1000 / pieces) / 10, complete: offer !== null && have === pieces })
      }
    }
    return out
  }

  peers (): Array<{ peer: string, addresses: string[], sent: number, received: number }> {
    return this.swarm.libp2p.getPeers().filter(p => !this.exchange.isBanned(p.toString())).map(p => {
      const id = p.toString()
      const t = this.exchange.traffic.get(id)
      return { peer: id, addresses: this.swarm.libp2p.getConnections(p).map(c => c.remoteAddr.toString()), sent: t?.sent ?? 0, received: t?.received ?? 0 }
    })
  }

  async status (): Promise<Record<string, unknown>> {
    const deploys = [...this.jobs.values()].map(j => {
      const p: FetchProgress = j.fetcher.progress()
      return { ...p, target: j.target, image: j.image, version: j.number, cid: j.cid, state: j.state, error: j.error, seconds: (Date.now() - j.started) / 1000 }
    })
    return {
      peerId: this.identity.peerId,
      host: hostname(),
      cluster: this.identity.clusterId,
      publisher: this.identity.publisher,
      addresses: this.addresses(),
      uptime: (Date.now() - this.startedAt) / 1000,
      peers: this.peers(),
      banned: this.exchange.bannedPeers(),
      versions: await this.held(),
      deploys,
      updates: await this.updates.status(),
      conflicts: this.versions.conflicts,
      assignments: this.updates.list(),
      traffic: { sent: this.exchange.bytesSent, received: this.exchange.bytesReceived, blocksServed: this.exchange.blocksServed, blocksFetched: this.exchange.blocksFetched, badBlocks: this.exchange.badBlocks, rejectedAnnouncements: this.versions.rejected, rejectedAssignments: this.updates.rejected, providerLookups: this.providerLookups }
    }
  }

  private handlers (): Record<string, (body: Record<string, unknown>, events: EventSink) => Promise<unknown>> {
    return {
      ping: async () => ({ peerId: this.identity.peerId }),
      status: async () => await this.status(),
      peers: async () => this.peers(),
      publish: async (b) => await this.publish(String(b.spec)),
      deploy: async (b, events) => await this.deploy(String(b.spec), {
        target: String(b.target),
        excludes: Array.isArray(b.excludes) ? b.excludes.map(String) : [],
        dryRun: b.dryRun === true,
        delete: b.delete !== false
      }, events),
      assign: async (b) => await this.updates.assign({
        group: String(b.group),
        image: String(b.image),
        ...(b.number === undefined || b.number === null ? {} : { number: Number(b.number) }),
        policy: String(b.policy) as Policy,
        ...(b.at === undefined || b.at === null ? {} : { at: String(b.at) })
      }),
      sync: async () => await this.versions.syncAll(),
      fetch: async (b, events) => {
        const fetcher = await this.fetch(await this.resolve(String(b.spec)))
        const timer = setInterval(() => { events.event({ type: 'progress', ...fetcher.progress() }) }, 500)
        try { await fetcher.done } finally { clearInterval(timer) }
        return fetcher.progress()
      },
      gc: async (b) => await this.collect(typeof b.keep === 'number' ? b.keep : 5),
      rollback: async (b, events) => await this.rollback(String(b.target), events),
      dial: async (b) => {
        const peer = peerIdFromString(String(b.peer))
        const outcome = await this.swarm.dialer.dial(peer, [], 'operator')
        if (!outcome.connected) throw new ImgmeshError('EPEER', `could not dial ${peer.toString()}: ${outcome.error ?? 'unknown reason'}`)
        return {}
      }
    }
  }
}
