/**
 * A generated sample tree with every kind of entry a root filesystem has: regular files of many
 * sizes, a sparse file, empty files, symlinks, hard links, a fifo, a socket, xattrs, setuid and
 * sticky modes, odd names, a deep path and (as root) device nodes and foreign owners.
 */
import { mkdir, writeFile, symlink, link, chmod, lchown, open, utimes } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { nativeFs } from '../native/fsx.ts'

export interface SampleTreeOptions {
  /** Approximate bytes of regular file content (default 8 MiB). */
  bytes?: number
  seed?: number
}

function pseudoRandom (seed: number, length: number): Buffer {
  const out = Buffer.alloc(length)
  let counter = 0
  let pos = 0
  while (pos < length) {
    const block = createHash('sha256').update(`${seed}:${counter++}`).digest()
    pos += block.copy(out, pos)
  }
  return out
}

export async function makeSampleTree (dir: string, opts: SampleTreeOptions = {}): Promise<void> {
  const bytes = opts.bytes ?? 8 * 1024 * 1024
  const seed = opts.seed ?? 1
  const root = process.getuid?.() === 0
  await mkdir(join(dir, 'etc'), { recursive: true })
  await mkdir(join(dir, 'usr/bin'), { recursive: true })
  await mkdir(join(dir, 'usr/lib/data'), { recursive: true })
  await mkdir(join(dir, 'var/spool'), { recursive: true })
  await mkdir(join(dir, 'tmp'), { recursive: true })
  await chmod(join(dir, 'tmp'), 0o1777)
  await writeFile(join(dir, 'etc/hostname'), 'golden\n')
  await writeFile(join(dir, 'etc/empty'), '')
  await writeFile(join(dir, 'etc/motd'), 'Welcome to the imgmesh sample image.\n'.repeat(40))
  // Big files, with shared content so chunks deduplicate.
  const big = pseudoRandom(seed, Math.max(1024, Math.floor(bytes / 4)))
  await writeFile(join(dir, 'usr/lib/data/big.bin'), big)
  await writeFile(join(dir, 'usr/lib/data/big-copy-edited.bin'), Buffer.concat([Buffer.from('edit at start'), big]))
  let left = bytes - big.length * 2
  for (let i = 0; left > 0 && i < 200; i++) {
    const size = Math.min(left, 1000 + ((i * 7919) % 90_000))
    await writeFile(join(dir, `usr/lib/data/file-${String(i).padStart(3, '0')}.dat`), pseudoRandom(seed + 1000 + i, size))
    left -= size
  }
  // Executables, setuid, a capability.
  await writeFile(join(dir, 'usr/bin/tool'), '#!/bin/sh\necho tool\n')
  await chmod(join(dir, 'usr/bin/tool'), 0o755)
  await writeFile(join(dir, 'usr/bin/suid-tool'), '#!/bin/sh\necho suid\n')
  await chmod(join(dir, 'usr/bin/suid-tool'), 0o4755)
  await writeFile(join(dir, 'usr/bin/sgid-tool'), '#!/bin/sh\necho sgid\n')
  await chmod(join(dir, 'usr/bin/sgid-tool'), 0o2755)
  nativeFs.setXattr(Buffer.from(join(dir, 'usr/bin/tool')), 'user.comment', Buffer.from('an extended attribute'))
  if (root) {
    // cap_net_raw+ep, as ping carries it.
    nativeFs.setXattr(Buffer.from(join(dir, 'usr/bin/tool')), 'security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex'))
    await lchown(join(dir, 'var/spool'), 1, 7)
    await writeFile(join(dir, 'var/spool/owned'), 'owned by someone else\n')
    await lchown(join(dir, 'var/spool/owned'), 1000, 1000)
  }
  // Links.
  await symlink('tool', join(dir, 'usr/bin/tool-link'))
  await symlink('/does/not/exist', join(dir, 'usr/bin/dangling'))
  await symlink('../../etc', join(dir, 'usr/lib/etc-dir-link'))
  await link(join(dir, 'usr/bin/tool'), join(dir, 'usr/bin/tool-hardlink'))
  await link(join(dir, 'etc/motd'), join(dir, 'var/motd-hardlink'))
  // Sparse file: 8 MiB with data only at 1 MiB and at the end.
  const fh = await open(join(dir, 'var/sparse.img'), 'w')
  await fh.write(Buffer.from('data in the middle'), 0, 18, 1024 * 1024)
  await fh.write(Buffer.from('tail'), 0, 4, 8 * 1024 * 1024 - 4)
  await fh.close()
  // Special files.
  nativeFs.makeNode(Buffer.from(join(dir, 'var/spool/fifo')), 0o010644, 0, 0)
  nativeFs.makeNode(Buffer.from(join(dir, 'var/spool/socket')), 0o140755, 0, 0)
  if (root) {
    await mkdir(join(dir, 'dev'), { recursive: true })
    nativeFs.makeNode(Buffer.from(join(dir, 'dev/null')), 0o020666, 1, 3)
    nativeFs.makeNode(Buffer.from(join(dir, 'dev/loop9')), 0o060660, 7, 9)
  }
  // Odd names: spaces, a newline, bytes that are not UTF-8, a long deep path.
  await writeFile(join(dir, 'var/name with spaces'), 'spaces\n')
  await writeFile(join(dir, 'var/new\nline'), 'newline\n')
  await writeFile(Buffer.concat([Buffer.from(join(dir, 'var') + '/latin1-'), Buffer.from([0xe9, 0xff]), Buffer.from('.txt')]), 'not utf-8\n')
  let deep = join(dir, 'usr/lib')
  for (let i = 0; i < 12; i++) deep = join(deep, `deep-directory-level-${i}-${'x'.repeat(40)}`)
  await mkdir(deep, { recursive: true })
  await writeFile(join(deep, 'leaf'), 'deep\n')
  // A fixed old mtime with nanoseconds on one file.
  await utimes(join(dir, 'etc/hostname'), 1_600_000_000.123, 1_600_000_000.123)
  nativeFs.setTimes(Buffer.from(join(dir, 'etc/hostname')), 1_600_000_000, 123_456_789, 1_600_000_000, 123_456_789)
}
