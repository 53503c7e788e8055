/**
 * BitTorrent: mktorrent makes a private torrent of image.tar announcing to opentracker on h0
 * (whitelisted info hash, since Debian builds opentracker with an access list); aria2c seeds it
 * on h0 and downloads it on every client, with DHT, peer exchange and local peer discovery off.
 * Each client then unpacks the tar into its target.
 *
 * Seeding policy (default `--opt bittorrent.seed=keep`): a client keeps seeding after its
 * download until every client has finished, as a BitTorrent swarm normally does and as the
 * seed experiment ran it; its download end is signalled by aria2c's --on-bt-download-complete
 * hook. `--opt bittorrent.seed=leave` passes --seed-time=0 instead: a client leaves as soon as it
 * has the file. Piece size: 256 KiB (`--opt bittorrent.piece-kib=...`, a power of two).
 */
import { existsSync, readFileSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { nsProbe, run as runSync, sleep, waitExit } from '../netns.ts'
import { newOutcomes, unpack, waitListening } from './common.ts'
import type { Transport, TransportContext, TransportResult } from './types.ts'

const TRACKER_PORT = 6969
const PEER_PORT = 6881

const ARIA_COMMON = [
  '--no-conf=true',
  '--enable-dht=false',
  '--enable-dht6=false',
  '--enable-peer-exchange=false',
  '--bt-enable-lpd=false',
  '--file-allocation=none',
  '--check-integrity=false',
  '--allow-overwrite=true',
  '--auto-file-renaming=false',
  '--console-log-level=notice',
  '--summary-interval=0',
  '--download-result=full',
  `--listen-port=${PEER_PORT}`
]

function infoHash (torrent: string): string {
  const out = runSync('aria2c', ['-S', torrent])
  const m = /^Info Hash:\s*([0-9a-f]{40})\s*$/im.exec(out)
  if (m === null) throw new Error(`no info hash in aria2c -S ${torrent}`)
  return m[1].toLowerCase()
}

async function run (ctx: TransportContext): Promise<TransportResult> {
  if (ctx.tar === null) throw new Error('bittorrent needs the image tar')
  if (basename(ctx.tar) !== 'image.tar') throw new Error('the tar must be named image.tar')
  const server = ctx.tb.server
  const seedPolicy = ctx.options.seed ?? 'keep'
  if (seedPolicy !== 'keep' && seedPolicy !== 'leave') throw new Error('bittorrent.seed must be keep or leave')
  const pieceKiB = Number(ctx.options['piece-kib'] ?? 256)
  const pieceExp = Math.log2(pieceKiB * 1024)
  if (!Number.isInteger(pieceExp) || pieceExp < 15 || pieceExp > 24) throw new Error('bittorrent.piece-kib must be a power of two, 32..16384')
  const notes = [`aria2c, private torrent, ${pieceKiB} KiB pieces, clients ${seedPolicy === 'keep' ? 'keep seeding until all have finished' : 'leave on completion (--seed-time=0)'}`]

  const setupStart = Date.now()
  const announce = `http://${server.addr}:${TRACKER_PORT}/announce`
  const torrent = join(ctx.dir, 'image.torrent')
  runSync('mktorrent', ['-p', '-a', announce, '-l', String(pieceExp), '-o', torrent, ctx.tar], 300_000)
  const hash = infoHash(torrent)
  const trackerDir = join(ctx.dir, 'tracker')
  mkdirSync(trackerDir, { recursive: true })
  writeFileSync(join(trackerDir, 'whitelist'), hash + '\n')
  const tracker = ctx.spawn({
    name: 'opentracker',
    host: server,
    cmd: 'opentracker',
    // -d: chroot there (and drop to nobody); -w: the access list, read inside the chroot; -A: stats for h0
    args: ['-i', server.addr, '-p', String(TRACKER_PORT), '-P', String(TRACKER_PORT), '-A', server.addr, '-w', 'whitelist', '-d', trackerDir],
    role: 'server'
  })
  await waitListening(server, TRACKER_PORT, 'tcp', Math.min(ctx.deadline, Date.now() + 20_000), tracker)
  const seeder = ctx.spawn({
    name: 'aria2c-seed',
    host: server,
    cmd: 'aria2c',
    args: [...ARIA_COMMON, `--dir=${dirname(ctx.tar)}`, '--seed-ratio=0.0', '--bt-seed-unverified=true', torrent],
    role: 'server'
  })
  // The seeder must be known to the tracker before any client announces, or the first clients
  // get an empty peer list and only re-announce minutes later.
  let seeds = 0
  for (let i = 0; i < 200 && Date.now() < Math.min(ctx.deadline, setupStart + 30_000); i++) {
    if (seeder.exit !== null) throw new Error(`the aria2c seeder exited (code ${String(seeder.exit.code)})`)
    const r = nsProbe(server.ns, 'curl', ['-s', '--max-time', '2', `http://${server.addr}:${TRACKER_PORT}/stats?mode=peer`])
    const lines = r.out.trim().split('\n')
    seeds = Number(lines[1] ?? 0)
    if (r.ok && seeds >= 1) break
    await sleep(100)
  }
  if (seeds < 1) throw new Error('the seeder never registered with the tracker')
  const hook = join(ctx.dir, 'download-complete.sh')
  writeFileSync(hook, '#!/bin/sh\n# aria2c --on-bt-download-complete: $1 GID, $2 file count, $3 path\ndate +%s%3N > "$3.done.tmp" && mv "$3.done.tmp" "$3.done"\n')
  chmodSync(hook, 0o755)
  const setupMs = Date.now() - setupStart

  const outcomes = newOutcomes(ctx)
  const t0 = Date.now()
  const clients = ctx.tb.clients.map((h, i) => ctx.spawn({
    name: `${h.name}-aria2c`,
    host: h,
    cmd: 'aria2c',
    args: [...ARIA_COMMON, `--dir=${ctx.scratch[i]}`, `--on-bt-download-complete=${hook}`,
      ...(seedPolicy === 'keep' ? ['--seed-ratio=0.0'] : ['--seed-time=0']), torrent],
    role: 'client'
  }))
  await Promise.all(clients.map(async (p, i) => {
    const file = join(ctx.scratch[i], 'image.tar')
    // done when the hook has written its marker; give up if aria2c died 2 s ago without it
    let found = false
    for (let k = 0; k < 1_000_000 && Date.now() < ctx.deadline; k++) {
      if (existsSync(file + '.done')) { found = true; break }
      if (p.exit !== null && Date.now() - p.exit.at > 2000) break
      await sleep(100)
    }
    if (!found) {
      outcomes[i].error = p.exit !== null ? `aria2c exited ${String(p.exit.code ?? p.exit.signal)} without finishing` : 'timeout while downloading'
      return
    }
    const stamp = Number(readFileSync(file + '.done', 'utf8').trim())
    outcomes[i].receivedAt = Number.isFinite(stamp) && stamp > t0 ? stamp : Date.now()
    await unpack(ctx, i, file, outcomes[i])
  }))
  const seederUp = seeder.exit === null
  await ctx.stopAll()
  if (!seederUp) notes.push('the h0 seeder had exited before the end')
  await waitExit(tracker, Date.now() + 1000)
  return { t0, clients: outcomes, setupMs, notes }
}

export const bittorrentTransport: Transport = {
  name: 'bittorrent',
  needsTar: true,
  tools: ['mktorrent', 'opentracker', 'aria2c', 'curl', 'tar', 'ss'],
  description: 'mktorrent + opentracker on h0, aria2c seeding on h0 and downloading on every client, then tar -x',
  run
}
