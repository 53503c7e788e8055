/**
 * Assignments: which image (and version) a group of nodes runs, and how updates reach them.
 * Signed by a trusted publisher like versions, gossiped, and kept by every agent.
 *
 *   { v: { group, image, number?, policy: 'stage'|'apply'|'apply-at', at?, time, publisher }, s: signature }
 *
 * `number` absent means "the newest version". `at` (policy apply-at) is `now`, an ISO time, or a
 * five-field cron expression in the node's local time. A newer `time` replaces an older assignment.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { sign as edSign, verify as edVerify, createPublicKey, type KeyObject } from 'node:crypto'
import { ImgmeshError } from '../node/errors.ts'
import { isValidImageName, publicKeyFromHex, publicKeyToHex } from './version.ts'

export type Policy = 'stage' | 'apply' | 'apply-at'
export const POLICIES: readonly Policy[] = ['stage', 'apply', 'apply-at']
export const MAX_ASSIGNMENT = 4096
const GROUP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

export interface AssignmentBody {
  group: string
  image: string
  number?: number
  policy: Policy
  at?: string
  /** Publisher's clock, ms since the epoch: the newest assignment of a group wins. */
  time: number
  publisher: string
}

export interface Assignment { body: AssignmentBody, signature: Uint8Array }

export function isValidGroup (g: string): boolean { return GROUP.test(g) }

function fail (why: string): never {
  throw new ImgmeshError('EBADARG', `invalid assignment: ${why}`)
}

function raw (b: AssignmentBody): Record<string, unknown> {
  const r: Record<string, unknown> = { t: 'imgmesh-assign-1', group: b.group, image: b.image, policy: b.policy, time: b.time, publisher: b.publisher }
  if (b.number !== undefined) r.number = b.number
  if (b.at !== undefined) r.at = b.at
  return r
}

function check (b: AssignmentBody): void {
  if (!isValidGroup(b.group)) fail(`bad group name ${JSON.stringify(b.group)}`)
  if (!isValidImageName(b.image)) fail(`bad image name ${JSON.stringify(b.image)}`)
  if (b.number !== undefined && (!Number.isSafeInteger(b.number) || b.number < 1)) fail('bad version number')
  if (!POLICIES.includes(b.policy)) fail(`unknown policy ${String(b.policy)}`)
  if (b.policy === 'apply-at' && (b.at === undefined || b.at.length === 0 || b.at.length > 128)) fail('apply-at needs a time (now, ISO time or cron)')
  if (!Number.isSafeInteger(b.time) || b.time < 0) fail('bad time')
  if (!/^[0-9a-f]{64}$/.test(b.publisher)) fail('bad publisher key')
}

export function signAssignment (body: Omit<AssignmentBody, 'publisher'>, key: KeyObject): Assignment {
  const full: AssignmentBody = { ...body, publisher: publicKeyToHex(createPublicKey(key)) }
  check(full)
  return { body: full, signature: new Uint8Array(edSign(null, dagCbor.encode(raw(full)), key)) }
}

export function encodeAssignment (a: Assignment): Uint8Array {
  return dagCbor.encode({ v: raw(a.body), s: a.signature })
}

/** Decodes and checks an assignment: structure, signature, and that the publisher is trusted. */
export function decodeAssignment (bytes: Uint8Array, trusted: ReadonlySet<string>): Assignment {
  if (bytes.length > MAX_ASSIGNMENT) fail('too large')
  let r: unknown
  try { r = dagCbor.decode(bytes) } catch { fail('not dag-cbor') }
  if (typeof r !== 'object' || r === null) fail('not a map')
  const env = r as { v?: Record<string, unknown>, s?: unknown }
  const v = env.v
  if (typeof v !== 'object' || v === null || v.t !== 'imgmesh-assign-1') fail('not an assignment')
  if (!(env.s instanceof Uint8Array) || env.s.length !== 64) fail('bad signature')
  const body: AssignmentBody = {
    group: String(v.group), image: String(v.image), policy: v.policy as Policy, time: v.time as number, publisher: String(v.publisher)
  }
  if (v.number !== undefined) body.number = v.number as number
  if (v.at !== undefined) body.at = String(v.at)
  check(body)
  if (!trusted.has(body.publisher)) throw new ImgmeshError('EUNTRUSTED', `assignment for group ${body.group} is signed by an untrusted key ${body.publisher}`)
  if (!edVerify(null, dagCbor.encode(raw(body)), publicKeyFromHex(body.publisher), env.s)) throw new ImgmeshError('EBADSIGNATURE', `assignment for group ${body.group} has a bad signature`)
  return { body, signature: env.s }
}
