/**
 * When a HAVE update is worth sending to a peer now, and when its news can gather for a later
 * turn. Each HAVE is a message to frame, encrypt, write and read on both ends, once per
 * watching peer per turn (100 ms). A peer keeps only a few requests in flight with each holder,
 * so it needs news from us soon only when it is short of pieces it could ask us for. While it
 * knows of many, telling it of more does not let it ask us for more; the news waits until
 * enough has gathered or the longest wait has passed, whichever is first. That wait keeps its
 * view of how rare each piece is fresh enough for rarest-first.
 *
 * Pure: the block exchange decides with it for every watcher of a version it holds in part.
 * The origin's super-seeded offer is not paced (its HAVEs are what lets pieces leave it).
 */

export interface HavePacing {
  /** The peer knows of at least this many pieces it can ask us for: news can wait. */
  enough: number
  /** This many fresh pieces go out at once, even to a peer with enough to ask for. */
  batch: number
  /** News never waits longer than this (ms). */
  maxWaitMs: number
}

/**
 * enough: twice the requests a peer keeps in flight with one holder (16, piece-scheduler.ts);
 * maxWaitMs: five turns.
 */
export const HAVE_PACING: Readonly<HavePacing> = Object.freeze({ enough: 32, batch: 64, maxWaitMs: 500 })

/**
 * Whether to tell a peer of `fresh` new pieces now. `askable`: pieces we told it of that it is
 * not known to hold (what it can ask us for already); `waitedMs`: since the oldest news it has
 * not heard was first seen by a turn.
 */
export function haveDue (fresh: number, askable: number, waitedMs: number, pacing: Readonly<HavePacing> = HAVE_PACING): boolean {
  if (fresh <= 0) return false
  return askable < pacing.enough || fresh >= pacing.batch || waitedMs >= pacing.maxWaitMs
}
