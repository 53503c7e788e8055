/**
 * Updates through the swarm: groups, signed assignments (which image a group runs, and the
 * policy: stage, apply, or apply at a time), staging of new versions as soon as they are
 * announced, and applying them to the node's target with the update excludes and hooks.
 */
import { join } from 'node:path'
import { hostname } from 'node:os'
import { peerIdFromString } from '@libp2p/peer-id'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import * as dagCbor from '@ipld/dag-cbor'
import type { CID } from 'multiformats/cid'
import type { SwarmLibp2p } from '../swarm/libp2p-node.ts'
import type { ImageStore, ResolvedVersion } from '../image/image-store.ts'
import type { VersionFetcher } from '../exchange/version-fetcher.ts'
import type { DeployOptions, DeployResult } from '../target/deploy.ts'
import { readTargetState } from '../target/target-state.ts'
import { DEFAULT_UPDATE_EXCLUDES } from '../tree/exclude.ts'
import { decodeAssignment, encodeAssignment, signAssignment, type Assignment, type AssignmentBody } from '../../protocols/assignment.ts'
import { FrameDecoder, framed, sendParts } from '../../protocols/blocks/frame.ts'
import { readJson, writeJson } from '../store/json-file.ts'
import { Schedule } from './cron.ts'
import { clearHookStaging, runHooks, type HookResult } from './hooks.ts'
import { compose, overrideNames, type NodeFacts } from './compose.ts'
import { loadTree } from '../tree/tree-loader.ts'
import { ImgmeshError } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('updates')
export const ASSIGN_TOPIC = '/imgmesh/assign/1'
export const ASSIGN_PROTOCOL = '/imgmesh/assignments/1.0.0'

export type UpdateState = 'idle' | 'staging' | 'staged' | 'applying' | 'applied' | 'failed'

export interface UpdateDeps {
  libp2p: SwarmLibp2p
  store: ImageStore
  clusterId: string
  groups: string[]
  /** Where assigned images are applied (absent: apply is refused, staging still works). */
  target?: string
  hookTimeoutMs: number
  fetch: (r: ResolvedVersion) => Promise<VersionFetcher>
  deploy: (version: ResolvedVersion, opts: DeployOptions) => Promise<DeployResult>
  facts: NodeFacts
}

export interface UpdateStatus {
  groups: string[]
  target: string | null
  assignment: AssignmentBody | null
  desired: { image: string, number: number } | null
  deployed: { image: string, number: number } | null
  interrupted: { image: string, number: number } | null
  state: UpdateState
  error: string | null
  hooks: HookResult[]
  overrides: string[]
}

export class UpdateManager {
  private readonly d: UpdateDeps
  private readonly topic: string
  private readonly assignments = new Map<string, Assignment>()
  private state: UpdateState = 'idle'
  private error: string | null = null
  private desired: ResolvedVersion | null = null
  private lastHooks: HookResult[] = []
  private lastOverrides: string[] = []
  private lastFired: number | null = null
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> = Promise.resolve()
  rejected = 0

  constructor (deps: UpdateDeps) {
    this.d = deps
    this.topic = `${ASSIGN_TOPIC}/${deps.clusterId.slice(0, 16)}`
  }

  private get file (): string { return join(this.d.store.dataDir, 'assignments.json') }
  private get hookStaging (): string { return join(this.d.store.dataDir, 'hooks-staging') }

  async start (): Promise<void> {
    await clearHookStaging(this.hookStaging)
    const saved = await readJson<Record<string, string>>(this.file) ?? {}
    for (const b64 of Object.values(saved)) {
      try { const a = decodeAssignment(Buffer.from(b64, 'base64'), this.d.store.trust.set); this.assignments.set(a.body.group, a) } catch {}
    }
    const pubsub = this.d.libp2p.services.pubsub
    pubsub.topicValidators.set(this.topic, (_peer, msg) => {
      try { decodeAssignment(msg.data, this.d.store.trust.set); return TopicValidatorResult.Accept } catch (err) {
        this.rejected++
        log.warn('rejected an assignment', { error: (err as Error).message })
        return TopicValidatorResult.Reject
      }
    })
    pubsub.addEventListener('message', this.onMessage)
    pubsub.subscribe(this.topic)
    await this.d.libp2p.handle(ASSIGN_PROTOCOL, (stream) => {
      void (async () => {
        try {
          await sendParts(stream, framed([this.encodeAll()]))
          await stream.close()
        } catch { stream.abort(new Error('failed')) }
      })()
    })
    this.d.libp2p.addEventListener('peer:identify', this.onIdentify)
    this.timer = setInterval(() => { this.reconcile() }, 10_000)
    this.timer.unref()
    this.reconcile()
  }

