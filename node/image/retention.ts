/**
 * Retention: keep the newest K versions of every image, plus every version a target runs or
 * ran before (rollback) or is being deployed, plus whatever the caller pins (assignments).
 * Older versions lose their refs; `ImageStore.gc()` then removes the blocks nobody references.
 */
import type { ImageStore } from './image-store.ts'
import { listTargetStates } from '../target/target-state.ts'
import { ImgmeshError } from '../errors.ts'

export interface PruneResult { removed: Array<{ image: string, number: number }>, kept: number }

export async function pruneVersions (store: ImageStore, keep: number, pinned: ReadonlyArray<{ image: string, number?: number }> = []): Promise<PruneResult> {
  if (!Number.isInteger(keep) || keep < 1) throw new ImgmeshError('EBADARG', `--keep must be at least 1 (got ${keep})`)
  const protect = new Set<string>()
  for (const s of await listTargetStates(store.targetsDir)) {
    for (const v of [s.deployed, s.previous, s.inProgress]) if (v !== undefined) protect.add(v.cid.toString())
  }
  const out: PruneResult = { removed: [], kept: 0 }
  for (const image of await store.refs.images()) {
    const versions = await store.refs.versions(image)
    const newest = versions.slice(-keep)
    for (const v of versions) {
      const pin = pinned.some(p => p.image === image && (p.number === undefined ? v === versions[versions.length - 1] : p.number === v.number))
      if (newest.includes(v) || pin || protect.has(v.cid.toString())) { out.kept++; continue }
      await store.refs.remove(image, v.number)
      out.removed.push({ image, number: v.number })
    }
  }
  return out
}
