/**
 * How versions travel between agents: a heads exchange on every new connection (each side
 * sends the newest signed version of every image it knows, so an agent that was down catches
 * up within seconds) and gossip announcements of new versions, validated before they are
 * forwarded (an invalid one is rejected, which scores its sender down).
 */
import type { CID } from 'multiformats/cid'
import { peerIdFromString } from '@libp2p/peer-id'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { SwarmLibp2p } from '../swarm/libp2p-node.ts'
import type { ImageStore } from '../image/image-store.ts'
import { HEADS_PROTOCOL, MAX_HEADS, exchangeHeads, verifyHead, versionCidOf, type Head, type HeadsMessage } from '../../protocols/heads/heads.ts'
import { ANNOUNCE_TOPIC, checkAnnouncement, encodeAnnouncement, signAnnouncement } from '../../protocols/announce/announce.ts'
import { decodeVersion, type SignedVersion } from '../../protocols/version.ts'
import { DAG_CBOR_CODE } from '../store/cid.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('versions')
const HEADS_TIMEOUT_MS = 10_000
/** A failed heads exchange is tried this many times in all, HEADS_RETRY_MS × attempt apart. */
const HEADS_ATTEMPTS = 3
const HEADS_RETRY_MS = 1000

export interface LearntVersion { cid: CID, version: SignedVersion, from: string, via: 'heads' | 'gossip' }

/** Order of two versions with the same number: earlier capture first, then smaller CID. */
export function versionOrder (createdA: string, cidA: string, createdB: string, cidB: string): number {
  const ta = Date.parse(createdA)
  const tb = Date.parse(createdB)
  if (ta !== tb) return ta - tb
  return cidA < cidB ? -1 : cidA > cidB ? 1 : 0
}

export interface VersionConflict { image: string, number: number, kept: string, refused: string, refusedAuthor: string, at: string }

export class VersionSync {
  private readonly libp2p: SwarmLibp2p
  private readonly store: ImageStore
  private readonly topic: string
  private readonly onLearnt: (v: LearntVersion) => void
  rejected = 0
  /** Concurrent publishes of the same number seen by this node (newest last). */
  readonly conflicts: VersionConflict[] = []
  private stopped = false

  constructor (libp2p: SwarmLibp2p, store: ImageStore, clusterId: string, onLearnt: (v: LearntVersion) => void) {
    this.libp2p = libp2p
    this.store = store
    this.topic = `${ANNOUNCE_TOPIC}/${clusterId.slice(0, 16)}`
    this.onLearnt = onLearnt
  }

  async start (): Promise<void> {
    await this.libp2p.handle(HEADS_PROTOCOL, (stream, connection) => {
      void (async () => {
        try {
          const theirs = await exchangeHeads(stream, await this.localHeads(), { signal: AbortSignal.timeout(HEADS_TIMEOUT_MS) })
          await this.importHeads(theirs, connection.remotePeer.toString())
        } catch (err) {
          log.debug('heads exchange failed', { peer: connection.remotePeer.toString(), error: (err as Error).message })
          stream.abort(err as Error)
        }
      })()
    })
    this.libp2p.addEventListener('peer:identify', this.onIdentify)
    const pubsub = this.libp2p.services.pubsub
    pubsub.topicValidators.set(this.topic, (peer, msg) => {
      const check = checkAnnouncement(msg.data, this.store.trust.set)
      if (!check.ok) {
        this.rejected++
        log.warn('rejected an announcement', { from: peer.toString(), error: check.error.message })
        return TopicValidatorResult.Reject
      }
      return TopicValidatorResult.Accept
    })
    pubsub.addEventListener('message', this.onMessage)
    pubsub.subscribe(this.topic)
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.libp2p.removeEventListener('peer:identify', this.onIdentify)
    const pubsub = this.libp2p.services.pubsub
    pubsub.removeEventListener('message', this.onMessage)
    pubsub.topicValidators.delete(this.topic)
    await this.libp2p.unhandle(HEADS_PROTOCOL).catch(() => {})
  }

  private readonly onIdentify = (evt: CustomEvent<{ peerId: { toString: () => string }, protocols: string[] }>): void => {
    const peer = evt.detail.peerId.toString()
    if (!evt.detail.protocols.includes(HEADS_PROTOCOL)) return
    // One exchange per pair of peers: the smaller id asks.
    if (this.libp2p.peerId.toString() > peer) return
    void this.syncWith(peer)
  }