  async stop (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.d.libp2p.removeEventListener('peer:identify', this.onIdentify)
    const pubsub = this.d.libp2p.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    pubsub.topicValidators.delete(this.topic)
    await this.d.libp2p.unhandle(ASSIGN_PROTOCOL).catch(() => {})
  }

  private encodeAll (): Uint8Array {
    return dagCbor.encode([...this.assignments.values()].map(encodeAssignment))
  }

  /** Late joiners pull the assignments of a peer when they connect. */
  private readonly onIdentify = (evt: CustomEvent<{ peerId: { toString: () => string }, protocols: string[] }>): void => {
    if (!evt.detail.protocols.includes(ASSIGN_PROTOCOL)) return
    void (async () => {
      try {
        const stream = await this.d.libp2p.dialProtocol(peerIdFromString(evt.detail.peerId.toString()), ASSIGN_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
        const decoder = new FrameDecoder(1024 * 1024)
        for await (const chunk of stream) {
          const [frame] = decoder.push(chunk)
          if (frame === undefined) continue
          const list = dagCbor.decode(frame.subarray()) as unknown
          if (Array.isArray(list)) for (const item of list.slice(0, 1024)) if (item instanceof Uint8Array) await this.accept(item)
          break
        }
        await stream.close().catch(() => {})
      } catch (err) {
        log.debug('assignment pull failed', { error: (err as Error).message })
      }
    })()
  }

  private readonly onMessage = (evt: CustomEvent<{ topic: string, data: Uint8Array }>): void => {
    if (evt.detail.topic !== this.topic) return
    void this.accept(evt.detail.data)
  }

  private async accept (bytes: Uint8Array): Promise<void> {
    let a: Assignment
    try { a = decodeAssignment(bytes, this.d.store.trust.set) } catch (err) { this.rejected++; log.warn('ignored an assignment', { error: (err as Error).message }); return }
    const have = this.assignments.get(a.body.group)
    if (have !== undefined && have.body.time >= a.body.time) return
    this.assignments.set(a.body.group, a)
    await this.save()
    log.info('assignment', { group: a.body.group, image: a.body.image, number: a.body.number, policy: a.body.policy })
    this.lastFired = null
    this.reconcile()
  }

  private async save (): Promise<void> {
    const out: Record<string, string> = {}
    for (const [g, a] of this.assignments) out[g] = Buffer.from(encodeAssignment(a)).toString('base64')
    await writeJson(this.file, out)
  }

  /** `imgmesh assign`: signs an assignment with this node's publisher key and gossips it. */
  async assign (body: Omit<AssignmentBody, 'publisher' | 'time'>): Promise<AssignmentBody> {
    if (body.policy === 'apply-at') new Schedule(body.at ?? '')
    const key = await this.d.store.publisherKey()
    if (!this.d.store.trust.has(key.publicHex)) throw new ImgmeshError('EUNTRUSTED', 'this node\'s publisher key is not trusted by its own cluster configuration; others would refuse the assignment')
    const a = signAssignment({ ...body, time: Date.now() }, key.privateKey)
    const bytes = encodeAssignment(a)
    await this.accept(bytes)
    await this.d.libp2p.services.pubsub.publish(this.topic, bytes).catch((err: unknown) => { log.debug('assignment publish', { error: (err as Error).message }) })
    return a.body
  }

  list (): AssignmentBody[] { return [...this.assignments.values()].map(a => a.body) }

  /** The assignment that applies to this node: the first of its groups that has one. */
  mine (): Assignment | null {
    for (const g of this.d.groups) {
      const a = this.assignments.get(g)
      if (a !== undefined) return a
    }
    return null
  }

  /** A version was learnt: if this node follows its image, stage it (and apply per policy). */
  onVersion (image: string): void {
    const assigned = this.mine()?.body.image
    if (assigned === undefined) return
    if (image === assigned) { this.reconcile(); return }
    // A new override for this node: apply again (the base did not change).
    if (overrideNames(assigned, this.d.facts).includes(image)) {
      if (this.state === 'applied' || this.state === 'failed') this.state = 'staged'
      this.reconcile()
    }
  }

  private reconcile (): void {
    this.running = this.running.then(async () => { await this.step() }).catch((err: unknown) => {
      this.state = 'failed'
      this.error = (err as Error).message
      log.warn('update failed', { error: this.error })
    })
  }

  private async step (): Promise<void> {
    const a = this.mine()
    if (a === null) return
    const spec = a.body.number === undefined ? a.body.image : `${a.body.image}@${a.body.number}`
    let resolved: ResolvedVersion
    try { resolved = await this.d.store.resolve(spec) } catch { return }
    const changed = this.desired === null || !this.desired.cid.equals(resolved.cid)
    this.desired = resolved
    if (changed) { this.state = 'idle'; this.error = null }
    if (this.state === 'failed' || this.state === 'applied' || this.state === 'applying') {
      if (!changed) return
    }
    // Stage: every piece into the store, from the swarm.
    if (this.state === 'idle' || this.state === 'staging') {
      this.state = 'staging'
      const fetcher = await this.d.fetch(resolved)
      await fetcher.done
      this.state = 'staged'
    }
    if (a.body.policy === 'stage') return
    if (a.body.policy === 'apply-at') {
      if (!new Schedule(a.body.at ?? 'now').due(new Date(), this.lastFired)) return
      this.lastFired = Date.now()
    }
    const target = this.d.target
    if (target === undefined) { this.state = 'failed'; this.error = 'assigned to apply, but the agent has no --target'; return }
    const current = await readTargetState(this.d.store.targetsDir, target)
    const overrides = await this.overridesFor(resolved.version.body.image)
    const key = [resolved.cid, ...overrides.map(o => o.cid)].map(c => c.toString()).join(' ')
    if (current.inProgress === undefined && current.deployed !== undefined && (await this.composedKey(current.deployed.cid)) === key) { this.state = 'applied'; return }
    await this.apply(resolved, overrides, target)
  }

  /** The override images of this node for an image, newest version of each, staged. */
  private async overridesFor (image: string): Promise<ResolvedVersion[]> {
    const out: ResolvedVersion[] = []
    for (const name of overrideNames(image, this.d.facts)) {
      let o: ResolvedVersion
      try { o = await this.d.store.resolve(name) } catch { continue }
      await (await this.d.fetch(o)).done
      out.push(o)
    }
    return out
  }

  /** What a deployed version was made of: itself, or (a composition signed here) its parents. */
  private async composedKey (cid: CID): Promise<string> {
    try {
      const v = await this.d.store.getVersion(cid)
      const own = v.body.author === (await this.d.store.publisherKey()).publicHex
      if (own && (await this.d.store.refs.get(v.body.image, v.body.number))?.equals(cid) !== true) return v.body.parents.map(p => p.toString()).join(' ')
    } catch {}
    return cid.toString()
  }

  private async apply (resolved: ResolvedVersion, overrides: ResolvedVersion[], target: string): Promise<void> {
    const { body } = resolved.version
    this.state = 'applying'
    const fetcher = await this.d.fetch(resolved)
    const tree = fetcher.tree
    if (tree === null) throw new ImgmeshError('EBADTREE', 'tree not loaded')
    // The base, then this node's overrides, then its templates.
    const composed = await compose(this.d.store, resolved, overrides, this.d.facts, tree)
    this.lastOverrides = composed.overrides
    const composedTree = composed.resolved === resolved ? tree : await loadTree(this.d.store.blocks, composed.resolved.version.body.tree, { reuse: [tree] })
    const env = { IMGMESH_TARGET: target, IMGMESH_IMAGE: body.image, IMGMESH_VERSION: String(body.number), IMGMESH_HOST: hostname() }
    const logFile = join(this.d.store.dataDir, 'hooks.log')
    const stagingDir = this.hookStaging
    this.lastHooks = await runHooks(composedTree, this.d.store.blocks, { target, stage: 'pre-apply', env, timeoutMs: this.d.hookTimeoutMs, logFile, stagingDir })
    await this.d.deploy(composed.resolved, { target, excludes: [...DEFAULT_UPDATE_EXCLUDES] })
    this.lastHooks.push(...await runHooks(composedTree, this.d.store.blocks, { target, stage: 'post-apply', env, timeoutMs: this.d.hookTimeoutMs, logFile, stagingDir }))
    this.state = 'applied'
    log.info('applied', { image: body.image, number: body.number, target })
  }

  /** Waits for the current reconcile step (tests, shutdown). */
  async settled (): Promise<void> { await this.running }

  async status (): Promise<UpdateStatus> {
    const target = this.d.target ?? null
    const st = target === null ? null : await readTargetState(this.d.store.targetsDir, target)
    return {
      groups: this.d.groups,
      target,
      assignment: this.mine()?.body ?? null,
      desired: this.desired === null ? null : { image: this.desired.version.body.image, number: this.desired.version.body.number },
      deployed: st?.deployed === undefined ? null : { image: st.deployed.image, number: st.deployed.number },
      interrupted: st?.inProgress === undefined ? null : { image: st.inProgress.image, number: st.inProgress.number },
      state: this.state,
      error: this.error,
      hooks: this.lastHooks,
      overrides: this.lastOverrides
    }
  }
}
