/** A regular file's whole content, assembled in memory from its tree entry (small files only: templates, hooks). */
import type { BlockGetter } from '../store/block-store.ts'
import { segmentContent, type TreeEntry } from '../../protocols/tree.ts'
import { ImgmeshError } from '../errors.ts'

export async function fileContent (blocks: BlockGetter, entry: TreeEntry): Promise<Buffer> {
  if (entry.inline !== undefined) return Buffer.from(entry.inline)
  const parts: Buffer[] = []
  for (const s of entry.segments ?? []) {
    if (s.cid === undefined) { parts.push(Buffer.alloc(s.length)); continue }
    const content = segmentContent(s, await blocks.get(s.cid))
    if (content === null) throw new ImgmeshError('EBADBLOCK', `chunk ${s.cid.toString()} of ${Buffer.from(entry.name).toString()} does not hold the bytes its tree names`)
    parts.push(Buffer.from(content))
  }
  return Buffer.concat(parts)
}
