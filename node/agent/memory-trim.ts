/**
 * Gives memory back once the agent has gone quiet. A transfer fills the block caches' arenas
 * (2 × 16 MiB) and leaves glibc holding what the transfer's threads freed in their arenas; an agent
 * that then sits idle for hours keeps all of it.
 *
 * Every `intervalMs` the agent's activity (a counter that moves with every block sent or
 * received, and with fetches started) is compared with the last reading; a running deploy counts
 * as activity. After a change, once it has stayed still for `quietMs`, the trim runs once: the
 * caches are released, then the C heap's free pages go back to the kernel (malloc_trim). Start-up
 * counts as activity, so a freshly started agent trims once after `quietMs`.
 *
 * The trim does not force a garbage collection. One did (a memory-reducing full collection, which
 * took an idle agent from about 170 to 117 MiB RSS where the trim alone reaches about 157), but
 * the deploy after it paid dearly: V8 sizes the old generation's next limit from that collection,
 * and the next transfer ran some 28 mark-compacts per agent instead of 2 to 10, about 1 s more CPU
 * per client and 1.75–2.33 instead of 1.48–1.52 T_min on the 10-client testbed (docs/benchmarks.md). A
 * regular full collection did the same. Forty MiB per idle agent is the cheaper side.
 */
import { readFileSync } from 'node:fs'
import { createLogger } from '../logger.ts'
import { nativeHeap } from '../native/heap.ts'

const log = createLogger('memory')

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

  /** Releases the caches and gives the C heap's free pages back to the kernel. */
  trim (): void {
    const before = rssMiB()
    const t0 = Date.now()
    this.opts.release()
    nativeHeap.trim()
    this.trims++
    log.debug('trimmed', { rssBeforeMiB: Math.round(before), rssAfterMiB: Math.round(rssMiB()), ms: Date.now() - t0 })
  }
}
