/**
 * Gives memory back once the agent has gone quiet. Start-up and a transfer grow V8's young
 * generation to its full 32 MiB and fill the block caches' arenas (2 × 16 MiB); an agent that then
 * sits idle for hours keeps all of it. V8's own memory reducer shrinks the heap only when it sees
 * almost no allocation, which the swarm's timers (gossip, status, DHT) often prevent: measured on
 * an agent with one peer, 157 MiB RSS 30 s after start in one run and 134 in another.
 *
 * Every `intervalMs` the agent's activity (a counter that moves with every block sent or
 * received, and with fetches started) is compared with the last reading; a running deploy counts
 * as activity. After a change, once it has stayed still for `quietMs`, the trim runs once: the caches are released, then one full,
 * memory-reducing collection (about 80 ms), then the C heap's free pages go back to the kernel
 * (glibc keeps what the transfer's threads freed in their arenas: measured after serving 512 MiB,
 * 182 MiB RSS after the collection, 129 after malloc_trim). Start-up counts as activity, so a
 * freshly started agent trims once after `quietMs`.
 */
import v8 from 'node:v8'
import vm from 'node:vm'
import { readFileSync } from 'node:fs'
import { createLogger } from '../logger.ts'
import { nativeHeap } from '../native/heap.ts'

const log = createLogger('memory')

type GcFunction = (opts?: { type?: 'major' | 'minor', execution?: 'sync' | 'async', flavor?: 'regular' | 'last-resort' }) => void

let gcFn: GcFunction | null | undefined

/** V8's gc(), made available at run time (null if this runtime refuses). */
function fullGc (): GcFunction | null {
  if (gcFn !== undefined) return gcFn
  try {
    v8.setFlagsFromString('--expose-gc')
    const f: unknown = vm.runInNewContext('gc')
    gcFn = typeof f === 'function' ? f as GcFunction : null
  } catch {
    gcFn = null
  }
  if (gcFn === null) log.info('no gc() in this runtime; idle memory is left to V8')
  return gcFn
}

/** Resident set size of this process in MiB (Linux), NaN elsewhere. */
export function rssMiB (): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
    return m === null ? Number.NaN : Number(m[1]) / 1024
  } catch {
    return Number.NaN
  }
}

export interface MemoryTrimOptions {
  /** A number that changes whenever the agent does work (bytes moved, fetches started). */
  activity: () => number
  /** Whether work is under way that may move no bytes for a while (a deploy writing files). */
  busy: () => boolean
  /** Drops what can be rebuilt on demand (block caches). */
  release: () => void
  /** How often activity is read (default 5 s). */
  intervalMs?: number
  /** Quiet time before the trim (default 15 s). */
  quietMs?: number
}

export class MemoryTrim {
  private readonly opts: MemoryTrimOptions
  private timer: NodeJS.Timeout | undefined
  private last = Number.NaN
  private quietSince = Date.now()
  /** Whether there was work since the last trim (start-up counts). */
  private dirty = true
  /** Trims done, for status and tests. */
  trims = 0

  constructor (opts: MemoryTrimOptions) { this.opts = opts }

  start (): void {
    if (this.timer !== undefined) return
    this.timer = setInterval(() => { this.tick() }, this.opts.intervalMs ?? 5000)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  /** One reading of the activity counter; trims when it has been still for quietMs after work. */
  tick (now = Date.now()): void {
    const a = this.opts.activity()
    if (a !== this.last || this.opts.busy()) {
      this.last = a
      this.quietSince = now
      this.dirty = true
      return
    }
    if (!this.dirty || now - this.quietSince < (this.opts.quietMs ?? 15_000)) return
    this.dirty = false
    this.trim()
  }

  /** Releases the caches, runs one memory-reducing full collection and trims the C heap. */
  trim (): void {
    const before = rssMiB()
    const t0 = Date.now()
    this.opts.release()
    fullGc()?.({ type: 'major', execution: 'sync', flavor: 'last-resort' })
    nativeHeap.trim()
    this.trims++
    log.debug('trimmed', { rssBeforeMiB: Math.round(before), rssAfterMiB: Math.round(rssMiB()), ms: Date.now() - t0 })
  }
}
