/**
 * The node status message every agent gossips every few seconds: who it is, what it runs, what
 * it holds, what it is fetching and how fast. JSON (UTF-8), at most MAX_STATUS_BYTES; gossipsub
 * signs each message with the sender's peer key (StrictSign), and the decoder insists that the
 * `peer` field names that signer, so no node can speak for another.
 *
 *   { v: 1, peer, host, groups: [..], time, uptime, state, error?,
 *     assigned: { image, number?, policy } | null, staged: { image, number } | null,
 *     deployed: [{ target, image, number }], held: [{ image, number, percent }],
 *     transfers: [{ image, number, target, state, have, pieces, bytes, totalBytes, rate, peers }],
 *     traffic: { sent, received, up, down, blocksServed, blocksFetched, badBlocks }, peers }
 */
import { ImgmeshError } from '../errors.ts'

export const STATUS_TOPIC = '/imgmesh/status/1'
export const MAX_STATUS_BYTES = 16 * 1024
export const MAX_HELD = 64
export const MAX_DEPLOYED = 8
export const MAX_TRANSFERS = 16
export const MAX_GROUPS = 16

export type NodeState = 'idle' | 'staging' | 'staged' | 'applying' | 'failed'
export const NODE_STATES: readonly NodeState[] = ['idle', 'staging', 'staged', 'applying', 'failed']

export interface VersionRefLite { image: string, number: number }
export interface Assigned { image: string, number?: number, policy: string }
export interface DeployedLite { target: string, image: string, number: number }
export interface HeldLite { image: string, number: number, percent: number }
export interface Transfer {
  image: string
  number: number
  target: string
  state: string
  have: number
  pieces: number
  bytes: number
  totalBytes: number
  /** Bytes per second over the last few seconds. */
  rate: number
  peers: number
}
export interface TrafficLite {
  /** Block-protocol bytes since the agent started. */
  sent: number
  received: number
  /** Bytes per second over the last few seconds. */
  up: number
  down: number
  blocksServed: number
  blocksFetched: number
  badBlocks: number
}

export interface NodeStatus {
  v: 1
  peer: string
  host: string
  groups: string[]
  /** Sender's clock, ms since the epoch. */
  time: number
  uptime: number
  state: NodeState
  error?: string
  assigned: Assigned | null
  staged: VersionRefLite | null
  deployed: DeployedLite[]
  held: HeldLite[]
  transfers: Transfer[]
  traffic: TrafficLite
  peers: number
}

function fail (why: string): never {
  throw new ImgmeshError('EPROTOCOL', `invalid node status: ${why}`)
}

const IMAGE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/
const GROUP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
// Printable text without control characters (host names, paths, error lines).
const TEXT = /^[^\u0000-\u001f\u007f]*$/

function obj (v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${what} is not an object`)
  return v as Record<string, unknown>
}
function arr (v: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(v)) fail(`${what} is not a list`)
  if (v.length > max) fail(`${what} has more than ${max} entries`)
  return v
}
function uint (v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${what} is not a whole number`)
  return v
}
function num (v: unknown, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > max) fail(`${what} is not a number in range`)
  return v
}
function text (v: unknown, what: string, max: number): string {
  if (typeof v !== 'string' || v.length > max || !TEXT.test(v)) fail(`${what} is not short printable text`)
  return v
}
function image (v: unknown, what: string): string {
  if (typeof v !== 'string' || !IMAGE.test(v)) fail(`${what} is not an image name`)
  return v
}
function version (v: unknown, what: string): number {
  const n = uint(v, what)
  if (n < 1) fail(`${what} is not a version number`)
  return n
}
function ref (v: unknown, what: string): VersionRefLite {
  const o = obj(v, what)
  return { image: image(o.image, `${what}.image`), number: version(o.number, `${what}.number`) }
}

