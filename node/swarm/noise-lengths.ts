/**
 * The noise channel's message lengths read without an exception per socket read.
 *
 * libp2p-noise splits what a connection receives into messages with @libp2p/utils'
 * LengthPrefixedDecoder: after each complete message it calls the length decoder again on what
 * is left, and when nothing is left that decoder throws a RangeError, which the loop catches as
 * "not enough data". A socket read that ends on a message boundary (the sender writes whole
 * messages, so most do) thus builds an Error with a stack trace: on the testbed (N=20, perf)
 * those throws were 1.2% of all the agents' CPU during a deploy. Here each decoder's length
 * decoder answers 0 for an empty buffer instead of throwing: a 0-byte length prefix needs at
 * least one byte, more than the buffer holds, so the loop stops exactly where it stopped before,
 * and nothing else changes (a buffer of 1 byte, the rare half of a 2-byte prefix, still throws
 * and is caught as before). Applied once per process, to every LengthPrefixedDecoder.
 */
import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'

/** A length decoder as LengthPrefixedDecoder calls it. */
export type LengthDecoder = (data: Uint8ArrayList | Uint8Array) => number

/** The field of LengthPrefixedDecoder the change replaces (public in the library's own code). */
interface DecoderFields { lengthDecoder: LengthDecoder }

type Decode = (this: DecoderFields, buf: Uint8ArrayList | Uint8Array) => Generator<Uint8ArrayList | Uint8Array, void, unknown>

const quieted = new WeakSet<object>()
let applied = false

/** `decode`, answering 0 for an empty buffer instead of calling it. */
export function emptyAware (decode: LengthDecoder): LengthDecoder {
  return (data) => data.byteLength === 0 ? 0 : decode(data)
}

/**
 * Installs the change on every LengthPrefixedDecoder of this process (idempotent). Returns
 * false, and changes nothing, if the library's decoder has no `decode` method (another version).
 */
export function useQuietLengthDecoding (): boolean {
  if (applied) return true
  const proto = LengthPrefixedDecoder.prototype as unknown as { decode?: Decode }
  const decode = proto.decode
  if (typeof decode !== 'function') return false
  applied = true
  proto.decode = function (this: DecoderFields, buf) {
    if (!quieted.has(this) && typeof this.lengthDecoder === 'function') {
      quieted.add(this)
      this.lengthDecoder = emptyAware(this.lengthDecoder)
    }
    return decode.call(this, buf)
  }
  return true
}
