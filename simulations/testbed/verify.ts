/**
 * Verification of a client's copy against the image, by rsync as an independent judge:
 * `rsync -naHAXc --delete --itemize-changes IMAGE/ COPY/` compares content (checksums), modes,
 * owners, times, hard links, symlinks, ACLs and xattrs, and prints one line per difference.
 */
import { spawn } from 'node:child_process'

export interface Verdict {
  ok: boolean
  mismatches: number
  /** the first few differing lines, for the log */
  sample: string[]
  error?: string
}

export function verifyCopy (image: string, copy: string, timeoutMs = 300_000): Promise<Verdict> {
  return new Promise(resolve => {
    const child = spawn('rsync', ['-naHAXc', '--delete', '--itemize-changes', image + '/', copy + '/'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { if (out.length < 4_000_000) out += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { if (err.length < 100_000) err += d })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
    child.on('close', code => {
      clearTimeout(timer)
      const lines = out.split('\n').filter(l => l.trim() !== '')
      if (code !== 0) {
        resolve({ ok: false, mismatches: lines.length, sample: lines.slice(0, 5), error: `rsync exited ${String(code)}: ${err.trim().split('\n').slice(-2).join(' ')}` })
        return
      }
      resolve({ ok: lines.length === 0, mismatches: lines.length, sample: lines.slice(0, 5) })
    })
  })
}
