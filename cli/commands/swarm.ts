/** Cluster and swarm commands: init, keys, agent, status, peers, publish. */
import type { Argv } from 'yargs'
import { resolve as resolvePath } from 'node:path'
import { ImageStore, parseImageSpec } from '../../node/image/image-store.ts'
import { planRollback } from '../../node/target/rollback.ts'
import { deploy } from '../../node/target/deploy.ts'
import { initNode, loadIdentity } from '../../node/agent/node-identity.ts'
import { Agent } from '../../node/agent/agent.ts'
import { ControlClient } from '../../node/control/control-api.ts'
import { emit, formatBytes, ProgressLine } from '../output.ts'
import { ImgmeshError } from '../../node/errors.ts'
import { createLogger } from '../../node/logger.ts'
import type { GlobalArgs } from '../imgmesh.ts'
import { agentOperatorOptions, startOperatorForArgs } from './service.ts'

interface StatusJson {
  peerId: string
  host: string
  cluster: string
  addresses: string[]
  peers: Array<{ peer: string, addresses: string[], sent: number, received: number }>
  versions: Array<{ image: string, number: number, cid: string, percent: number, complete: boolean }>
  deploys: Array<{ target: string, image: string, version: number, state: string, bytes: number, totalBytes: number, rate: number, peers: number, error?: string }>
  traffic: { sent: number, received: number }
  updates: { groups: string[], assignment: { image: string, number?: number, policy: string } | null, deployed: { image: string, number: number } | null, interrupted: { image: string, number: number } | null, state: string, error: string | null }
}

/** 50M → 52428800; plain numbers are bytes. */
export function parseSize (text: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)i?[bB]?$/.exec(text.trim())
  if (m === null) throw new ImgmeshError('EBADARG', `not a size: ${text}`)
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g']
  return Math.round(Number(m[1]) * mult)
}

