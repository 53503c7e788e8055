/**
 * Node status gossip: the message decoder refuses what it must (oversized, malformed, speaking
 * for another peer), fuzzed input never throws anything but ImgmeshError, and between agents a
 * status forged for another peer is rejected while genuine ones fill every table; a node that
 * stops leaves the others' tables after the expiry.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { ImgmeshError } from '../node/errors.ts'
import { decodeStatus, encodeStatus, MAX_STATUS_BYTES, type NodeStatus } from '../node/operator/status-message.ts'
import { OperatorSwarm, waitUntil } from './operator-swarm.ts'
import type { UpdatesLike } from '../node/operator/agent-view.ts'
import type { UpdateManager } from '../node/agent/updates.ts'

// The operator surface reads the update manager structurally: this fails to compile if they drift apart.
const updatesCompatible: UpdateManager extends UpdatesLike ? true : never = true

const PEER = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'

function sample (over: Partial<NodeStatus> = {}): NodeStatus {
  return {
    v: 1,
    peer: PEER,
    host: 'node-01',
    groups: ['lab1'],
    time: Date.now(),
    uptime: 12.5,
    state: 'applying',
    assigned: { image: 'debian12', number: 3, policy: 'apply' },
    staged: { image: 'debian12', number: 3 },
    deployed: [{ target: '/', image: 'debian12', number: 2 }],
    held: [{ image: 'debian12', number: 3, percent: 42.5 }],
    transfers: [{ image: 'debian12', number: 3, target: '/', state: 'fetching', have: 10, pieces: 20, bytes: 1000, totalBytes: 2000, rate: 512.5, peers: 3 }],
    traffic: { sent: 1, received: 2, up: 0, down: 3.5, blocksServed: 0, blocksFetched: 4, badBlocks: 0 },
    peers: 5,
    ...over
  }
}

const refuse = (bytes: Uint8Array, signer = PEER): void => {
  assert.throws(() => decodeStatus(bytes, signer), (e: unknown) => e instanceof ImgmeshError && e.code === 'EPROTOCOL')
}
const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))

test('a node status round-trips and unknown fields are dropped', () => {
  assert.equal(updatesCompatible, true)
  const s = sample({ error: 'disk full' })
  assert.deepEqual(decodeStatus(encodeStatus(s), PEER), s)
  assert.deepEqual(decodeStatus(enc({ ...s, extra: 'x' }), PEER), s)
})

test('the decoder refuses what it must', () => {
  refuse(encodeStatus(sample()), '12D3KooWSomebodyElse')
  refuse(enc({ ...sample(), v: 2 }))
  refuse(enc({ ...sample(), state: 'exploding' }))
  refuse(enc({ ...sample(), groups: ['bad group'] }))
  refuse(enc({ ...sample(), groups: Array.from({ length: 17 }, (_, i) => `g${i}`) }))
  refuse(enc({ ...sample(), host: 'a\nb' }))
  refuse(enc({ ...sample(), held: [{ image: '../etc', number: 1, percent: 1 }] }))
  refuse(enc({ ...sample(), held: [{ image: 'x', number: 0, percent: 1 }] }))
  refuse(enc({ ...sample(), held: [{ image: 'x', number: 1, percent: 101 }] }))
  refuse(enc({ ...sample(), traffic: { ...sample().traffic, sent: -1 } }))
  refuse(enc({ ...sample(), transfers: [{ ...sample().transfers[0], rate: 'fast' }] }))
  refuse(enc({ ...sample(), held: Array.from({ length: 65 }, (_, i) => ({ image: 'x', number: i + 1, percent: 1 })) }))
  refuse(enc([1, 2, 3]))
  refuse(new Uint8Array([0xff, 0xfe, 0x00]))
  refuse(new TextEncoder().encode('{"v":1,"peer":"' + 'x'.repeat(MAX_STATUS_BYTES) + '"}'))
  assert.throws(() => encodeStatus(sample({ error: 'x'.repeat(MAX_STATUS_BYTES) })), ImgmeshError)
})

test('fuzzed input: only ImgmeshError, never a crash', () => {
  fc.assert(fc.property(fc.jsonValue(), fc.uint8Array({ maxLength: 256 }), (value, bytes) => {
    for (const input of [enc(value), bytes, enc({ ...sample(), held: value }), enc({ ...sample(), traffic: value })]) {
      try { decodeStatus(input, PEER) } catch (err) { if (!(err instanceof ImgmeshError)) throw err }
    }
  }), { numRuns: 500 })
})

let work: string
let swarm: OperatorSwarm
before(async () => {
  work = await mkdtemp(join(tmpdir(), 'imgmesh-status-'))
  swarm = new OperatorSwarm(join(work, 'nodes'))
})
after(async () => {
  await swarm.stopAll()
  await rm(work, { recursive: true, force: true })
})

test('agents learn every node by gossip, reject forged status, expire silent nodes', { timeout: 90_000 }, async () => {
  const opts = { statusIntervalMs: 500, statusExpireMs: 3000 }
  const a = await swarm.add('a', { operator: { ...opts, groups: ['head'] } })
  const b = await swarm.add('b', { operator: { ...opts, groups: ['lab1'] } })
  const c = await swarm.add('c', { operator: opts })
  await waitUntil('every table has 3 nodes', () => [a, b, c].every(n => n.surface.gossip.nodes().length === 3), 30_000)
  const seenByC = c.surface.gossip.nodes().find(n => n.status.peer === a.agent.identity.peerId)
  assert.ok(seenByC !== undefined)
  assert.deepEqual(seenByC.status.groups, ['head'])
  assert.ok(Math.abs(seenByC.offsetMs) < 2000, `clock offset ${seenByC.offsetMs}`)
  assert.equal(c.surface.gossip.nodes()[0].self, true)

  // b publishes a status that claims to be a: signed by b, so rejected (and not forwarded).
  const rejectedBefore = a.surface.gossip.rejected + c.surface.gossip.rejected
  const forged = sample({ peer: a.agent.identity.peerId, host: 'forged', time: Date.now() + 60_000 })
  await b.agent.swarm.libp2p.services.pubsub.publish(b.surface.gossip.topic, encodeStatus(forged))
  await waitUntil('the forgery is rejected', () => a.surface.gossip.rejected + c.surface.gossip.rejected > rejectedBefore, 10_000)
  assert.ok(c.surface.gossip.nodes().every(n => n.status.host !== 'forged'))

  // c stops: it leaves the others' tables after the expiry.
  const cPeer = c.agent.identity.peerId
  await c.surface.stop()
  await waitUntil('c expires from a', () => !a.surface.gossip.nodes().some(n => n.status.peer === cPeer), 15_000)
  assert.ok(a.surface.gossip.nodes().some(n => n.status.peer === b.agent.identity.peerId))
})

test('status pace: longer intervals in a larger swarm; an unchanged status goes out only every few intervals, a change at the next one', { timeout: 90_000 }, async () => {
  const { capture } = await import('../node/image/capture.ts')
  const { mkdir, writeFile } = await import('node:fs/promises')
  const { SHARE_MS, UNCHANGED_EVERY } = await import('../node/operator/status-gossip.ts')
  const opts = { statusIntervalMs: 300, statusExpireMs: 3000 }
  const a = await swarm.add('pa', { operator: opts })
  const b = await swarm.add('pb', { operator: opts })
  await waitUntil('both know each other', () => [a, b].every(n => n.surface.gossip.nodes().some(e => !e.self)), 30_000)
  // Both tables hold every node started in this file that is still up: at least the two.
  const size = b.surface.gossip.nodes().length
  assert.ok(size >= 2)
  assert.equal(b.surface.gossip.currentIntervalMs(), Math.max(300, size * SHARE_MS))
  assert.ok(b.surface.gossip.currentExpireMs() >= 2 * UNCHANGED_EVERY * b.surface.gossip.currentIntervalMs())

  // Idle: a's status does not change, so b hears it about every UNCHANGED_EVERY intervals.
  await new Promise(resolve => setTimeout(resolve, 2000))
  const interval = a.surface.gossip.currentIntervalMs()
  const before = b.surface.gossip.received
  const windowMs = 6000
  await new Promise(resolve => setTimeout(resolve, windowMs))
  const heard = b.surface.gossip.received - before
  const everyInterval = windowMs / interval
  assert.ok(heard <= Math.ceil(windowMs / (UNCHANGED_EVERY * interval - SHARE_MS)) * (size - 1) + 1, `b heard ${heard} statuses in ${windowMs} ms from ${size - 1} idle nodes (every interval would be ${everyInterval.toFixed(1)} each)`)
  assert.ok(b.surface.gossip.nodes().some(e => e.status.peer === a.agent.identity.peerId), 'a stays in b\'s table while idle')

  // A change (a now holds a version) reaches b at a's next interval, not at the slow pace.
  const golden = join(work, 'pace-golden')
  await mkdir(golden, { recursive: true })
  await writeFile(join(golden, 'f'), 'pace')
  const t0 = Date.now()
  await capture(a.agent.store, { source: golden, image: 'pace', defaultExcludes: false, message: 'pace test' })
  await waitUntil('b sees a holding the new version', () => b.surface.gossip.nodes().some(e => e.status.peer === a.agent.identity.peerId && e.status.held.some(h => h.image === 'pace')), 20_000, 50)
  assert.ok(Date.now() - t0 < 2 * interval + 2000, `the change took ${Date.now() - t0} ms to arrive (interval ${interval} ms)`)
})

test('status pace while blocks move: progress alone waits for BUSY_EVERY intervals, a change of state goes out at once', async () => {
  const { shouldPublish, BUSY_EVERY, UNCHANGED_EVERY, SHARE_MS } = await import('../node/operator/status-gossip.ts')
  const intervalMs = 10_000
  const at = (intervals: number): number => intervals * intervalMs
  // Idle: a change goes out at the next turn, an unchanged status every UNCHANGED_EVERY intervals.
  assert.equal(shouldPublish({ sinceMs: at(1), intervalMs, busy: false, changed: true, stateChanged: false }), true)
  assert.equal(shouldPublish({ sinceMs: at(1), intervalMs, busy: false, changed: false, stateChanged: false }), false)
  assert.equal(shouldPublish({ sinceMs: at(UNCHANGED_EVERY), intervalMs, busy: false, changed: false, stateChanged: false }), true)
  // Busy: progress waits for BUSY_EVERY intervals (less the timer's slack), then goes out.
  for (let k = 1; k < BUSY_EVERY; k++) {
    assert.equal(shouldPublish({ sinceMs: at(k), intervalMs, busy: true, changed: true, stateChanged: false }), false, `progress after ${k} interval(s)`)
  }
  assert.equal(shouldPublish({ sinceMs: at(BUSY_EVERY) - SHARE_MS, intervalMs, busy: true, changed: true, stateChanged: false }), true)
  // Busy: a transfer finished or failed, a version deployed: at once.
  assert.equal(shouldPublish({ sinceMs: at(1), intervalMs, busy: true, changed: true, stateChanged: true }), true)
})
