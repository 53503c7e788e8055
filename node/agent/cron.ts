/** When an `apply-at` assignment is due: `now`, an ISO time, or a five-field cron expression (local time). */
import { ImgmeshError } from '../errors.ts'

const FIELDS: Array<[number, number]> = [[0, 59], [0, 23], [1, 31], [1, 12], [0, 6]]

function parseField (text: string, [lo, hi]: [number, number]): Set<number> {
  const out = new Set<number>()
  for (const part of text.split(',')) {
    const [range, stepText] = part.split('/')
    const step = stepText === undefined ? 1 : Number(stepText)
    let from = lo
    let to = hi
    if (range !== '*') {
      const [a, b] = range.split('-')
      from = Number(a)
      to = b === undefined ? (stepText === undefined ? from : hi) : Number(b)
    }
    if (![from, to, step].every(Number.isInteger) || from < lo || to > hi || from > to || step < 1) throw new ImgmeshError('EBADARG', `bad cron field ${JSON.stringify(text)}`)
    for (let x = from; x <= to; x += step) out.add(x)
  }
  return out
}

export class Schedule {
  private readonly at: number | null
  private readonly cron: Array<Set<number>> | null

  constructor (spec: string) {
    const s = spec.trim()
    if (s === 'now') { this.at = 0; this.cron = null; return }
    const fields = s.split(/\s+/)
    if (fields.length === 5) { this.at = null; this.cron = fields.map((f, i) => parseField(f, FIELDS[i])); return }
    const t = Date.parse(s)
    if (Number.isNaN(t)) throw new ImgmeshError('EBADARG', `not a time: ${JSON.stringify(spec)} (now, an ISO time, or a cron expression)`)
    this.at = t
    this.cron = null
  }

  /** Whether the schedule fires in the minute of `now` (cron) or has come (one-off), and has not fired since `last`. */
  due (now: Date, last: number | null): boolean {
    if (this.at !== null) return now.getTime() >= this.at && last === null
    const c = this.cron!
    const minute = Math.floor(now.getTime() / 60_000)
    if (last !== null && Math.floor(last / 60_000) === minute) return false
    return c[0].has(now.getMinutes()) && c[1].has(now.getHours()) && c[2].has(now.getDate()) && c[3].has(now.getMonth() + 1) && c[4].has(now.getDay())
  }
}
