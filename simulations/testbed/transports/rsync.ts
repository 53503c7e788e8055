/**
 * rsync, SystemImager's default: an rsync daemon on h0 exports the image as module "image";
 * every client runs `rsync -aHAX --numeric-ids rsync://h0/image/ TARGET/` at once.
 * (-AX on top of the classic -aH so that ACLs and xattrs, which verification checks, travel too;
 * they cost nothing on a tree without them.) A client is finished when its rsync exits 0.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { waitExit } from '../netns.ts'
import { newOutcomes, waitListening } from './common.ts'
import type { Transport, TransportContext, TransportResult } from './types.ts'

const PORT = 873

async function run (ctx: TransportContext): Promise<TransportResult> {
  const server = ctx.tb.server
  const setupStart = Date.now()
  const conf = join(ctx.dir, 'rsyncd.conf')
  writeFileSync(conf, [
    `address = ${server.addr}`,
    `port = ${PORT}`,
    'uid = root',
    'gid = root',
    'use chroot = yes',
    'numeric ids = yes',
    'max connections = 0',
    'timeout = 600',
    '[image]',
    `  path = ${ctx.image.dir}`,
    '  read only = yes',
    '  list = yes',
    ''
  ].join('\n'))
  const daemon = ctx.spawn({
    name: 'rsyncd',
    host: server,
    cmd: 'rsync',
    args: ['--daemon', '--no-detach', `--config=${conf}`, `--log-file=${join(ctx.dir, 'rsyncd.log')}`],
    role: 'server'
  })
  await waitListening(server, PORT, 'tcp', Math.min(ctx.deadline, Date.now() + 20_000), daemon)
  const setupMs = Date.now() - setupStart

  const flags = (ctx.options.flags ?? '-aHAX --numeric-ids').split(/\s+/).filter(s => s !== '')
  const outcomes = newOutcomes(ctx)
  const t0 = Date.now()
  const clients = ctx.tb.clients.map((h, i) => ctx.spawn({
    name: `${h.name}-rsync`,
    host: h,
    cmd: 'rsync',
    args: [...flags, `rsync://${server.addr}:${PORT}/image/`, ctx.targets[i] + '/'],
    role: 'client'
  }))
  await Promise.all(clients.map(async (p, i) => {
    const ex = await waitExit(p, ctx.deadline)
    if (ex === null) { outcomes[i].error = 'timeout'; return }
    if (ex.code !== 0) { outcomes[i].error = `rsync exited ${String(ex.code ?? ex.signal)}`; return }
    outcomes[i].receivedAt = ex.at
    outcomes[i].finishedAt = ex.at
  }))
  await ctx.stopAll()
  return { t0, clients: outcomes, setupMs, notes: [`rsync ${flags.join(' ')} from an rsync daemon on h0`] }
}

export const rsyncTransport: Transport = {
  name: 'rsync',
  needsTar: false,
  tools: ['rsync', 'ss'],
  description: 'rsync daemon on h0, every client rsync -aHAX --numeric-ids at once',
  run
}
