/** Typed access to aead.c: ChaCha20-Poly1305 with one reused cipher context, in place. */
import { createRequire } from 'node:module'

export interface NativeAead {
  /** out = ciphertext of the parts (in order) followed by the 16-byte tag; out.length = total + 16. */
  seal: (key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, parts: Uint8Array[], out: Uint8Array) => void
  /**
   * dst = plaintext of the parts (in order) if the tag checks, false otherwise; each part is its
   * own place in dst (in place) or lies outside dst.
   */
  open: (key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, parts: Uint8Array[], tag: Uint8Array, dst: Uint8Array) => boolean
}

const require = createRequire(import.meta.url)
export const nativeAead: NativeAead = require('./build/Release/aead.node') as NativeAead
