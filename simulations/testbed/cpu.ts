/**
 * CPU accounting through cgroups: every process a transport starts is placed in a cgroup (the
 * server's or the clients') before it execs, so the CPU time of processes that already exited,
 * and of the children they forked (rsync daemon workers, tar), is counted too. Uses cgroup v1
 * cpuacct when mounted, else the cgroup v2 unified hierarchy (cpu.stat is always there).
 * When neither is writable, CPU is reported as unknown.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs'
import { join } from 'node:path'
import { onCleanup, sleepSync } from './netns.ts'

export interface CpuTimes {
  userS: number
  sysS: number
}

type Flavour = 'v1' | 'v2'

function detect (): { root: string, flavour: Flavour } | null {
  const candidates: Array<[string, Flavour]> = [
    ['/sys/fs/cgroup/cpuacct', 'v1'],
    ['/sys/fs/cgroup/unified', 'v2'],
    ['/sys/fs/cgroup', 'v2']
  ]
  for (const [root, flavour] of candidates) {
    const probe = flavour === 'v1' ? join(root, 'cpuacct.usage') : join(root, 'cgroup.procs')
    if (!existsSync(probe)) continue
    if (flavour === 'v2' && !existsSync(join(root, 'cgroup.controllers'))) continue
    return { root, flavour }
  }
  return null
}

let detected: { root: string, flavour: Flavour } | null | undefined

export class CpuGroup {
  readonly path: string
  readonly flavour: Flavour

  private constructor (path: string, flavour: Flavour) {
    this.path = path
    this.flavour = flavour
  }

  /** Creates a cgroup named `name` (must carry the run's prefix); null when cgroups are unavailable. */
  static create (name: string): CpuGroup | null {
    if (detected === undefined) detected = detect()
    if (detected === null) return null
    const path = join(detected.root, name)
    try {
      mkdirSync(path)
    } catch {
      return null
    }
    const group = new CpuGroup(path, detected.flavour)
    onCleanup(`cgroup ${name}`, () => group.remove())
    return group
  }

  /** User and system CPU seconds of every process that ran in the group. */
  times (): CpuTimes {
    if (this.flavour === 'v1') {
      const user = Number(readFileSync(join(this.path, 'cpuacct.usage_user'), 'utf8').trim())
      const sys = Number(readFileSync(join(this.path, 'cpuacct.usage_sys'), 'utf8').trim())
      return { userS: user / 1e9, sysS: sys / 1e9 }
    }
    const stat = readFileSync(join(this.path, 'cpu.stat'), 'utf8')
    const field = (k: string): number => Number(new RegExp(`^${k} (\\d+)`, 'm').exec(stat)?.[1] ?? 0)
    return { userS: field('user_usec') / 1e6, sysS: field('system_usec') / 1e6 }
  }

  /** Pids still in the group. */
  pids (): number[] {
    try {
      return readFileSync(join(this.path, 'cgroup.procs'), 'utf8').split('\n').filter(s => s !== '').map(Number)
    } catch {
      return []
    }
  }

  remove (): void {
    if (!existsSync(this.path)) return
    for (let i = 0; i < 40; i++) {
      try {
        rmdirSync(this.path)
        return
      } catch {
        sleepSync(50)
      }
    }
    process.stderr.write(`testbed: could not remove cgroup ${this.path} (pids ${this.pids().join(' ')})\n`)
  }
}