export function encodeStatus (s: NodeStatus): Uint8Array {
  const bytes = new TextEncoder().encode(JSON.stringify(s))
  if (bytes.length > MAX_STATUS_BYTES) throw new ImgmeshError('EPROTOCOL', `node status of ${bytes.length} bytes is over the ${MAX_STATUS_BYTES}-byte limit`)
  return bytes
}

/**
 * Decodes and checks a status message. `signer` is the peer id gossipsub verified the message's
 * signature with; the status must speak for that peer only. Unknown fields are dropped.
 */
export function decodeStatus (bytes: Uint8Array, signer: string): NodeStatus {
  if (bytes.length > MAX_STATUS_BYTES) fail(`over ${MAX_STATUS_BYTES} bytes`)
  let raw: unknown
  try { raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) } catch { fail('not UTF-8 JSON') }
  const o = obj(raw, 'status')
  if (o.v !== 1) fail('unknown version')
  const peer = text(o.peer, 'peer', 128)
  if (peer !== signer) fail(`speaks for ${peer} but is signed by ${signer}`)
  const state = o.state as NodeState
  if (!NODE_STATES.includes(state)) fail('unknown state')
  const groups = arr(o.groups, 'groups', MAX_GROUPS).map((g, i) => {
    if (typeof g !== 'string' || !GROUP.test(g)) fail(`groups[${i}] is not a group name`)
    return g
  })
  let assigned: Assigned | null = null
  if (o.assigned !== null) {
    const a = obj(o.assigned, 'assigned')
    assigned = { image: image(a.image, 'assigned.image'), policy: text(a.policy, 'assigned.policy', 16) }
    if (a.number !== undefined) assigned.number = version(a.number, 'assigned.number')
  }
  const t = obj(o.traffic, 'traffic')
  const status: NodeStatus = {
    v: 1,
    peer,
    host: text(o.host, 'host', 255),
    groups,
    time: uint(o.time, 'time'),
    uptime: num(o.uptime, 'uptime'),
    state,
    assigned,
    staged: o.staged === null ? null : ref(o.staged, 'staged'),
    deployed: arr(o.deployed, 'deployed', MAX_DEPLOYED).map((d, i) => {
      const x = obj(d, `deployed[${i}]`)
      return { target: text(x.target, `deployed[${i}].target`, 512), ...ref(x, `deployed[${i}]`) }
    }),
    held: arr(o.held, 'held', MAX_HELD).map((h, i) => {
      const x = obj(h, `held[${i}]`)
      return { ...ref(x, `held[${i}]`), percent: num(x.percent, `held[${i}].percent`, 100) }
    }),
    transfers: arr(o.transfers, 'transfers', MAX_TRANSFERS).map((tr, i) => {
      const x = obj(tr, `transfers[${i}]`)
      const w = `transfers[${i}]`
      return {
        ...ref(x, w),
        target: text(x.target, `${w}.target`, 512),
        state: text(x.state, `${w}.state`, 16),
        have: uint(x.have, `${w}.have`),
        pieces: uint(x.pieces, `${w}.pieces`),
        bytes: uint(x.bytes, `${w}.bytes`),
        totalBytes: uint(x.totalBytes, `${w}.totalBytes`),
        rate: num(x.rate, `${w}.rate`),
        peers: uint(x.peers, `${w}.peers`)
      }
    }),
    traffic: {
      sent: uint(t.sent, 'traffic.sent'),
      received: uint(t.received, 'traffic.received'),
      up: num(t.up, 'traffic.up'),
      down: num(t.down, 'traffic.down'),
      blocksServed: uint(t.blocksServed, 'traffic.blocksServed'),
      blocksFetched: uint(t.blocksFetched, 'traffic.blocksFetched'),
      badBlocks: uint(t.badBlocks, 'traffic.badBlocks')
    },
    peers: uint(o.peers, 'peers')
  }
  if (o.error !== undefined) status.error = text(o.error, 'error', 300)
  return status
}
