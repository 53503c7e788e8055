/**
 * The cluster key: 32 random bytes shared by every agent of one swarm. It gates every
 * connection: a node without it cannot finish a handshake (see `clusterPrologue`).
 *
 * File format (`cluster.key`), the PSK-v1 text format of libp2p/IPFS `swarm.key`, so the same
 * file also works with `@libp2p/pnet` and is familiar to operators:
 *
 *     /key/swarm/psk/1.0.0/
 *     /base16/
 *     <64 lowercase hex characters>
 *
 * On read, a file holding only the 64 hex characters (one line, surrounding whitespace
 * ignored) is accepted too. Anything else is rejected with EBADARG. The file is created with
 * mode 0600 and never overwritten.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ImgmeshError, isErrno } from '../errors.ts'

export const CLUSTER_KEY_LENGTH = 32
const PSK_V1_HEADER = '/key/swarm/psk/1.0.0/'
const PSK_V1_CODEC = '/base16/'
const HEX_KEY = /^[0-9a-fA-F]{64}$/
/** A cluster key file is a few lines; anything much larger is not one. */
const MAX_FILE_SIZE = 4096

const PROLOGUE_CONTEXT = 'imgmesh-cluster-v1'
const PNET_CONTEXT = 'imgmesh-pnet-v1'
const ID_CONTEXT = 'imgmesh-cluster-id-v1'

export function generateClusterKey (): Uint8Array {
  return new Uint8Array(randomBytes(CLUSTER_KEY_LENGTH))
}

export function validateClusterKey (key: Uint8Array): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== CLUSTER_KEY_LENGTH) {
    throw new ImgmeshError('EBADARG', `a cluster key is ${CLUSTER_KEY_LENGTH} bytes`)
  }
  return key
}

/** The text of a cluster key file (PSK-v1 format, trailing newline). */
export function formatClusterKey (key: Uint8Array): string {
  validateClusterKey(key)
  return `${PSK_V1_HEADER}\n${PSK_V1_CODEC}\n${Buffer.from(key).toString('hex')}\n`
}

/** Parses the text of a cluster key file (PSK-v1 or bare hex). Throws EBADARG. */
export function parseClusterKey (text: string | Uint8Array, source = 'cluster key'): Uint8Array {
  const str = typeof text === 'string' ? text : Buffer.from(text).toString('utf8')
  if (str.length > MAX_FILE_SIZE) throw new ImgmeshError('EBADARG', `${source}: too large to be a cluster key`)
  const lines = str.split(/\r\n|\r|\n/).map(l => l.trim()).filter(l => l !== '')
  let hex: string | undefined
  if (lines.length === 1) {
    hex = lines[0]
  } else if (lines.length === 3 && lines[0] === PSK_V1_HEADER) {
    if (lines[1] !== PSK_V1_CODEC) throw new ImgmeshError('EBADARG', `${source}: only the ${PSK_V1_CODEC} encoding is supported, not ${lines[1]}`)
    hex = lines[2]
  }
  if (hex === undefined || !HEX_KEY.test(hex)) {
    throw new ImgmeshError('EBADARG', `${source}: not a cluster key (expected ${PSK_V1_HEADER} / ${PSK_V1_CODEC} / 64 hex characters)`)
  }
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

/** Reads a cluster key file. Missing: EBADARG naming the file; malformed: EBADARG. */
export async function loadClusterKey (file: string): Promise<Uint8Array> {
  let bytes: Buffer
  try {
    bytes = await readFile(file)
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImgmeshError('EBADARG', `cluster key ${file} does not exist`, { path: file, cause: err })
    throw new ImgmeshError('EIO', `reading cluster key ${file}: ${(err as Error).message}`, { path: file, cause: err })
  }
  return parseClusterKey(bytes, `cluster key ${file}`)
}

/** Writes `key` (a new random key if omitted) to `file`, mode 0600. Fails with ECONFLICT if the file exists. */
export async function createClusterKey (file: string, key: Uint8Array = generateClusterKey()): Promise<Uint8Array> {
  validateClusterKey(key)
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  try {
    await writeFile(file, formatClusterKey(key), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if (isErrno(err, 'EEXIST')) throw new ImgmeshError('ECONFLICT', `cluster key ${file} already exists`, { path: file, cause: err })
    throw new ImgmeshError('EIO', `writing cluster key ${file}: ${(err as Error).message}`, { path: file, cause: err })
  }
  return key
}

/** Loads the key in `file`, or creates a new random one there if the file does not exist. */
export async function loadOrCreateClusterKey (file: string): Promise<Uint8Array> {
  try {
    return await createClusterKey(file)
  } catch (err) {
    if (err instanceof ImgmeshError && err.code === 'ECONFLICT') return await loadClusterKey(file)
    throw err
  }
}

function derive (context: string, key: Uint8Array): Uint8Array {
  validateClusterKey(key)
  return new Uint8Array(createHash('sha256').update(context).update(key).digest())
}

/**
 * The noise prologue: sha256("imgmesh-cluster-v1" || key). Both sides of a noise handshake
 * hash their prologue into the handshake transcript; if they differ, the first authenticated
 * handshake message fails to decrypt and the connection is dropped before any protocol runs.
 */
export function clusterPrologue (key: Uint8Array): Uint8Array {
  return derive(PROLOGUE_CONTEXT, key)
}

/** The PSK-v1 file bytes for `@libp2p/pnet` (key sha256("imgmesh-pnet-v1" || key)), for the pnet gate. */
export function clusterPnetPsk (key: Uint8Array): Uint8Array {
  return new TextEncoder().encode(formatClusterKey(derive(PNET_CONTEXT, key)))
}

/** A short public fingerprint of the key (16 hex chars), safe to print and log to tell clusters apart. */
export function clusterKeyId (key: Uint8Array): string {
  return Buffer.from(derive(ID_CONTEXT, key).subarray(0, 8)).toString('hex')
}

export function clusterKeysEqual (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}
