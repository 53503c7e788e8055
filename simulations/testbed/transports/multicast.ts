/**
 * Multicast with udpcast (Flamethrower's successor): udp-sender on h0 sends image.tar once to a
 * multicast group; udp-receiver on every client writes it to its scratch directory; then the
 * client unpacks it with tar into its target. Two times per client: received (tar on disk)
 * and finished (unpacked).
 *
 * The sender starts when all N receivers have connected (--min-receivers N). Its rate is bounded
 * by h0's shaped link (the htb queue pushes back on the UDP socket), so no --max-bitrate is given
 * by default; `--opt multicast.max-bitrate=45m` sets one. `--opt multicast.rcvbuf=BYTES` sets the
 * receivers' socket buffer (udp-receiver --rcvbuf; capped by net.core.rmem_max).
 */
import { join } from 'node:path'
import { waitExit } from '../netns.ts'
import { newOutcomes, unpack, waitListening } from './common.ts'
import type { Transport, TransportContext, TransportResult } from './types.ts'

const PORTBASE = 9000

async function run (ctx: TransportContext): Promise<TransportResult> {
  if (ctx.tar === null) throw new Error('multicast needs the image tar')
  const server = ctx.tb.server
  const n = ctx.tb.clients.length
  const notes: string[] = []
  const setupStart = Date.now()
  const senderArgs = ['--file', ctx.tar, '--interface', server.ifname, '--min-receivers', String(n), '--nokbd', '--portbase', String(PORTBASE)]
  const maxBitrate = ctx.options['max-bitrate']
  if (maxBitrate !== undefined) {
    senderArgs.push('--max-bitrate', maxBitrate)
    notes.push(`udp-sender --max-bitrate ${maxBitrate}`)
  } else {
    notes.push('udp-sender without --max-bitrate (paced by the shaped link)')
  }
  const sender = ctx.spawn({ name: 'udp-sender', host: server, cmd: 'udp-sender', args: senderArgs, role: 'server' })
  await waitListening(server, PORTBASE + 1, 'udp', Math.min(ctx.deadline, Date.now() + 20_000), sender)
  const setupMs = Date.now() - setupStart

  const outcomes = newOutcomes(ctx)
  const t0 = Date.now()
  const rcvbuf = ctx.options.rcvbuf
  const receiverExtra = rcvbuf === undefined ? [] : ['--rcvbuf', rcvbuf]
  if (rcvbuf !== undefined) notes.push(`udp-receiver --rcvbuf ${rcvbuf}`)
  const receivers = ctx.tb.clients.map((h, i) => ctx.spawn({
    name: `${h.name}-udp-receiver`,
    host: h,
    cmd: 'udp-receiver',
    args: ['--file', join(ctx.scratch[i], 'image.tar'), '--interface', h.ifname, '--nokbd', '--portbase', String(PORTBASE), ...receiverExtra],
    role: 'client'
  }))
  await Promise.all(receivers.map(async (p, i) => {
    const ex = await waitExit(p, ctx.deadline)
    if (ex === null) { outcomes[i].error = 'timeout while receiving'; return }
    if (ex.code !== 0) { outcomes[i].error = `udp-receiver exited ${String(ex.code ?? ex.signal)}`; return }
    outcomes[i].receivedAt = ex.at
    await unpack(ctx, i, join(ctx.scratch[i], 'image.tar'), outcomes[i])
  }))
  const sx = await waitExit(sender, Math.min(ctx.deadline, Date.now() + 10_000))
  if (sx === null) notes.push('udp-sender had not exited 10 s after the last receiver; stopped')
  await ctx.stopAll()
  return { t0, clients: outcomes, setupMs, notes }
}

export const multicastTransport: Transport = {
  name: 'multicast',
  needsTar: true,
  tools: ['udp-sender', 'udp-receiver', 'tar', 'ss'],
  description: 'udp-sender on h0 multicasts image.tar to udp-receiver on every client, then tar -x',
  run
}
