/**
 * When an agent announces in the DHT a version it fetched, and when it looks up a version's
 * providers. Both are DHT queries that reach most of a small swarm: a provide walks to the
 * closest peers and sends each a record, a lookup asks peer after peer. Made while the swarm
 * moves the version, they take CPU from the transfer: on the testbed (20 clients on two cores)
 * the provides of the early finishers and the lookups at the start took a fifth of the agents'
 * CPU in those stretches (docs/benchmarks.md).
 *
 * - A provide waits until the node's block traffic is quiet: a node that finished still serves
 *   the others, and its record helps only nodes that come later. It is made anyway after
 *   PROVIDE_MAX_WAIT_MS.
 * - A lookup is made when no connected peer offered the version within PROVIDER_LOOKUP_AFTER_MS;
 *   when connected peers are fetching the same version (they asked us for it), one of them will
 *   soon hold pieces, so the lookup waits PROVIDER_LOOKUP_WITH_FETCHING_PEERS_MS more.
 */

/**
 * A fetched version is provided no sooner than this after it is complete (plus up to as much
 * again at random): then, and at each such interval after, it goes out if the node is quiet. With
 * 5 s, the early finishers of a 50-client testbed deploy were quiet, and provided, while the
 * last clients still fetched: DHT work took 8–11% of the agents' CPU in that tail.
 */
export const PROVIDE_AFTER_MS = 60_000
/** Block traffic (up plus down, bytes per second) under which a node counts as quiet. */
export const QUIET_BYTES_PER_SECOND = 256 * 1024
/** A provide waits for quiet at most this long. */
export const PROVIDE_MAX_WAIT_MS = 5 * 60_000
/**
 * A fetch looks for providers when no connected peer offered the version this long after it
 * began. In a formed, idle swarm the neighbours answer the fetcher's probe within a round trip;
 * when every node starts fetching at once on busy cores, the answers took longer: after 1 s,
 * 1–8 of 20 testbed clients looked up providers they did not need; after 3 s, 49 of 50 clients
 * at N=50, where even the neighbours' own asks took that long to arrive.
 */
export const PROVIDER_LOOKUP_AFTER_MS = 10_000
/**
 * ... or this much longer when connected peers are fetching the same version: they will hold
 * it once their own tree is loaded. With 50 clients starting at once on two cores a tree took
 * 20–90 s to load; with 10 s (and 30 s) 48 (39) of the 50 clients still looked up providers,
 * and the lookups and the peer-store updates they caused took a third of the agents' CPU in the
 * first 20 s.
 */
export const PROVIDER_LOOKUP_WITH_FETCHING_PEERS_MS = 60_000

/**
 * Whether a provide waiting since `waitedMs` goes out now, given the block traffic (bytes up
 * plus down) over the last `spanMs`.
 */
export function provideNow (o: { trafficBytes: number, spanMs: number, waitedMs: number }): boolean {
  if (o.waitedMs >= PROVIDE_MAX_WAIT_MS) return true
  if (o.spanMs <= 0) return false
  return o.trafficBytes * 1000 / o.spanMs < QUIET_BYTES_PER_SECOND
}

/** A random delay in [ms, 2·ms), so that nodes finishing together do not query together. */
export function jittered (ms: number, random: () => number = Math.random): number {
  return ms * (1 + random())
}
