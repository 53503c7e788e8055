/**
 * The noise channel's cipher (node/swarm/noise-crypto.ts): the same bytes as libp2p-noise's own
 * ChaCha20-Poly1305 in both directions (so either end may run either), in place or not, lists
 * or single buffers, and every tampered message refused. Every swarm test runs its agents'
 * connections through it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { noiseCrypto, open, seal, type Data } from '../node/swarm/noise-crypto.ts'
import { nativeAead } from '../node/native/aead.ts'
import { ImgmeshError } from '../node/errors.ts'

const flat = (d: Data): Buffer => Buffer.from(d instanceof Uint8Array ? d : d.subarray())
const SIZES = [0, 1, 15, 16, 17, 1199, 1200, 4096, 65519, 65535 - 16]

test('seal gives the bytes of libp2p-noise\'s cipher, from one buffer or a list', () => {
  for (const n of SIZES) {
    const k = randomBytes(32)
    const nonce = randomBytes(12)
    const ad = randomBytes(n % 3 === 0 ? 0 : 32)
    const plain = randomBytes(n)
    const theirs = flat(defaultCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
    assert.deepEqual(Buffer.from(seal(plain, nonce, ad, k)), theirs, `size ${n}`)
    const cut = Math.floor(n / 3)
    const list = new Uint8ArrayList(plain.subarray(0, cut), plain.subarray(cut, 2 * cut), plain.subarray(2 * cut))
    assert.deepEqual(Buffer.from(seal(list, nonce, ad, k)), theirs, `size ${n}, as a list`)
  }
})

test('open reads libp2p-noise\'s messages: into a new buffer, in place, from a list', () => {
  for (const n of SIZES) {
    const k = randomBytes(32)
    const nonce = randomBytes(12)
    const ad = randomBytes(32)
    const plain = randomBytes(n)
    const sealed = flat(defaultCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
    assert.deepEqual(Buffer.from(open(sealed, nonce, ad, k)), plain, `size ${n}`)
    // in place, as libp2p-noise asks: dst is the message's own bytes
    const wire = Buffer.from(sealed)
    const dst = wire.subarray(0, n)
    const out = open(wire, nonce, ad, k, dst)
    assert.equal(out, dst)
    assert.deepEqual(Buffer.from(dst), plain, `size ${n}, in place`)
    // a list, its dst a copy of the ciphertext (what Uint8ArrayList.subarray gives), cut
    // anywhere: in the body, at its end, through the tag, in one buffer
    for (const cut of [Math.floor(sealed.length / 2), n, n + 7, sealed.length - 1]) {
      if (cut <= 0 || cut >= sealed.length) continue
      const cutAt = (): Uint8ArrayList => new Uint8ArrayList(Buffer.from(sealed.subarray(0, cut)), Buffer.from(sealed.subarray(cut)))
      const list = cutAt()
      assert.deepEqual(Buffer.from(open(list, nonce, ad, k, list.subarray(0, n))), plain, `size ${n}, as a list cut at ${cut}`)
      assert.deepEqual(Buffer.from(open(cutAt(), nonce, ad, k)), plain, `size ${n}, as a list cut at ${cut}, no dst`)
    }
    const one = Buffer.from(sealed)
    const single = new Uint8ArrayList(one)
    const inPlace = open(single, nonce, ad, k, one.subarray(0, n))
    assert.equal(inPlace.buffer, one.buffer)
    assert.deepEqual(Buffer.from(inPlace), plain, `size ${n}, a one-buffer list in place`)
    // and libp2p-noise opens ours
    assert.deepEqual(flat(defaultCrypto.chaCha20Poly1305Decrypt(seal(plain, nonce, ad, k), nonce, ad, k)), plain)
  }
})

test('a dst that overlaps the ciphertext without being it is not written to', () => {
  const k = randomBytes(32)
  const nonce = randomBytes(12)
  const plain = randomBytes(1000)
  const wire = Buffer.from(seal(plain, nonce, new Uint8Array(0), k))
  const shifted = wire.subarray(1, 1001)
  const before = Buffer.from(wire)
  const out = open(wire, nonce, new Uint8Array(0), k, shifted)
  assert.notEqual(out, shifted)
  assert.deepEqual(Buffer.from(out), plain)
  assert.deepEqual(wire, before)
})

test('tampered messages, a wrong key, nonce or associated data are refused with EPEER', () => {
  const k = randomBytes(32)
  const nonce = randomBytes(12)
  const ad = randomBytes(32)
  const plain = randomBytes(3000)
  const sealed = Buffer.from(seal(plain, nonce, ad, k))
  const refused = (fn: () => unknown, what: string): void => {
    assert.throws(fn, (err: unknown) => err instanceof ImgmeshError && err.code === 'EPEER', what)
  }
  for (const at of [0, 1500, sealed.length - 17, sealed.length - 16, sealed.length - 1]) {
    const bad = Buffer.from(sealed)
    bad[at] ^= 0x40
    refused(() => open(bad, nonce, ad, k), `byte ${at} flipped`)
    refused(() => open(bad, nonce, ad, k, bad.subarray(0, 3000)), `byte ${at} flipped, in place`)
  }
  refused(() => open(sealed, nonce, ad, randomBytes(32)), 'wrong key')
  refused(() => open(sealed, randomBytes(12), ad, k), 'wrong nonce')
  refused(() => open(sealed, nonce, randomBytes(32), k), 'wrong associated data')
  refused(() => open(sealed.subarray(0, 10), nonce, ad, k), 'shorter than a tag')
  // the cipher still works after failures
  assert.deepEqual(Buffer.from(open(sealed, nonce, ad, k)), plain)
})

test('the native calls check their arguments', () => {
  const k = randomBytes(32)
  const nonce = randomBytes(12)
  const e = new Uint8Array(0)
  assert.throws(() => nativeAead.seal(randomBytes(31), nonce, e, [], new Uint8Array(16)), /32 bytes/)
  assert.throws(() => nativeAead.seal(k, randomBytes(8), e, [], new Uint8Array(16)), /nonce/)
  assert.throws(() => nativeAead.seal(k, nonce, e, [new Uint8Array(4)], new Uint8Array(16)), /length/)
  const buf = new Uint8Array(64)
  assert.throws(() => nativeAead.seal(k, nonce, e, [buf.subarray(0, 20)], buf.subarray(10, 46)), /overlaps/)
  assert.throws(() => nativeAead.open(k, nonce, e, [new Uint8Array(4)], new Uint8Array(15), new Uint8Array(4)), /16 bytes/)
  assert.throws(() => nativeAead.open(k, nonce, e, [new Uint8Array(4)], new Uint8Array(16), new Uint8Array(5)), /as long as/)
  // a part that lies in dst but not at its own place would be overwritten before it is read
  assert.throws(() => nativeAead.open(k, nonce, e, [buf.subarray(0, 10), buf.subarray(0, 10)], new Uint8Array(16), buf.subarray(0, 20)), /overlaps/)
  assert.throws(() => nativeAead.open(k, nonce, e, [buf.subarray(5, 25)], new Uint8Array(16), buf.subarray(0, 20)), /overlaps/)
  assert.throws(() => nativeAead.seal(k, nonce, e, 'x' as unknown as Uint8Array[], new Uint8Array(16)), /array/)
  assert.throws(() => nativeAead.open(k, nonce, e, [[1, 2]] as unknown as Uint8Array[], new Uint8Array(16), new Uint8Array(2)), /Uint8Array/)
})

test('the interface keeps libp2p-noise\'s hashes and key agreement', () => {
  assert.equal(noiseCrypto.hashSHA256, defaultCrypto.hashSHA256)
  assert.equal(noiseCrypto.generateX25519KeyPair, defaultCrypto.generateX25519KeyPair)
  assert.equal(noiseCrypto.generateX25519SharedKey, defaultCrypto.generateX25519SharedKey)
})
