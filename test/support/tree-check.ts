/** Independent checks of a deployed tree: rsync's own comparison and the sparseness of files. */
import { spawnSync } from 'node:child_process'
import { lstatSync } from 'node:fs'

/** Lines rsync prints when comparing SRC with DST by content, owners, modes, times, links, ACLs, xattrs; empty when identical. */
export function rsyncDifferences (src: string, dst: string, excludes: string[] = []): string[] {
  const r = spawnSync('rsync', ['-naHAXc', '--delete', '--itemize-changes', ...excludes.map(e => `--exclude=${e}`), src + '/', dst + '/'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  if (r.status !== 0) throw new Error(`rsync failed: ${r.stderr}`)
  return r.stdout.split('\n').filter(l => l.trim() !== '')
}

/** Bytes actually allocated for a file. */
export function allocatedBytes (path: string): number {
  return lstatSync(path).blocks * 512
}
