/**
 * One system call per batch of bytes handed to a TCP connection, not one per buffer.
 *
 * Each noise message leaves the encrypter as two buffers, its 2-byte length and its ciphertext,
 * and the TCP connection of @libp2p/tcp writes every buffer of a batch with its own
 * `socket.write`, so its own `write(2)`. On the testbed (N=10, 50 Mbit/s) a third of a
 * client's write calls carried 2 bytes, and socket writes were the largest single cost in the
 * agents' CPU profiles: every call walks the kernel's TCP, veth, bridge and qdisc path.
 *
 * libp2p hands the raw connection, before encryption, to its connection protector. This one
 * wraps that connection's `sendData` in `socket.cork()` / `socket.uncork()`: Node then passes the
 * whole batch to one `writev(2)`. Nothing is delayed (the socket is uncorked before sendData
 * returns) and nothing is copied. A connection that is not a TCP socket connection is left as
 * it is. Another protector (pnet) still runs after it, on the same connection.
 */
import { Socket } from 'node:net'
import type { AbortOptions, ConnectionProtector, MessageStream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'

/** The parts of @libp2p/tcp's connection used here (AbstractMultiaddrConnection#sendData). */
interface SocketConnection {
  socket?: unknown
  sendData?: (data: Uint8ArrayList) => { sentBytes: number, canSendMore: boolean }
}

/**
 * Makes the connection write each batch with one system call. Returns whether it could: false
 * for anything but a TCP connection of the shape above (another transport, another version).
 * Applying it twice is harmless: corks nest, and the outer uncork writes.
 */
export function coalesceWrites (conn: MessageStream): boolean {
  const c = conn as unknown as SocketConnection
  const socket = c.socket
  const sendData = c.sendData
  if (!(socket instanceof Socket) || typeof sendData !== 'function') return false
  c.sendData = (data: Uint8ArrayList) => {
    socket.cork()
    try {
      return sendData.call(c, data)
    } finally {
      socket.uncork()
    }
  }
  return true
}

/**
 * A connection protector for libp2p's `connectionProtector` option: coalesces the writes of
 * every connection, then hands it to `inner` (a pre-shared-key protector) if given.
 */
export function coalescingProtector<C> (inner?: (components: C) => ConnectionProtector): (components: C) => ConnectionProtector {
  return (components: C) => {
    const next = inner?.(components)
    return {
      async protect (connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
        coalesceWrites(connection)
        return next === undefined ? connection : await next.protect(connection, options)
      }
    }
  }
}
