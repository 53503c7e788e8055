/** A binary min-heap of timed events; equal times pop in insertion order (deterministic runs). */

export interface Timed { t: number, seq: number }

export class EventQueue<E extends Timed> {
  private readonly items: E[] = []
  private seq = 0
  pushed = 0

  get size (): number { return this.items.length }

  push (ev: E): void {
    ev.seq = this.seq++
    this.pushed++
    const a = this.items
    a.push(ev)
    let i = a.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!before(ev, a[p])) break
      a[i] = a[p]
      i = p
    }
    a[i] = ev
  }

  pop (): E | undefined {
    const a = this.items
    const top = a[0]
    const last = a.pop()
    if (a.length > 0 && last !== undefined) {
      let i = 0
      const n = a.length
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        const c = r < n && before(a[r], a[l]) ? r : l
        if (!before(a[c], last)) break
        a[i] = a[c]
        i = c
      }
      a[i] = last
    }
    return top
  }

  peek (): E | undefined { return this.items[0] }
}

function before (x: Timed, y: Timed): boolean {
  return x.t < y.t || (x.t === y.t && x.seq < y.seq)
}
