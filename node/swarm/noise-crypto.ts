/**
 * The noise channel's cipher: the same ChaCha20-Poly1305 (RFC 8439) as libp2p-noise's own, so
 * the bytes on the wire are identical and any noise peer interoperates, but each message is
 * sealed into one buffer and opened in place (node/native/aead.c). libp2p-noise's Node cipher
 * builds a cipher object per message, returns the plaintext in a fresh buffer although it is
 * handed one to reuse, and concatenates ciphertext and tag into a third: at 64 KiB messages each
 * received byte cost an allocation, a copy and, on fresh memory, page faults.
 *
 * Everything else (hashes, key agreement) is libp2p-noise's default.
 */
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { nativeAead } from '../native/aead.ts'
import { ImgmeshError } from '../errors.ts'

const TAG = 16
/** A message as libp2p-noise hands it over: one buffer or a list of them (a Uint8ArrayList). */
export type Data = Uint8Array | { readonly byteLength: number, subarray: () => Uint8Array, [Symbol.iterator]: () => Iterator<Uint8Array> }

function partsOf (data: Data): Uint8Array[] {
  return data instanceof Uint8Array ? [data] : [...data]
}

/** Seals plaintext into one new buffer: ciphertext, then the tag. */
export function seal (plaintext: Data, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(plaintext.byteLength + TAG)
  nativeAead.seal(k, nonce, ad, partsOf(plaintext), out)
  return out
}

/**
 * Opens ciphertext (its tag at the end), straight from the buffers it arrived in. The plaintext
 * goes into dst when it is given and has the plaintext's length (libp2p-noise passes the message's
 * own bytes, so a message is decrypted in place), else into a new buffer. Throws EPEER when the
 * tag does not check.
 */
export function open (ciphertext: Data, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array, dst?: Uint8Array): Uint8Array {
  const n = ciphertext.byteLength - TAG
  if (n < 0) throw new ImgmeshError('EPEER', 'noise message shorter than its tag')
  const parts: Uint8Array[] = []
  let tag: Uint8Array | null = null
  if (ciphertext instanceof Uint8Array) {
    parts.push(ciphertext.subarray(0, n))
    tag = ciphertext.subarray(n)
  } else {
    let at = 0
    for (const buf of ciphertext) {
      if (at < n) parts.push(buf.subarray(0, Math.min(buf.byteLength, n - at)))
      if (at <= n && at + buf.byteLength >= n + TAG) tag = buf.subarray(n - at, n - at + TAG)
      at += buf.byteLength
    }
    // the tag straddles two buffers: copy its 16 bytes
    tag ??= ciphertext.subarray().subarray(n)
  }
  const out = dst !== undefined && dst.byteLength === n && fitsInPlace(parts, dst) ? dst : Buffer.allocUnsafe(n)
  if (!nativeAead.open(k, nonce, ad, parts, tag, out)) throw new ImgmeshError('EPEER', 'noise message failed authentication')
  return out
}

/** Whether every part may be decrypted onto its own place in dst: it is that place, or shares no memory with dst. */
function fitsInPlace (parts: Uint8Array[], dst: Uint8Array): boolean {
  let offset = 0
  for (const part of parts) {
    const apart = part.buffer !== dst.buffer || part.byteLength === 0 || part.byteOffset === dst.byteOffset + offset ||
      part.byteOffset + part.byteLength <= dst.byteOffset || dst.byteOffset + dst.byteLength <= part.byteOffset
    if (!apart) return false
    offset += part.byteLength
  }
  return true
}

/** libp2p-noise's crypto with the cipher above. */
export const noiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt: seal,
  chaCha20Poly1305Decrypt: open
}
