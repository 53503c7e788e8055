/**
 * What imgmesh knows about a target: the version deployed there (recorded only when a deploy
 * finished), the one before it (for rollback), and a deploy in progress (so a target left
 * between versions is never mistaken for a finished one). One JSON file per target under the
 * data dir, keyed by the target's real path.
 */
import { createHash } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import { readJson, writeJson } from '../store/json-file.ts'
import { isErrno } from '../errors.ts'

export interface DeployedVersion {
  image: string
  number: number
  cid: CID
  tree: CID
  at: string
  excludes: string[]
  /** Deployed with --no-delete: the target may hold more than the version. */
  kept?: boolean
}

export interface TargetState {
  target: string
  deployed?: DeployedVersion
  previous?: DeployedVersion
  inProgress?: DeployedVersion
}

interface RawVersion { image: string, number: number, cid: string, tree: string, at: string, excludes: string[], kept?: boolean }
interface RawState { target: string, deployed?: RawVersion, previous?: RawVersion, inProgress?: RawVersion }

function parseVersion (r: RawVersion | undefined): DeployedVersion | undefined {
  if (r === undefined) return undefined
  const v: DeployedVersion = { image: r.image, number: r.number, cid: CID.parse(r.cid), tree: CID.parse(r.tree), at: r.at, excludes: r.excludes ?? [] }
  if (r.kept === true) v.kept = true
  return v
}

function rawVersion (v: DeployedVersion | undefined): RawVersion | undefined {
  if (v === undefined) return undefined
  const r: RawVersion = { image: v.image, number: v.number, cid: v.cid.toString(), tree: v.tree.toString(), at: v.at, excludes: v.excludes }
  if (v.kept === true) r.kept = true
  return r
}

export function stateFile (targetsDir: string, realTarget: string): string {
  return join(targetsDir, createHash('sha256').update(realTarget).digest('hex').slice(0, 32) + '.json')
}

export async function readTargetState (targetsDir: string, realTarget: string): Promise<TargetState> {
  const raw = await readJson<RawState>(stateFile(targetsDir, realTarget))
  if (raw === null) return { target: realTarget }
  return { target: raw.target, deployed: parseVersion(raw.deployed), previous: parseVersion(raw.previous), inProgress: parseVersion(raw.inProgress) }
}

export async function writeTargetState (targetsDir: string, state: TargetState): Promise<void> {
  const raw: RawState = { target: state.target }
  if (state.deployed !== undefined) raw.deployed = rawVersion(state.deployed)
  if (state.previous !== undefined) raw.previous = rawVersion(state.previous)
  if (state.inProgress !== undefined) raw.inProgress = rawVersion(state.inProgress)
  await writeJson(stateFile(targetsDir, state.target), raw)
}

export async function listTargetStates (targetsDir: string): Promise<TargetState[]> {
  let files: string[]
  try { files = await readdir(targetsDir) } catch (err) { if (isErrno(err, 'ENOENT')) return []; throw err }
  const out: TargetState[] = []
  for (const f of files.filter(f => f.endsWith('.json'))) {
    const raw = await readJson<RawState>(join(targetsDir, f))
    if (raw === null) continue
    out.push({ target: raw.target, deployed: parseVersion(raw.deployed), previous: parseVersion(raw.previous), inProgress: parseVersion(raw.inProgress) })
  }
  return out
}
