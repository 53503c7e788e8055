/**
 * The order a deploy writes its files in. `limit` writers take the files in tree order; each
 * asks for its chunks still to come all at once and writes every one the moment it arrives
 * (file-writer.ts). A fetch brings the chunks rarest first, in no order the tree knows, so the
 * chunks of files further down the tree arrive long before a tree-order writer reaches them:
 * by then they have left the block cache, and the writer reads them back from the store,
 * decompresses and hashes them again.
 *
 * So one more writer takes any file whose chunks have all arrived before a tree-order writer
 * started it, in the order they completed, and writes it at once, while its chunks are still in
 * memory. Alternating N=50 runs: 6–9% less time, 8–10% less client CPU (docs/benchmarks.md,
 * 2026-12-07). A getter that cannot tell what is here (the local store: everything is) leaves
 * the tree order alone.
 */
import type { CID } from 'multiformats/cid'
import type { BlockGetter } from '../store/block-store.ts'

export interface FileTask {
  /** Writes the file; rejects to fail the deploy. */
  run: () => Promise<void>
  /** The chunks of its content (with repeats, in file order). */
  chunks: readonly CID[]
}

/** Runs every task once; the first failure stops new tasks from starting and is thrown once the running ones end. */
export async function runFileTasks (tasks: readonly FileTask[], limit: number, blocks: BlockGetter): Promise<void> {
  const started = new Uint8Array(tasks.length)
  let failure: unknown = null
  const run = async (t: number): Promise<void> => {
    started[t] = 1
    try { await tasks[t].run() } catch (err) { failure ??= err }
  }

  // Files completed by arrivals, in the order they completed.
  const ready: number[] = []
  let readyHead = 0
  let wake: (() => void) | null = null
  let unsubscribe = (): void => {}
  if (blocks.isHere !== undefined && blocks.onArrival !== undefined) {
    const missing = new Int32Array(tasks.length)
    const waiting = new Map<string, number[]>()
    for (let t = 0; t < tasks.length; t++) {
      for (const cid of tasks[t].chunks) {
        if (blocks.isHere(cid)) continue
        const key = cid.toString()
        let list = waiting.get(key)
        if (list === undefined) { list = []; waiting.set(key, list) }
        list.push(t)
        missing[t]++
      }
    }
    if (waiting.size > 0) {
      unsubscribe = blocks.onArrival((cid) => {
        const key = cid.toString()
        const list = waiting.get(key)
        if (list === undefined) return
        waiting.delete(key)
        for (const t of list) if (--missing[t] === 0 && started[t] === 0) ready.push(t)
        if (readyHead < ready.length && wake !== null) { const w = wake; wake = null; w() }
      })
    }
  }

  let next = 0
  let treeDone = false
  const treeWriter = async (): Promise<void> => {
    while (failure === null) {
      while (next < tasks.length && started[next] === 1) next++
      if (next >= tasks.length) return
      await run(next++)
    }
  }
  const readyWriter = async (): Promise<void> => {
    while (failure === null) {
      if (readyHead < ready.length) {
        const t = ready[readyHead++]
        if (started[t] === 0) await run(t)
        continue
      }
      if (treeDone) return
      await new Promise<void>((resolve) => { wake = resolve })
    }
  }
  try {
    const writers = Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, treeWriter)).then(() => {
      treeDone = true
      if (wake !== null) { const w = wake; wake = null; w() }
    })
    await Promise.all([writers, readyWriter()])
  } finally {
    unsubscribe()
  }
  if (failure !== null) throw failure
}
