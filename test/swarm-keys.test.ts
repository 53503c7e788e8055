import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { ImgmeshError } from '../node/errors.ts'
import {
  clusterKeyId, clusterPnetPsk, clusterPrologue, createClusterKey, formatClusterKey, generateClusterKey, loadClusterKey,
  loadOrCreateClusterKey, parseClusterKey
} from '../node/swarm/cluster-key.ts'
import { decodePeerKey, encodePeerKey, generatePeerKey, loadOrCreatePeerKey, loadPeerKey, peerIdOf, savePeerKey } from '../node/swarm/peer-key.ts'

function hasCode (code: string) {
  return (err: unknown): boolean => err instanceof ImgmeshError && err.code === code
}

async function withDir (fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'imgmesh-keys-'))
  try { await fn(dir) } finally { await rm(dir, { recursive: true, force: true }) }
}

test('cluster key: file format round-trip and accepted spellings', () => {
  const key = generateClusterKey()
  assert.equal(key.length, 32)
  const text = formatClusterKey(key)
  assert.match(text, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
  assert.deepEqual(parseClusterKey(text), key)
  assert.deepEqual(parseClusterKey(text.replaceAll('\n', '\r\n')), key)
  const hex = Buffer.from(key).toString('hex')
  assert.deepEqual(parseClusterKey(`  ${hex.toUpperCase()}\n`), key)
  for (const bad of ['', 'abc', hex.slice(2), hex + '00', `/key/swarm/psk/1.0.0/\n/base64/\n${hex}`, `/key/other/\n/base16/\n${hex}`, 'x'.repeat(10_000)]) {
    assert.throws(() => parseClusterKey(bad), hasCode('EBADARG'), bad.slice(0, 40))
  }
})

test('cluster key: derived values differ per key and per use', () => {
  const a = generateClusterKey()
  const b = generateClusterKey()
  assert.equal(clusterPrologue(a).length, 32)
  assert.notDeepEqual(clusterPrologue(a), clusterPrologue(b))
  assert.deepEqual(clusterPrologue(a), clusterPrologue(Uint8Array.from(a)))
  assert.notDeepEqual(clusterPrologue(a), a)
  assert.match(clusterKeyId(a), /^[0-9a-f]{16}$/)
  assert.notEqual(clusterKeyId(a), clusterKeyId(b))
  // the pnet PSK is a PSK-v1 file of a derived key, not the cluster key itself
  const psk = new TextDecoder().decode(clusterPnetPsk(a))
  assert.ok(psk.startsWith('/key/swarm/psk/1.0.0/\n/base16/\n'))
  assert.ok(!psk.includes(Buffer.from(a).toString('hex')))
  assert.throws(() => clusterPrologue(new Uint8Array(31)), hasCode('EBADARG'))
})

test('cluster key: create (0600, never overwrites), load, load-or-create', async () => {
  await withDir(async dir => {
    const file = join(dir, 'sub', 'cluster.key')
    await assert.rejects(loadClusterKey(file), hasCode('EBADARG'))
    const key = await createClusterKey(file)
    assert.equal((await stat(file)).mode & 0o777, 0o600)
    assert.deepEqual(await loadClusterKey(file), key)
    await assert.rejects(createClusterKey(file), hasCode('ECONFLICT'))
    assert.deepEqual(await loadOrCreateClusterKey(file), key)
    const other = join(dir, 'other.key')
    const created = await loadOrCreateClusterKey(other)
    assert.deepEqual(await loadClusterKey(other), created)
    await writeFile(join(dir, 'bad.key'), 'not a key\n')
    await assert.rejects(loadClusterKey(join(dir, 'bad.key')), hasCode('EBADARG'))
    // a given key is written as given
    const given = generateClusterKey()
    await createClusterKey(join(dir, 'given.key'), given)
    assert.equal(await readFile(join(dir, 'given.key'), 'utf8'), formatClusterKey(given))
  })
})

test('peer key: save, load, load-or-create, refuse garbage and non-ed25519', async () => {
  await withDir(async dir => {
    const key = await generatePeerKey()
    assert.equal(key.type, 'Ed25519')
    const file = join(dir, 'peer.key')
    await savePeerKey(file, key)
    assert.equal((await stat(file)).mode & 0o777, 0o600)
    const back = await loadPeerKey(file)
    assert.ok(back.equals(key))
    assert.equal(peerIdOf(back).toString(), peerIdOf(key).toString())
    await assert.rejects(savePeerKey(file, key), hasCode('ECONFLICT'))
    assert.ok((await loadOrCreatePeerKey(file)).equals(key))
    const fresh = await loadOrCreatePeerKey(join(dir, 'fresh.key'))
    assert.ok((await loadPeerKey(join(dir, 'fresh.key'))).equals(fresh))
    assert.deepEqual(decodePeerKey(encodePeerKey(key)).raw, key.raw)
    assert.throws(() => decodePeerKey(new Uint8Array([1, 2, 3])), hasCode('EBADARG'))
    assert.throws(() => decodePeerKey(new Uint8Array(4096)), hasCode('EBADARG'))
    const secp = await generateKeyPair('secp256k1')
    assert.throws(() => decodePeerKey(privateKeyToProtobuf(secp)), hasCode('EBADARG'))
    await assert.rejects(loadPeerKey(join(dir, 'missing.key')), hasCode('EBADARG'))
  })
})
