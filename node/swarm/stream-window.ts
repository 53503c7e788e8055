/**
 * yamux window updates once half of a stream's receive window is used, not after every frame.
 *
 * @chainsafe/libp2p-yamux answers every data frame it receives with a window update: a frame of
 * its own, so a noise message and a socket write on the receiver, a read, a decryption and an
 * event on the sender. For the block exchange that is one extra message per block received,
 * and one per HAVE, WANT or gossip message of a few bytes. The yamux specification lets the
 * receiver wait; its reference implementation sends an update only once the window it has
 * granted fell below half. This applies the same rule: while a stream is established and more
 * than half of its receive window is still open, no update goes out. Opening, acknowledging
 * and resuming a paused stream are left to the library as they are.
 *
 * The library grows a stream's window (up to 16 MiB) when updates follow each other within
 * four round trips; with fewer updates it grows less eagerly, which on a LAN costs nothing
 * measurable (docs/benchmarks.md). Applied once per process, to every yamux stream.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/** The fields of YamuxStream the rule reads (declared private in its types). */
interface WindowFields {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
}

let applied = false

/** Whether a stream should send a window update now, under the half-window rule. */
export function windowUpdateDue (state: StreamState, recvWindow: number, recvWindowCapacity: number): boolean {
  if (state !== StreamState.Established) return true
  return recvWindowCapacity * 2 <= recvWindow
}

/** Installs the rule on every yamux stream of this process (idempotent). */
export function useHalfWindowUpdates (): void {
  if (applied) return
  applied = true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate: (this: WindowFields) => void }
  const send = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: WindowFields): void {
    if (!windowUpdateDue(this.state, this.recvWindow, this.recvWindowCapacity)) return
    send.call(this)
  }
}