  /**
   * Exchanges heads with one peer now. A failed exchange (the stream reset or ended early, a
   * timeout) is tried again a little later, a few times: it is the only exchange of that pair
   * until one of them reconnects.
   */
  async syncWith (peer: string): Promise<boolean> {
    for (let attempt = 0; attempt < HEADS_ATTEMPTS; attempt++) {
      if (attempt > 0) await new Promise(resolve => setTimeout(resolve, HEADS_RETRY_MS * attempt))
      if (this.stopped) return false
      try {
        const stream = await this.libp2p.dialProtocol(peerIdFromString(peer), HEADS_PROTOCOL, { signal: AbortSignal.timeout(HEADS_TIMEOUT_MS) })
        const theirs = await exchangeHeads(stream, await this.localHeads(), { signal: AbortSignal.timeout(HEADS_TIMEOUT_MS) })
        await this.importHeads(theirs, peer)
        return true
      } catch (err) {
        log.debug('heads exchange failed', { peer, attempt, error: (err as Error).message })
      }
    }
    return false
  }

  /** Exchanges heads with every connected peer now: how many are connected, how many answered. */
  async syncAll (): Promise<{ peers: number, answered: number }> {
    const peers = this.libp2p.getPeers()
    const ok = await Promise.all(peers.map(async p => await this.syncWith(p.toString())))
    return { peers: peers.length, answered: ok.filter(Boolean).length }
  }

  private async localHeads (): Promise<HeadsMessage> {
    const heads: Head[] = []
    // Every kept version, newest first, so that a peer can deploy an older one by number too.
    for (const image of await this.store.refs.images()) {
      for (const ref of (await this.store.refs.versions(image)).reverse()) {
        if (heads.length >= MAX_HEADS) break
        try {
          heads.push({ image, number: ref.number, cid: ref.cid, version: await this.store.blocks.get(ref.cid) })
        } catch {}
      }
    }
    return { heads }
  }

  private async importHeads (msg: HeadsMessage, from: string): Promise<void> {
    for (const head of msg.heads) {
      try {
        verifyHead(head, this.store.trust.set)
        await this.learn(head.version!, from, 'heads')
      } catch (err) {
        log.warn('ignored a head', { from, image: head.image, number: head.number, error: (err as Error).message })
      }
    }
  }

  private async learn (bytes: Uint8Array, from: string, via: 'heads' | 'gossip'): Promise<void> {
    const decoded = decodeVersion(bytes)
    const { image, number } = decoded.body
    const known = await this.store.refs.get(image, number)
    if (known !== null) {
      const cid = versionCidOf(bytes)
      if (known.toString() === cid.toString()) return
      // Two publishers made the same number concurrently. Every node keeps the same one: the
      // earlier capture (then the smaller CID); the other is refused everywhere, and shown.
      const mine = await this.store.getVersion(known)
      const incomingWins = versionOrder(decoded.body.created, cid.toString(), mine.body.created, known.toString()) < 0
      const kept = incomingWins ? cid : known
      const refused = incomingWins ? known : cid
      const refusedAuthor = incomingWins ? mine.body.author : decoded.body.author
      this.conflicts.push({ image, number, kept: kept.toString(), refused: refused.toString(), refusedAuthor, at: new Date().toISOString() })
      if (this.conflicts.length > 100) this.conflicts.shift()
      log.warn('two versions carry the same number; the earlier capture wins', { image, number, kept: kept.toString(), refused: refused.toString(), from })
      if (!incomingWins) return
      await this.store.blocks.put(bytes, DAG_CBOR_CODE)
      await this.store.refs.replace(image, number, cid)
      this.onLearnt({ cid, version: decoded, from, via })
      return
    }
    const { cid, version } = await this.store.importVersion(bytes)
    log.info('learnt version', { image, number, from, via })
    this.onLearnt({ cid, version, from, via })
  }

  private readonly onMessage = (evt: CustomEvent<{ topic: string, data: Uint8Array, from?: { toString: () => string } }>): void => {
    if (evt.detail.topic !== this.topic) return
    const check = checkAnnouncement(evt.detail.data, this.store.trust.set)
    if (!check.ok || check.announcement.version === undefined) return
    const from = evt.detail.from?.toString() ?? 'unknown'
    this.learn(check.announcement.version, from, 'gossip').catch((err: unknown) => {
      log.warn('could not record an announced version', { from, error: (err as Error).message })
    })
  }

  /** Announces a version to the swarm, with its delta against its parent. */
  async announce (cid: CID, version: SignedVersion, delta: { newChunks: number, newBytes: number }): Promise<number> {
    const key = await this.store.publisherKey()
    const bytes = await this.store.blocks.get(cid)
    const a = signAnnouncement({ image: version.body.image, number: version.body.number, cid, parents: version.body.parents, newChunks: delta.newChunks, newBytes: delta.newBytes, time: Date.now() }, key.privateKey, bytes)
    const r = await this.libp2p.services.pubsub.publish(this.topic, encodeAnnouncement(a))
    return r.recipients.length
  }
}

