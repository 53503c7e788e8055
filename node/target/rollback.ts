/** Rollback: the version a target ran before its current one, to deploy again. */
import type { ImageStore } from '../image/image-store.ts'
import { prepareTarget } from './deploy.ts'
import { readTargetState } from './target-state.ts'
import { ImgmeshError } from '../errors.ts'

export interface RollbackPlan { target: string, spec: string, excludes: string[], from: string }

export async function planRollback (store: ImageStore, target: string): Promise<RollbackPlan> {
  const real = await prepareTarget(target, false)
  const state = await readTargetState(store.targetsDir, real)
  if (state.previous === undefined) {
    const what = state.deployed === undefined ? 'nothing has been deployed there' : `only ${state.deployed.image}@${state.deployed.number} has been deployed there`
    throw new ImgmeshError('ENOVERSION', `cannot roll back ${target}: no previous version (${what})`)
  }
  const from = state.inProgress ?? state.deployed
  return {
    target: real,
    spec: `${state.previous.image}@${state.previous.number}`,
    excludes: state.previous.excludes,
    from: from === undefined ? '-' : `${from.image}@${from.number}`
  }
}
