/** Refs: for each image, the CID of every version this node keeps, by number. */
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import { readJson, writeJson } from '../store/json-file.ts'
import { ImgmeshError, isErrno } from '../errors.ts'
import { isValidImageName } from '../../protocols/version.ts'

interface RefFile { image: string, versions: Record<string, string> }

export interface VersionRef { number: number, cid: CID }

export class Refs {
  readonly dir: string
  constructor (dir: string) { this.dir = dir }

  private file (image: string): string {
    if (!isValidImageName(image)) throw new ImgmeshError('EBADARG', `invalid image name: ${image}`)
    return join(this.dir, `${image}.json`)
  }

  async images (): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter(f => f.endsWith('.json')).map(f => f.slice(0, -5)).filter(isValidImageName).sort()
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return []
      throw err
    }
  }

  async versions (image: string): Promise<VersionRef[]> {
    const raw = await readJson<RefFile>(this.file(image))
    if (raw === null) return []
    return Object.entries(raw.versions).map(([n, c]) => ({ number: Number(n), cid: CID.parse(c) })).sort((a, b) => a.number - b.number)
  }

  async head (image: string): Promise<VersionRef | null> {
    const all = await this.versions(image)
    return all.length === 0 ? null : all[all.length - 1]
  }

  async get (image: string, number: number): Promise<CID | null> {
    return (await this.versions(image)).find(v => v.number === number)?.cid ?? null
  }

  /** Records a version. A different CID under an existing number is a conflict, never overwritten. */
  async add (image: string, number: number, cid: CID): Promise<boolean> {
    const file = this.file(image)
    const raw = (await readJson<RefFile>(file)) ?? { image, versions: {} }
    const existing = raw.versions[String(number)]
    if (existing !== undefined) {
      if (existing === cid.toString()) return false
      throw new ImgmeshError('ECONFLICT', `${image}@${number} already exists as ${existing}; refusing ${cid.toString()}`)
    }
    raw.versions[String(number)] = cid.toString()
    await writeJson(file, raw)
    return true
  }

  /** Points a number at another version (a concurrent publish resolved in its favour). */
  async replace (image: string, number: number, cid: CID): Promise<void> {
    const file = this.file(image)
    const raw = (await readJson<RefFile>(file)) ?? { image, versions: {} }
    raw.versions[String(number)] = cid.toString()
    await writeJson(file, raw)
  }

  async remove (image: string, number?: number): Promise<number> {
    const file = this.file(image)
    const raw = await readJson<RefFile>(file)
    if (raw === null) return 0
    if (number === undefined) {
      await rm(file, { force: true })
      return Object.keys(raw.versions).length
    }
    if (raw.versions[String(number)] === undefined) return 0
    delete raw.versions[String(number)]
    if (Object.keys(raw.versions).length === 0) await rm(file, { force: true })
    else await writeJson(file, raw)
    return 1
  }
}
