/** How the CLI prints: text for people, one JSON document with --json, progress only on a TTY. */
export interface OutputOptions { json: boolean }

export function emit (opts: OutputOptions, value: unknown, text: () => string | string[]): void {
  if (opts.json) {
    process.stdout.write(JSON.stringify(value, null, 2) + '\n')
    return
  }
  const t = text()
  const lines = Array.isArray(t) ? t : [t]
  if (lines.length > 0) process.stdout.write(lines.join('\n') + '\n')
}

export function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`
}

/**
 * Progress: one line rewritten in place on a TTY (at most ten times a second); in a pipe, a
 * plain line every few seconds; nothing with --json.
 */
export class ProgressLine {
  private last = 0
  private shown = false
  private readonly mode: 'tty' | 'plain' | 'off'

  constructor (json: boolean) {
    this.mode = json ? 'off' : process.stderr.isTTY === true ? 'tty' : 'plain'
    this.last = Date.now()
  }

  update (text: string): void {
    if (this.mode === 'off') return
    const now = Date.now()
    if (now - this.last < (this.mode === 'tty' ? 100 : 5000)) return
    this.last = now
    if (this.mode === 'plain') { process.stderr.write(text + '\n'); return }
    const width = process.stderr.columns ?? 80
    process.stderr.write('\r' + text.slice(0, width - 1).padEnd(width - 1))
    this.shown = true
  }

  done (): void {
    if (this.shown) process.stderr.write('\r' + ' '.repeat((process.stderr.columns ?? 80) - 1) + '\r')
    this.shown = false
  }
}
