/**
 * Live customisation: `checkout` materialises a version in a directory for editing (chroot-able),
 * and remembers the stat identity of every file it wrote, so that `commit` of that directory
 * captures the next version with the checked-out one as its base, rehashing only the files
 * whose stat changed.
 */
import { lstat, readdir } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import type { ImageStore } from './image-store.ts'
import { writeJson } from '../store/json-file.ts'
import { joinPath } from '../tree/entry-metadata.ts'

/** The capture cache of one image captured from one source directory. */
export function captureCacheFile (store: ImageStore, image: string, source: string): string {
  return join(store.dataDir, 'captures', `${image}-${createHash('sha256').update(source).digest('hex').slice(0, 16)}.json`)
}

/** Records the stat identity of every regular file under dir as the capture cache of (image, dir). */
export async function recordCheckout (store: ImageStore, image: string, dir: string, tree: CID): Promise<number> {
  const files: Record<string, [string, string, string, string]> = {}
  const walk = async (abs: Buffer, rel: Buffer): Promise<void> => {
    for (const name of await readdir(abs, { encoding: 'buffer' })) {
      const childAbs = joinPath(abs, name)
      const childRel = rel.length === 0 ? Buffer.from(name) : joinPath(rel, name)
      const st = await lstat(childAbs, { bigint: true })
      if (st.isDirectory()) await walk(childAbs, childRel)
      else if (st.isFile()) files[childRel.toString('base64')] = [st.ino.toString(), st.ctimeNs.toString(), st.size.toString(), st.mtimeNs.toString()]
    }
  }
  await walk(Buffer.from(dir), Buffer.alloc(0))
  await writeJson(captureCacheFile(store, image, dir), { source: dir, tree: tree.toString(), files })
  return Object.keys(files).length
}
