/** Typed access to heap.c: giving the C heap's free pages back to the kernel. */
import { createRequire } from 'node:module'

export interface NativeHeap {
  /** malloc_trim(0): true if memory was returned (always false where the C library has no trim). */
  trim: () => boolean
}

const require = createRequire(import.meta.url)
export const nativeHeap: NativeHeap = require('./build/Release/heap.node') as NativeHeap
