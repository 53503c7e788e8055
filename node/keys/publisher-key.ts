/** The publisher key: ed25519, created at first use, signs the versions this node publishes. */
import { generateKeyPairSync, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { isErrno, ImgmeshError } from '../errors.ts'
import { publicKeyToHex } from '../../protocols/version.ts'

export interface PublisherKey { privateKey: KeyObject, publicKey: KeyObject, publicHex: string }

export async function loadOrCreatePublisherKey (file: string): Promise<PublisherKey> {
  let pem: string
  try {
    pem = await readFile(file, 'utf8')
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err
    const { privateKey } = generateKeyPairSync('ed25519')
    pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
    await mkdir(dirname(file), { recursive: true, mode: 0o700 })
    try {
      await writeFile(file, pem, { mode: 0o600, flag: 'wx' })
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e
      pem = await readFile(file, 'utf8')
    }
  }
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(pem)
  } catch (err) {
    throw new ImgmeshError('EBADARG', `publisher key ${file} is not a valid private key`, { cause: err })
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new ImgmeshError('EBADARG', `publisher key ${file} is not ed25519`)
  const publicKey = createPublicKey(privateKey)
  return { privateKey, publicKey, publicHex: publicKeyToHex(publicKey) }
}
