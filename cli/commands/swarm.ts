/** Cluster and swarm commands: init, keys, agent, status, peers, publish. */
import type { Argv } from 'yargs'
import { ImageStore } from '../../node/image/image-store.ts'
import { initNode, loadIdentity } from '../../node/agent/node-identity.ts'
import { Agent } from '../../node/agent/agent.ts'
import { ControlClient } from '../../node/control/control-api.ts'
import { emit, formatBytes } from '../output.ts'
import { ImgmeshError } from '../../node/errors.ts'
import type { GlobalArgs } from '../imgmesh.ts'

interface StatusJson {
  peerId: string
  host: string
  cluster: string
  addresses: string[]
  peers: Array<{ peer: string, addresses: string[], sent: number, received: number }>
  versions: Array<{ image: string, number: number, cid: string, percent: number, complete: boolean }>
  deploys: Array<{ target: string, image: string, version: number, state: string, bytes: number, totalBytes: number, rate: number, peers: number, error?: string }>
  traffic: { sent: number, received: number }
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
    .command('agent', 'run the agent in the foreground: join the swarm, serve and fetch blocks', (c) => c
      .option('listen', { type: 'string', array: true, describe: 'multiaddr to listen on (default /ip4/0.0.0.0/tcp/4001)' })
      .option('bootstrap', { type: 'string', array: true, describe: 'multiaddr of a peer to join through, ending in /p2p/<peer id>' })
      .option('mdns', { type: 'boolean', default: true, describe: 'find peers on the LAN by mDNS (--no-mdns to turn off)' })
      .option('api', { type: 'string', describe: 'control socket path (default agent.sock in the data dir)' })
      .option('max-in-flight', { type: 'number', describe: 'block requests in flight per peer' })
      .option('upload-limit', { type: 'string', describe: 'cap on upload to peers, bytes per second (suffixes k, M, G; e.g. 50M)' }),
    async (a) => {
      const agent = await Agent.start({ dataDir: a.dataDir, listen: a.listen, bootstrap: a.bootstrap, mdns: a.mdns, api: a.api, maxInFlight: a.maxInFlight, uploadLimit: a.uploadLimit === undefined ? undefined : parseSize(a.uploadLimit) })
      for (const addr of agent.addresses()) process.stdout.write(addr + '\n')
      await new Promise<void>((resolve) => {
        const stop = (): void => { process.off('SIGINT', stop); process.off('SIGTERM', stop); resolve() }
        process.on('SIGINT', stop)
        process.on('SIGTERM', stop)
      })
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
        ...s.deploys.map(d => `  deploy ${d.image}@${d.version} → ${d.target}: ${d.state}${d.error === undefined ? '' : ` (${d.error})`} ${formatBytes(d.bytes)}/${formatBytes(d.totalBytes)} at ${formatBytes(d.rate)}/s from ${d.peers} peer(s)`)
      ])
    })
    .command('peers', 'peers the agent is connected to', () => {}, async (a) => {
      const client = await ControlClient.require(a.dataDir)
      const peers = await client.call<StatusJson['peers']>('peers')
      emit(a, peers, () => peers.length === 0 ? 'no peers' : peers.map(p => `${p.peer}\t${p.addresses.join(' ')}\tsent ${formatBytes(p.sent)}\treceived ${formatBytes(p.received)}`))
    })
    .command('publish <spec>', 'announce a version this node holds to the swarm', (c) => c.positional('spec', { type: 'string', demandOption: true }), async (a) => {
      const client = await ControlClient.require(a.dataDir)
      const r = await client.call<{ image: string, number: number, cid: string, recipients: number, newChunks: number, newBytes: number }>('publish', { spec: a.spec })
      emit(a, r, () => `announced ${r.image}@${r.number} ${r.cid}: ${r.newChunks} new chunks, ${formatBytes(r.newBytes)}`)
    })
}
