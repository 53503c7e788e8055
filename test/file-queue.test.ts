/**
 * The deploy's file order during a fetch (node/target/file-queue.ts): tree-order writers, plus
 * one writer for files whose chunks all arrived before a tree-order writer reached them. The
 * getter here announces arrivals the way VersionFetcher does (isHere, onArrival); the whole
 * path with real agents is in the swarm deploy tests.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { CID } from 'multiformats/cid'
import { cidFor } from '../node/store/cid.ts'
import { runFileTasks, type FileTask } from '../node/target/file-queue.ts'
import type { BlockGetter } from '../node/store/block-store.ts'

const chunk = (n: number): CID => cidFor(new TextEncoder().encode(`chunk ${n}`))

/** A fetch in progress: blocks are here once `arrive` was called for them. */
class Arrivals implements BlockGetter {
  readonly here = new Set<string>()
  readonly listeners = new Set<(cid: CID) => void>()
  private readonly waiters = new Map<string, Array<() => void>>()
  async get (): Promise<Uint8Array> { return new Uint8Array() }
  isHere (cid: CID): boolean { return this.here.has(cid.toString()) }
  onArrival (listener: (cid: CID) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  arrive (cid: CID): void {
    this.here.add(cid.toString())
    for (const w of this.waiters.get(cid.toString()) ?? []) w()
    this.waiters.delete(cid.toString())
    for (const l of this.listeners) l(cid)
  }

  async until (cids: readonly CID[]): Promise<void> {
    await Promise.all(cids.filter(c => !this.isHere(c)).map(async c => await new Promise<void>((resolve) => {
      const list = this.waiters.get(c.toString()) ?? []
      list.push(resolve)
      this.waiters.set(c.toString(), list)
    })))
  }
}

const tick = async (): Promise<void> => { await new Promise<void>(resolve => setImmediate(resolve)) }

test('a file whose chunks all came is written at once, ahead of tree-order files still waiting', async () => {
  const fetch = new Arrivals()
  const written: string[] = []
  const file = (name: string, chunks: CID[]): FileTask => ({
    chunks,
    run: async () => { await fetch.until(chunks); written.push(name) }
  })
  // a waits for c1 (last to come); b shares c2 with c; d's chunks are here already; e is empty.
  const c = [chunk(1), chunk(2), chunk(3), chunk(4), chunk(5)]
  fetch.arrive(c[4])
  const tasks = [file('a', [c[0]]), file('b', [c[1], c[2]]), file('c', [c[1], c[1]]), file('d', [c[4]]), file('e', [])]
  const done = runFileTasks(tasks, 1, fetch)
  await tick()
  assert.deepEqual(written, [])
  fetch.arrive(c[1])
  await tick()
  assert.deepEqual(written, ['c'], 'c had all its chunks (one, twice) and did not wait for a')
  fetch.arrive(c[2])
  await tick()
  assert.deepEqual(written, ['c', 'b'])
  fetch.arrive(c[0])
  await done
  assert.deepEqual(written, ['c', 'b', 'a', 'd', 'e'], 'the rest in tree order, each once')
  assert.equal(fetch.listeners.size, 0, 'the arrival listener is removed')
})

test('without arrival news the files go in tree order', async () => {
  const order: number[] = []
  const tasks: FileTask[] = [3, 1, 2].map(ms => ({ chunks: [chunk(ms)], run: async () => { await new Promise(resolve => setTimeout(resolve, ms)); order.push(ms) } }))
  await runFileTasks(tasks, 1, { get: async () => new Uint8Array() })
  assert.deepEqual(order, [3, 1, 2])
})

test('a failing file stops the deploy: nothing new starts, the error is thrown, the listener goes', async () => {
  const fetch = new Arrivals()
  const started: string[] = []
  const c = [chunk(10), chunk(11), chunk(12)]
  const tasks: FileTask[] = [
    { chunks: [c[0]], run: async () => { started.push('a'); await fetch.until([c[0]]) } },
    { chunks: [c[1]], run: async () => { started.push('b'); throw new Error('disk full') } },
    { chunks: [c[2]], run: async () => { started.push('c') } }
  ]
  const done = runFileTasks(tasks, 1, fetch)
  await tick()
  fetch.arrive(c[1])
  await tick()
  fetch.arrive(c[2])
  fetch.arrive(c[0])
  await assert.rejects(done, /disk full/)
  assert.deepEqual(started, ['a', 'b'])
  assert.equal(fetch.listeners.size, 0)
})
