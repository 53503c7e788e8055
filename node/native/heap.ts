/** Typed access to heap.c: the C heap's free pages, and huge pages for large buffers. */
import { createRequire } from 'node:module'

export interface NativeHeap {
  /** malloc_trim(0): true if memory was returned (always false where the C library has no trim). */
  trim: () => boolean
  /** Asks for huge pages under the 2 MiB-aligned part of `buf`; false where none is offered. */
  hugePages: (buf: Uint8Array) => boolean
}

const require = createRequire(import.meta.url)
export const nativeHeap: NativeHeap = require('./build/Release/heap.node') as NativeHeap
