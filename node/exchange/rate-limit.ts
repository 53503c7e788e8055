/** A token bucket shared by every upload of an agent (`--upload-limit`), so serving peers never saturates a node's link. */
export class RateLimit {
  readonly bytesPerSecond: number
  private tokens: number
  private last = Date.now()
  private queue: Promise<void> = Promise.resolve()

  constructor (bytesPerSecond: number) {
    this.bytesPerSecond = bytesPerSecond
    this.tokens = Math.min(bytesPerSecond, 1024 * 1024)
  }

  /** Waits until n bytes may go out (requests are served in order). */
  async take (n: number): Promise<void> {
    const turn = this.queue.then(async () => {
      const burst = Math.max(n, Math.min(this.bytesPerSecond, 1024 * 1024))
      for (;;) {
        const now = Date.now()
        this.tokens = Math.min(burst, this.tokens + (now - this.last) * this.bytesPerSecond / 1000)
        this.last = now
        if (this.tokens >= n) { this.tokens -= n; return }
        await new Promise(resolve => setTimeout(resolve, Math.max(5, Math.ceil((n - this.tokens) * 1000 / this.bytesPerSecond))))
      }
    })
    this.queue = turn.catch(() => {})
    await turn
  }
}
