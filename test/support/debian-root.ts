/**
 * A real Debian root (debootstrap --variant=minbase bookworm), built once and cached outside the
 * repository. Needs root; installs debootstrap through apt-get when it is missing.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, renameSync, rmSync, openSync, closeSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'

export const DEBIAN_CACHE = process.env.IMGMESH_DEBIAN_CACHE ?? '/var/cache/imgmesh-test/bookworm-minbase'

export function isRoot (): boolean { return process.getuid?.() === 0 }

export function haveTool (name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0
}

/** Installs Debian packages when a tool is missing (root only). Returns whether the tool is there. */
export function ensureTool (tool: string, pkg: string = tool): boolean {
  if (haveTool(tool)) return true
  if (!isRoot()) return false
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env, timeout: 300_000 })
  spawnSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'ignore', env, timeout: 600_000 })
  return haveTool(tool)
}

/** Returns the cached Debian root, building it on first use; null when it cannot be built here. */
export function debianRoot (): string | null {
  if (existsSync(DEBIAN_CACHE + '/etc/debian_version')) return DEBIAN_CACHE
  if (!isRoot() || !ensureTool('debootstrap')) return null
  mkdirSync(dirname(DEBIAN_CACHE), { recursive: true })
  const lock = DEBIAN_CACHE + '.lock'
  let fd: number
  try { fd = openSync(lock, 'wx') } catch { return waitForOther(lock) }
  const tmp = `${DEBIAN_CACHE}.tmp-${process.pid}`
  try {
    rmSync(tmp, { recursive: true, force: true })
    execFileSync('debootstrap', ['--variant=minbase', 'bookworm', tmp], { stdio: 'ignore', timeout: 900_000 })
    writeFileSync(tmp + '/.imgmesh-test-root', 'debootstrap --variant=minbase bookworm\n')
    renameSync(tmp, DEBIAN_CACHE)
    return DEBIAN_CACHE
  } catch {
    rmSync(tmp, { recursive: true, force: true })
    return null
  } finally {
    closeSync(fd)
    rmSync(lock, { force: true })
  }
}

function waitForOther (lock: string): string | null {
  const deadline = Date.now() + 900_000
  while (existsSync(lock) && Date.now() < deadline) {
    spawnSync('sleep', ['1'])
  }
  return existsSync(DEBIAN_CACHE + '/etc/debian_version') ? DEBIAN_CACHE : null
}
