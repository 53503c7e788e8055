/**
 * yamux window updates once 64 KiB of a stream's receive window are used, not after every frame.
 *
 * @chainsafe/libp2p-yamux answers every data frame it receives with a window update: a frame of
 * its own, so a noise message and a socket write on the receiver, a read, a decryption and an
 * event on the sender. For the block exchange that is one extra message per block received,
 * and one per HAVE, WANT or gossip message of a few bytes. The yamux specification lets the
 * receiver wait; its reference implementation sends an update only once the window it has
 * granted fell below half. Here an established stream sends one once it has received 64 KiB
 * (or half its window, if that is less) since the last: messages of a few bytes no longer
 * cost an update each, while a bulk transfer still gets one about every block, as before, so
 * its sender keeps at least three quarters of the 256 KiB window. (Half the window did the
 * same on the testbed; 64 KiB is the smaller change for fast links.) Opening, acknowledging
 * and resuming a paused stream are left to the library as they are. Applied once per
 * process, to every yamux stream.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

/** The fields of YamuxStream the rule reads (declared private in its types). */
interface WindowFields {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
}

let applied = false

/** Bytes received since the last update that make the next one due (at most half the window). */
export const UPDATE_AFTER_BYTES = 64 * 1024

/** Whether a stream should send a window update now. */
export function windowUpdateDue (state: StreamState, recvWindow: number, recvWindowCapacity: number): boolean {
  if (state !== StreamState.Established) return true
  return recvWindow - recvWindowCapacity >= Math.min(UPDATE_AFTER_BYTES, recvWindow / 2)
}

/**
 * Installs the rule on every yamux stream of this process (idempotent). Returns false, and
 * changes nothing, if the library's stream has no `sendWindowUpdate` (another version).
 */
export function useBatchedWindowUpdates (): boolean {
  if (applied) return true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate?: (this: WindowFields) => void }
  const send = proto.sendWindowUpdate
  if (typeof send !== 'function') return false
  applied = true
  proto.sendWindowUpdate = function (this: WindowFields): void {
    if (!windowUpdateDue(this.state, this.recvWindow, this.recvWindowCapacity)) return
    send.call(this)
  }
  return true
}
