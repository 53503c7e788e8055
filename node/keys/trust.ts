/** Trusted publishers: the ed25519 public keys whose signed versions this node accepts from others. */
import { readFile, writeFile, rename, mkdir, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { isErrno, ImgmeshError } from '../errors.ts'

const HEX_KEY = /^[0-9a-f]{64}$/

export function normalizePublisherKey (key: string): string {
  const k = key.trim().toLowerCase()
  if (!HEX_KEY.test(k)) throw new ImgmeshError('EBADARG', `not a publisher public key (64 hex characters): ${key}`)
  return k
}

export class TrustList {
  readonly file: string
  private readonly keys = new Set<string>()

  constructor (file: string) { this.file = file }

  async load (): Promise<this> {
    try {
      const raw = JSON.parse(await readFile(this.file, 'utf8')) as { publishers?: unknown }
      if (!Array.isArray(raw.publishers)) throw new Error('no publishers list')
      this.keys.clear()
      for (const k of raw.publishers) this.keys.add(normalizePublisherKey(String(k)))
    } catch (err) {
      if (isErrno(err, 'ENOENT')) { this.keys.clear(); return this }
      throw new ImgmeshError('EBADARG', `trust list ${this.file} is unreadable: ${(err as Error).message}`, { cause: err })
    }
    return this
  }

  private loadedMtime = -1

  /** Reloads the list if its file changed since it was read (another process trusted a key). */
  async refresh (): Promise<void> {
    let mtime: number
    try { mtime = (await stat(this.file)).mtimeMs } catch { mtime = 0 }
    if (mtime !== this.loadedMtime) { await this.load(); this.loadedMtime = mtime }
  }

  has (key: string): boolean { return this.keys.has(key) }
  /** The live set of trusted keys (changes as keys are trusted and untrusted). */
  get set (): ReadonlySet<string> { return this.keys }
  list (): string[] { return [...this.keys].sort() }

  async add (key: string): Promise<boolean> {
    const k = normalizePublisherKey(key)
    if (this.keys.has(k)) return false
    this.keys.add(k)
    await this.save()
    return true
  }

  async remove (key: string): Promise<boolean> {
    const k = normalizePublisherKey(key)
    if (!this.keys.delete(k)) return false
    await this.save()
    return true
  }

  private async save (): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true })
    const tmp = `${this.file}.tmp-${process.pid}`
    await writeFile(tmp, JSON.stringify({ publishers: this.list() }, null, 2) + '\n', { mode: 0o644 })
    await rename(tmp, this.file)
  }
}
