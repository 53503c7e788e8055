/**
 * The image every transport deploys: a copy, in the run's work directory, of a slice of a tree.
 *
 * Default source: the cached Debian root (debootstrap --variant=minbase bookworm), sliced from
 * its /usr. With --image DIR: that directory, sliced from its top. The slice is the first
 * regular files of a depth-first walk with names in byte order, taken while their total size
 * stays within --image-mb MiB, together with the symlinks met on the way and every directory
 * above a taken entry. It is copied with rsync -aHAX --files-from (owners, modes, times, hard
 * links within the slice, xattrs, ACLs all kept). --image-mb 0 copies the whole tree.
 *
 * F, the image size used for T_min, is the sum of the sizes of its regular files, each inode
 * counted once (the uncompressed tree). Tar-based transports ship image.tar; its size is kept too.
 */
import { lstatSync, mkdirSync, readdirSync, rmSync, writeFileSync, statSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { run } from './netns.ts'

export interface PreparedImage {
  /** the image tree (what clients must end up with) */
  dir: string
  /** where it was taken from */
  source: string
  /** F: bytes of regular files, hard links counted once */
  bytes: number
  files: number
  dirs: number
  symlinks: number
  entries: number
  /** tar of the tree (made on demand by ensureTar) */
  tar: string | null
  tarBytes: number
  tarMs: number
}

interface Walked { rel: string, kind: 'file' | 'dir' | 'link' | 'other', size: number, ino: string }

/** Depth-first walk in byte order of names, bounded by `maxEntries`. */
function * walk (root: string, rel: string, maxEntries: { left: number }): Generator<Walked> {
  const names = readdirSync(join(root, rel)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  for (const name of names) {
    if (--maxEntries.left < 0) throw new Error(`more than the entry limit under ${root}`)
    const r = rel === '' ? name : `${rel}/${name}`
    const st = lstatSync(join(root, r))
    const ino = `${st.dev}:${st.ino}`
    if (st.isDirectory()) {
      yield { rel: r, kind: 'dir', size: 0, ino }
      yield * walk(root, r, maxEntries)
    } else if (st.isFile()) {
      yield { rel: r, kind: 'file', size: st.size, ino }
    } else if (st.isSymbolicLink()) {
      yield { rel: r, kind: 'link', size: 0, ino }
    } else {
      yield { rel: r, kind: 'other', size: 0, ino }
    }
  }
}

/** Selects the slice: relative paths (under `source`) to copy, parents listed before children. */
function selectSlice (source: string, sub: string, limitBytes: number): string[] {
  const chosen: string[] = []
  const dirsListed = new Set<string>()
  const seenInodes = new Set<string>()
  let total = 0
  const addParents = (rel: string): void => {
    const parts = rel.split('/')
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/')
      if (!dirsListed.has(d)) { dirsListed.add(d); chosen.push(d) }
    }
  }
  const base = sub === '' ? source : join(source, sub)
  for (const e of walk(base, '', { left: 5_000_000 })) {
    const rel = sub === '' ? e.rel : `${sub}/${e.rel}`
    if (e.kind === 'dir') continue
    if (e.kind === 'file') {
      const extra = seenInodes.has(e.ino) ? 0 : e.size
      if (limitBytes > 0 && total + extra > limitBytes) break
      total += extra
      seenInodes.add(e.ino)
    }
    addParents(rel)
    chosen.push(rel)
  }
  return chosen
}

function measure (dir: string): { bytes: number, files: number, dirs: number, symlinks: number, entries: number } {
  const seen = new Set<string>()
  let bytes = 0; let files = 0; let dirs = 0; let symlinks = 0; let entries = 0
  for (const e of walk(dir, '', { left: 5_000_000 })) {
    entries++
    if (e.kind === 'dir') dirs++
    else if (e.kind === 'link') symlinks++
    else if (e.kind === 'file') {
      files++
      if (!seen.has(e.ino)) { seen.add(e.ino); bytes += e.size }
    }
  }
  return { bytes, files, dirs, symlinks, entries }
}

export interface ImageOptions {
  /** a directory to deploy, or null for the cached Debian root's /usr */
  source: string | null
  /** MiB to keep, 0 for all */
  sliceMiB: number
  /** where the image is copied to (created; must not exist) */
  dest: string
}

export async function prepareImage (opts: ImageOptions): Promise<PreparedImage> {
  let source: string
  let sub: string
  if (opts.source !== null) {
    if (!existsSync(opts.source) || !statSync(opts.source).isDirectory()) throw new Error(`--image ${opts.source}: not a directory`)
    source = opts.source
    sub = ''
  } else {
    const { debianRoot } = await import('../../test/support/debian-root.ts')
    const root = debianRoot()
    if (root === null) throw new Error('no Debian root: debootstrap could not build one (give --image DIR instead)')
    source = root
    sub = 'usr'
  }
  const list = selectSlice(source, sub, opts.sliceMiB * 1024 * 1024)
  if (list.length === 0) throw new Error(`the slice of ${source} is empty`)
  mkdirSync(opts.dest, { recursive: true })
  const listFile = `${opts.dest}.files`
  writeFileSync(listFile, list.join('\0') + '\0')
  try {
    run('rsync', ['-aHAX', '--from0', `--files-from=${listFile}`, source + '/', opts.dest + '/'], 600_000)
  } finally {
    rmSync(listFile, { force: true })
  }
  const m = measure(opts.dest)
  return { dir: opts.dest, source: sub === '' ? source : join(source, sub), ...m, tar: null, tarBytes: 0, tarMs: 0 }
}

/** Makes `path`, a tar of the image (numeric owners, xattrs, ACLs), once. */
export function ensureTar (image: PreparedImage, path: string): string {
  if (image.tar !== null) return image.tar
  const t = Date.now()
  run('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '-C', image.dir, '-cf', path, '.'], 600_000)
  image.tarMs = Date.now() - t
  image.tar = path
  image.tarBytes = statSync(path).size
  return path
}

/** The arguments that unpack such a tar into a directory, keeping everything. */
export function untarArgs (tar: string, dest: string): string[] {
  return ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--same-owner', '-p', '-C', dest, '-xf', tar]
}
