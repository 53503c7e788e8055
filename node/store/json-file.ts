/** Small JSON state files written atomically (temporary name, then rename). */
import { readFile, writeFile, rename, mkdir, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import { randomBytes } from 'node:crypto'
import { isErrno, fsError } from '../errors.ts'

export async function readJson<T> (file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null
    throw fsError(err, 'reading', file)
  }
}

export async function writeJson (file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(6).toString('hex')}`
  try {
    await mkdir(dirname(file), { recursive: true })
    await writeFile(tmp, JSON.stringify(value, null, 2) + '\n')
    await rename(tmp, file)
  } catch (err) {
    await rm(tmp, { force: true })
    throw fsError(err, 'writing', file)
  }
}
