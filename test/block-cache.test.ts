import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { BlockCache } from '../node/exchange/block-cache.ts'
import { nativeHeap } from '../node/native/heap.ts'

/** The bytes a key holds in its n-th version: distinct for every (key, n, length). */
function content (key: string, n: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  let x = (key.charCodeAt(0) * 7919 + n * 104729 + length) >>> 0
  for (let i = 0; i < length; i++) { x = (x * 1103515245 + 12345) >>> 0; out[i] = x >>> 24 }
  return out
}

test('the block cache keeps the most recently used blocks within its budget', () => {
  const c = new BlockCache(10)
  c.put('a', new Uint8Array(4))
  c.put('b', new Uint8Array(4))
  assert.ok(c.get('a') !== undefined)
  c.put('c', new Uint8Array(4))
  assert.equal(c.get('b'), undefined)
  assert.ok(c.get('a') !== undefined && c.get('c') !== undefined)
  assert.ok(c.bytes <= 10)
  c.put('huge', new Uint8Array(6))
  assert.equal(c.get('huge'), undefined, 'a block over half the budget is not kept')
  assert.ok(c.get('a') !== undefined && c.get('c') !== undefined, 'and evicts nothing')
})

test('a block got from the cache is a copy: later puts that overwrite its place in the arena do not change it', () => {
  const c = new BlockCache(64)
  c.put('a', content('a', 0, 30))
  const got = c.get('a')!
  got[0] ^= 0xff
  assert.deepEqual(c.get('a'), content('a', 0, 30), 'changing the copy leaves the cached block alone')
  const held = c.get('a')!
  for (let i = 0; i < 10; i++) c.put(`k${i}`, content('k', i, 30))
  assert.equal(c.get('a'), undefined)
  assert.deepEqual(held, content('a', 0, 30), 'a copy taken before the arena was overwritten keeps its bytes')
})

test('the cache never returns bytes other than the last ones put under a key, and counts its bytes right (random puts, gets, deletes)', () => {
  fc.assert(fc.property(
    fc.integer({ min: 8, max: 400 }),
    fc.array(fc.tuple(fc.constantFrom('put', 'put', 'get', 'del'), fc.integer({ min: 0, max: 11 }), fc.integer({ min: 0, max: 220 })), { maxLength: 300 }),
    (budget, ops) => {
      const c = new BlockCache(budget)
      const latest = new Map<string, Uint8Array>()
      let n = 0
      for (const [op, k, len] of ops) {
        const key = `key${k}`
        if (op === 'put') {
          const bytes = content(key, n++, len)
          c.put(key, bytes)
          if (len <= budget / 2) {
            latest.set(key, bytes)
            assert.deepEqual(c.get(key), bytes, 'the block just put is there')
          } else {
            latest.delete(key)
            assert.equal(c.get(key), undefined)
          }
        } else if (op === 'get') {
          const got = c.get(key)
          if (got !== undefined) assert.deepEqual(got, latest.get(key))
        } else {
          c.delete(key)
          latest.delete(key)
          assert.equal(c.get(key), undefined)
        }
        assert.ok(c.bytes >= 0 && c.bytes <= budget, `bytes ${c.bytes} within ${budget}`)
      }
      let live = 0
      for (const [key, bytes] of latest) if (c.has(key)) live += bytes.length
      assert.equal(c.bytes, live, 'bytes is the sum of the blocks held')
      for (const [key, bytes] of latest) {
        const got = c.get(key)
        if (got !== undefined) assert.deepEqual(got, bytes)
      }
    }
  ), { numRuns: 300 })
})

test('a hot block survives a stream of others many times the budget', () => {
  const c = new BlockCache(1000)
  c.put('hot', content('h', 0, 100))
  for (let i = 0; i < 200; i++) {
    c.put(`cold${i}`, content('c', i, 100))
    assert.ok(c.get('hot') !== undefined, `hot still held after ${i + 1} others`)
  }
  assert.ok(c.bytes <= 1000)
})

test('release drops every block and the arena; the cache works again after', () => {
  const c = new BlockCache(1000)
  c.put('a', content('a', 0, 100))
  c.put('b', content('b', 0, 100))
  c.release()
  assert.equal(c.bytes, 0)
  assert.equal(c.get('a'), undefined)
  assert.equal(c.has('b'), false)
  c.put('c', content('c', 0, 100))
  assert.deepEqual(c.get('c'), content('c', 0, 100))
  assert.equal(c.bytes, 100)
})

test('lend hands the held bytes to the call without a copy and counts a hit; a missing block calls nothing', () => {
  const c = new BlockCache(1024)
  const a = content('a', 0, 100)
  c.put('a', a)
  let seen: Uint8Array | null = null
  assert.equal(c.lend('a', (bytes) => { seen = bytes; assert.deepEqual(Buffer.from(bytes), Buffer.from(a)) }), true)
  assert.ok(seen !== null)
  assert.equal(c.hits, 1)
  let called = false
  assert.equal(c.lend('b', () => { called = true }), false)
  assert.equal(called, false)
  assert.equal(c.misses, 1)
  // lent, not copied: the arena's bytes (so the caller must be done with them when use returns)
  c.put('c', content('c', 0, 512))
  c.put('d', content('d', 0, 512))
  assert.equal(c.lend('a', () => {}), false, 'a was overwritten')
  // lending does not move a block: the next put still overwrites the oldest
  const e = new BlockCache(1000)
  for (const k of ['x', 'y', 'z']) e.put(k, content(k, 0, 300))
  assert.equal(e.lend('x', () => {}), true)
  e.put('w', content('w', 0, 300))
  assert.equal(e.has('x'), false)
  assert.equal(e.has('y'), true)
})

/** Whether the kernel hands out transparent huge pages to a region that asks (`[always]` or `[madvise]`). */
function hugePagesOffered (): boolean {
  try {
    return /\[(always|madvise)\]/.test(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))
  } catch {
    return false
  }
}

test('filling a fresh arena takes one page fault per 2 MiB, not per 4 KiB, where huge pages are offered', { skip: !hugePagesOffered() && 'no transparent huge pages here' }, () => {
  const budget = 32 * 1024 * 1024
  const block = content('z', 1, 64 * 1024)
  const c = new BlockCache(budget)
  const before = process.resourceUsage().minorPageFault
  for (let i = 0; i < budget / block.length; i++) c.put(`k${i}`, block)
  const faults = process.resourceUsage().minorPageFault - before
  assert.equal(c.bytes, budget)
  // 4 KiB pages would take 8,192 faults; the unaligned head and tail of the arena, under 4 MiB, take up to 1,024
  assert.ok(faults < 2048, `${faults} page faults filling a 32 MiB arena`)
  assert.deepEqual(c.get('k7'), block)
})

test('huge pages are asked for a Uint8Array only', () => {
  assert.throws(() => nativeHeap.hugePages(new Uint16Array(8) as unknown as Uint8Array), /hugePages/)
  assert.throws(() => nativeHeap.hugePages({} as unknown as Uint8Array), /hugePages/)
  // smaller than one aligned 2 MiB page: nothing to ask for
  assert.equal(nativeHeap.hugePages(new Uint8Array(4096)), false)
})