export function swarmCommands (y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command('init', 'create this node\'s keys; start a new cluster, or join one with --cluster-key', (c) => c
      .option('cluster-key', { type: 'string', describe: 'the cluster.key file of an existing cluster (join it)' })
      .option('trust', { type: 'string', array: true, describe: 'publisher public key to trust (64 hex characters)' }),
    async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const r = await initNode(store, { clusterKeyFile: a.clusterKey, trust: a.trust })
      emit(a, r, () => [
        `peer id     ${r.peerId}`,
        `publisher   ${r.publisher}`,
        `cluster     ${r.clusterId} (${r.newCluster ? 'new cluster' : 'joined'})`,
        `cluster key ${r.clusterKeyFile}${r.newCluster ? '  (give this file to other nodes: imgmesh init --cluster-key FILE)' : ''}`,
        `trusted     ${r.trusted.join(' ') || '-'}`
      ])
    })
    .command('keys [action] [key]', 'show this node\'s keys and trusted publishers; keys trust|untrust PUBKEY', (c) => c
      .positional('action', { choices: ['trust', 'untrust'] as const })
      .positional('key', { type: 'string' }),
    async (a) => {
      const store = await ImageStore.open(a.dataDir)
      if (a.action !== undefined) {
        if (a.key === undefined) throw new Error(`keys ${a.action} needs a publisher public key`)
        const changed = a.action === 'trust' ? await store.trust.add(a.key) : await store.trust.remove(a.key)
        emit(a, { changed, trusted: store.trust.list() }, () => `${changed ? (a.action === 'trust' ? 'now trusting' : 'no longer trusting') : 'unchanged:'} ${a.key ?? ''}`)
        return
      }
      const id = await loadIdentity(store)
      emit(a, { peerId: id.peerId, publisher: id.publisher, cluster: id.clusterId, trusted: store.trust.list() }, () => [
        `peer id    ${id.peerId}`, `publisher  ${id.publisher}`, `cluster    ${id.clusterId}`, ...store.trust.list().map(k => `trusted    ${k}`)
      ])
    })
    .command('agent', 'run the agent in the foreground: join the swarm, serve and fetch blocks', (c) => agentOperatorOptions(c
      .option('listen', { type: 'string', array: true, describe: 'multiaddr to listen on (default /ip4/0.0.0.0/tcp/4001)' })
      .option('bootstrap', { type: 'string', array: true, describe: 'multiaddr of a peer to join through, ending in /p2p/<peer id>' })
      .option('mdns', { type: 'boolean', default: true, describe: 'find peers on the LAN by mDNS (--no-mdns to turn off)' })
      .option('api', { type: 'string', describe: 'control socket path (default agent.sock in the data dir)' })
      .option('peers', { type: 'number', describe: 'connections the agent dials up to and keeps (default 16); it accepts up to 3 × as many' })
      .option('max-in-flight', { type: 'number', describe: 'block requests in flight per peer' })
      .option('upload-limit', { type: 'string', describe: 'cap on upload to peers, bytes per second (suffixes k, M, G; e.g. 50M)' })
      .option('group', { type: 'string', array: true, describe: 'group this node belongs to (assignments name groups); repeat for several, first wins' })
      .option('target', { type: 'string', describe: 'where assigned images are applied (e.g. / for the node\'s own root)' })
      .option('hook-timeout', { type: 'number', default: 300, describe: 'seconds a pre/post-apply hook may run' })
      .option('keep', { type: 'number', default: 5, describe: 'versions kept per image by the periodic GC (deployed and assigned ones always)' })),
    async (a) => {
      // A long-running agent outlives one failed exchange with one peer: a promise rejected
      // with nobody waiting for it is logged, not fatal.
      const log = createLogger('agent')
      process.on('unhandledRejection', (reason: unknown) => {
        log.error('unhandled rejection', { error: reason instanceof Error ? reason.message : String(reason), code: reason instanceof ImgmeshError ? reason.code : undefined })
      })
      const agent = await Agent.start({ dataDir: a.dataDir, listen: a.listen, bootstrap: a.bootstrap, mdns: a.mdns, api: a.api,
        peers: a.peers,
        maxInFlight: a.maxInFlight,
        uploadLimit: a.uploadLimit === undefined ? undefined : parseSize(a.uploadLimit),
        groups: a.group,
        target: a.target === undefined ? undefined : resolvePath(a.target),
        hookTimeoutMs: a.hookTimeout * 1000,
        keep: a.keep
      })
      for (const addr of agent.addresses()) process.stdout.write(addr + '\n')
      const operator = await startOperatorForArgs(agent, a).catch(async (err: unknown) => { await agent.stop(); throw err })
      await new Promise<void>((resolve) => {
        const stop = (): void => { process.off('SIGINT', stop); process.off('SIGTERM', stop); resolve() }
        process.on('SIGINT', stop)
        process.on('SIGTERM', stop)
      })
      await operator.stop()
      await agent.stop()
    })
    .command('status', 'what the agent of this data dir is doing', () => {}, async (a) => {
      const client = await ControlClient.require(a.dataDir)
      const s = await client.call<StatusJson>('status')
      emit(a, s, () => [
        `peer ${s.peerId} on ${s.host}, cluster ${s.cluster}`,
        ...s.addresses.map(x => `  listening ${x}`),
        `${s.peers.length} peer(s) connected; sent ${formatBytes(s.traffic.sent)}, received ${formatBytes(s.traffic.received)}`,
        ...s.versions.map(v => `  ${v.image}@${v.number} ${v.complete ? 'complete' : `partial ${v.percent}%`}`),
        ...(s.updates.groups.length === 0 && s.updates.assignment === null
          ? []
          : [`  groups ${s.updates.groups.join(',') || '-'}; assigned ${s.updates.assignment === null ? '-' : `${s.updates.assignment.image}${s.updates.assignment.number === undefined ? '' : '@' + String(s.updates.assignment.number)} (${s.updates.assignment.policy})`}; deployed ${s.updates.deployed === null ? '-' : `${s.updates.deployed.image}@${s.updates.deployed.number}`}; ${s.updates.state}${s.updates.error === null ? '' : `: ${s.updates.error}`}${s.updates.interrupted === null ? '' : `; WARNING: the target is between versions (deploy of ${s.updates.interrupted.image}@${s.updates.interrupted.number} interrupted)`}`]),
        ...s.deploys.map(d => `  deploy ${d.image}@${d.version} → ${d.target}: ${d.state}${d.error === undefined ? '' : ` (${d.error})`} ${formatBytes(d.bytes)}/${formatBytes(d.totalBytes)} at ${formatBytes(d.rate)}/s from ${d.peers} peer(s)`)
      ])
    })
    .command('peers', 'peers the agent is connected to', () => {}, async (a) => {
      const client = await ControlClient.require(a.dataDir)
      const peers = await client.call<StatusJson['peers']>('peers')
      emit(a, peers, () => peers.length === 0 ? 'no peers' : peers.map(p => `${p.peer}\t${p.addresses.join(' ')}\tsent ${formatBytes(p.sent)}\treceived ${formatBytes(p.received)}`))
    })
    .command('assign <spec>', 'say which image (NAME or NAME@N) a group runs, and how updates reach it', (c) => c
      .positional('spec', { type: 'string', demandOption: true })
      .option('group', { type: 'string', demandOption: true, describe: 'group of nodes' })
      .option('policy', { choices: ['stage', 'apply', 'apply-at'] as const, default: 'stage' as const, describe: 'stage: fetch only; apply: fetch and apply; apply-at: fetch now, apply at --at' })
      .option('at', { type: 'string', describe: 'for apply-at: now, an ISO time, or a cron expression ("0 3 * * *")' }),
    async (a) => {
      const { image, number } = parseImageSpec(a.spec)
      const client = await ControlClient.require(a.dataDir)
      const r = await client.call<Record<string, unknown>>('assign', { group: a.group, image, number, policy: a.policy, at: a.at })
      emit(a, r, () => `group ${a.group} runs ${a.spec} (${a.policy}${a.at === undefined ? '' : ' ' + a.at}); announced to the swarm`)
    })
    .command('rollback <target>', 'deploy the version TARGET ran before its current one', (c) => c.positional('target', { type: 'string', demandOption: true }), async (a) => {
      const target = resolvePath(a.target)
      const client = await ControlClient.find(a.dataDir)
      let r: { image: string, version: number, from: string }
      if (client !== null) {
        r = await client.call('rollback', { target })
      } else {
        const store = await ImageStore.open(a.dataDir)
        const plan = await planRollback(store, target)
        r = { ...await deploy(store, await store.resolve(plan.spec), { target: plan.target, excludes: plan.excludes }), from: plan.from }
      }
      emit(a, r, () => `rolled ${target} back from ${r.from} to ${r.image}@${r.version}`)
    })
    .command('fetch <spec>', 'stage a version: fetch every chunk into the store from the swarm, write nothing', (c) => c.positional('spec', { type: 'string', demandOption: true }), async (a) => {
      const client = await ControlClient.require(a.dataDir)
      const progress = new ProgressLine(a.json)
      const r = await client.call<{ pieces: number, bytes: number, totalBytes: number }>('fetch', { spec: a.spec }, (e) => {
        const p = e as { have: number, pieces: number, bytes: number, totalBytes: number, rate: number, peers: number }
        progress.update(`fetching ${p.have}/${p.pieces} pieces, ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)} at ${formatBytes(p.rate)}/s from ${p.peers} peer(s)`)
      })
      progress.done()
      emit(a, r, () => `${a.spec}: all ${r.pieces} pieces (${formatBytes(r.totalBytes)}) are in the store`)
    })
    .command('publish <spec>', 'announce a version this node holds to the swarm', (c) => c.positional('spec', { type: 'string', demandOption: true }), async (a) => {
      const client = await ControlClient.require(a.dataDir)
      const r = await client.call<{ image: string, number: number, cid: string, recipients: number, newChunks: number, newBytes: number }>('publish', { spec: a.spec })
      emit(a, r, () => `announced ${r.image}@${r.number} ${r.cid}: ${r.newChunks} new chunks, ${formatBytes(r.newBytes)}`)
    })
}
