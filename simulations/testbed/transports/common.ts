/** Helpers shared by the transports. */
import { nsProbe, sleep, waitExit } from '../netns.ts'
import type { Host, Proc } from '../netns.ts'
import { untarArgs } from '../image.ts'
import type { ClientOutcome, TransportContext } from './types.ts'

/** Waits until something listens on PORT (tcp or udp) inside the host's namespace. */
export async function waitListening (host: Host, port: number, proto: 'tcp' | 'udp', deadline: number, proc?: Proc): Promise<void> {
  for (let i = 0; i < 600 && Date.now() < deadline; i++) {
    if (proc?.exit != null) throw new Error(`${proc.name} exited (code ${String(proc.exit.code)}) before listening on ${proto}/${port}`)
    const r = nsProbe(host.ns, 'ss', ['-H', proto === 'tcp' ? '-ltn' : '-lun', `sport = :${port}`])
    if (r.ok && r.out.trim() !== '') return
    await sleep(100)
  }
  throw new Error(`nothing listening on ${host.addr} ${proto}/${port} in time`)
}

/**
 * Unpacks a received tar into the client's target (inside the client's namespace, CPU counted
 * as the client's) and records finishedAt; errors land in the outcome.
 */
export async function unpack (ctx: TransportContext, i: number, tar: string, out: ClientOutcome): Promise<void> {
  const host = ctx.tb.clients[i]
  const p = ctx.spawn({ name: `${host.name}-untar`, host, cmd: 'tar', args: untarArgs(tar, ctx.targets[i]), role: 'client' })
  const ex = await waitExit(p, ctx.deadline)
  if (ex === null) { out.error = 'timeout while unpacking'; return }
  if (ex.code !== 0) { out.error = `tar exited ${String(ex.code ?? ex.signal)}`; return }
  out.finishedAt = ex.at
}

export function newOutcomes (ctx: TransportContext): ClientOutcome[] {
  return ctx.tb.clients.map(h => ({ host: h.name, receivedAt: null, finishedAt: null }))
}
