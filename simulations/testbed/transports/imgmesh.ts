/**
 * imgmesh: the slot for the imgmesh agent. Not available yet: run() throws TransportUnavailable,
 * which the testbed reports as "skipped" while the other transports run.
 *
 * What run(ctx) must do when the agent exists (same contract as rsync.ts, see types.ts):
 *
 *   setup (before t0, like the rsync daemon or the torrent seeder; its time goes to setupMs):
 *     1. a cluster key and a publisher key in ctx.dir, shared by every agent;
 *     2. on every host h of ctx.tb.hosts, in h's namespace (ctx.spawn({ host: h, role: h0 ?
 *        'server' : 'client', ... })), one agent process each:
 *          node cli/imgmesh.ts agent --data-dir <ctx.dir>/<h.name>/data
 *               --listen /ip4/<h.addr>/tcp/4001 --bootstrap /ip4/<h0.addr>/tcp/4001/p2p/<h0 peer id>
 *        (mDNS may stay on: the switch namespace is one LAN);
 *     3. on h0: capture ctx.image.dir as image "testbed" into h0's store
 *          node cli/imgmesh.ts --data-dir <h0 data> capture <ctx.image.dir> --image testbed
 *        (excluded from T, like tar creation for the tar transports; report it in notes);
 *     4. wait (bounded) until every client agent is connected to the swarm (imgmesh peers).
 *   t0 = Date.now(); then on every client at once:
 *          node cli/imgmesh.ts --data-dir <hI data> deploy testbed <ctx.targets[i]>
 *     receivedAt = finishedAt = that command's exit time (files on disk, written by the agent);
 *     a non-zero exit is an error for that client.
 *   end: ctx.stopAll() stops every agent by pid; the framework verifies each target with
 *   rsync -naHAXc and measures wire bytes from the switch counters.
 * Node for the agents: process.execPath (Node 22); one process per host (20 agents in one
 * process starve each other on 2 cores). No tar: needsTar stays false.
 */
import { TransportUnavailable } from './types.ts'
import type { Transport, TransportContext, TransportResult } from './types.ts'

async function run (_ctx: TransportContext): Promise<TransportResult> {
  throw new TransportUnavailable('imgmesh transport not yet available: the agent (imgmesh agent / deploy) is being written')
}

export const imgmeshTransport: Transport = {
  name: 'imgmesh',
  needsTar: false,
  tools: [],
  description: 'one imgmesh agent per host, image captured on h0, every client deploys at once (not yet available)',
  run
}
