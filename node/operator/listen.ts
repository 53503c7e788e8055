/** HOST:PORT parsing and listening for the operator HTTP servers (dashboard, metrics). */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ImgmeshError } from '../errors.ts'

export interface ListenAddress { host: string, port: number }

/** `127.0.0.1:8080`, `[::1]:8080`, `:8080` (all interfaces), `8080` (127.0.0.1). Port 0 picks a free port. */
export function parseListen (text: string): ListenAddress {
  const t = text.trim()
  let host: string
  let port: string
  const v6 = /^\[([0-9a-fA-F:.]+)\]:([0-9]+)$/.exec(t)
  if (v6 !== null) { host = v6[1]; port = v6[2] } else if (/^[0-9]+$/.test(t)) { host = '127.0.0.1'; port = t } else {
    const i = t.lastIndexOf(':')
    if (i < 0) throw new ImgmeshError('EBADARG', `listen address ${JSON.stringify(text)} is not HOST:PORT`)
    host = t.slice(0, i) === '' ? '0.0.0.0' : t.slice(0, i)
    port = t.slice(i + 1)
  }
  const n = Number(port)
  if (!/^[0-9]+$/.test(port) || n > 65535) throw new ImgmeshError('EBADARG', `listen address ${JSON.stringify(text)} has no valid port`)
  if (!/^[A-Za-z0-9.:-]+$/.test(host)) throw new ImgmeshError('EBADARG', `listen address ${JSON.stringify(text)} has no valid host`)
  return { host, port: n }
}

/** Listens and returns the bound `host:port` (IPv6 in brackets). */
export async function listenOn (server: Server, addr: ListenAddress): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => { reject(new ImgmeshError('EIO', `cannot listen on ${addr.host}:${addr.port}: ${err.message}`, { cause: err })) }
    server.once('error', onError)
    server.listen(addr.port, addr.host, () => { server.off('error', onError); resolve() })
  })
  const a = server.address() as AddressInfo
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
}
