/**
 * The peer key: this node's libp2p identity (ed25519), kept in a file as the libp2p protobuf
 * encoding of the private key (`privateKeyToProtobuf`), mode 0600. Its public half is the
 * peer id. Separate from the publisher key (node/keys), which signs versions.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ImgmeshError, isErrno } from '../errors.ts'

/** An ed25519 private key marshalled as protobuf is 68 bytes; allow some slack, refuse the rest. */
const MAX_KEY_FILE = 1024

export async function generatePeerKey (): Promise<PrivateKey> {
  return await generateKeyPair('Ed25519')
}

export function encodePeerKey (key: PrivateKey): Uint8Array {
  return privateKeyToProtobuf(key)
}

/** Decodes a protobuf-marshalled private key; only ed25519 is accepted. Throws EBADARG. */
export function decodePeerKey (bytes: Uint8Array, source = 'peer key'): PrivateKey {
  if (bytes.length > MAX_KEY_FILE) throw new ImgmeshError('EBADARG', `${source}: too large to be a peer key`)
  let key: PrivateKey
  try {
    key = privateKeyFromProtobuf(bytes)
  } catch (err) {
    throw new ImgmeshError('EBADARG', `${source}: not a libp2p private key (${(err as Error).message})`, { cause: err })
  }
  if (key.type !== 'Ed25519') throw new ImgmeshError('EBADARG', `${source}: is a ${key.type} key, imgmesh uses Ed25519`)
  return key
}

/** Writes the key to `file` (mode 0600). Fails with ECONFLICT if the file exists. */
export async function savePeerKey (file: string, key: PrivateKey): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  try {
    await writeFile(file, encodePeerKey(key), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if (isErrno(err, 'EEXIST')) throw new ImgmeshError('ECONFLICT', `peer key ${file} already exists`, { path: file, cause: err })
    throw new ImgmeshError('EIO', `writing peer key ${file}: ${(err as Error).message}`, { path: file, cause: err })
  }
}

export async function loadPeerKey (file: string): Promise<PrivateKey> {
  let bytes: Buffer
  try {
    bytes = await readFile(file)
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImgmeshError('EBADARG', `peer key ${file} does not exist`, { path: file, cause: err })
    throw new ImgmeshError('EIO', `reading peer key ${file}: ${(err as Error).message}`, { path: file, cause: err })
  }
  return decodePeerKey(bytes, `peer key ${file}`)
}

/** Loads the key in `file`, or creates and saves a new one if the file does not exist. */
export async function loadOrCreatePeerKey (file: string): Promise<PrivateKey> {
  const key = await generatePeerKey()
  try {
    await savePeerKey(file, key)
    return key
  } catch (err) {
    if (err instanceof ImgmeshError && err.code === 'ECONFLICT') return await loadPeerKey(file)
    throw err
  }
}

export function peerIdOf (key: PrivateKey): PeerId {
  return peerIdFromPrivateKey(key)
}
