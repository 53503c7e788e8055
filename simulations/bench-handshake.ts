/**
 * The cluster-key gate, measured both ways it can be built, between two node processes on
 * loopback (the receiver is a child process):
 *
 *   (a) prologue: noise with prologueBytes = sha256("imgmesh-cluster-v1" || key)
 *   (b) pnet:     @libp2p/pnet (xsalsa20 over the whole connection) under plain noise
 *
 * For each: handshake time (TCP connect + gate + noise XX + yamux, median of 20 dials per run),
 * throughput of one stream moving 256 MiB (after a warm-up transfer), each the median of 3
 * runs, the two gates measured in alternation; then what happens when a node with another key
 * dials (error name and time to fail), and when the two gates meet.
 *
 *   node simulations/bench-handshake.ts [--mib 256] [--runs 3] [--dials 20]
 */
import { parseArgs } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { createSwarmNode, type ClusterGate, type SwarmNode } from '../node/swarm/libp2p-node.ts'
import { generatePeerKey } from '../node/swarm/peer-key.ts'
import { generateClusterKey } from '../node/swarm/cluster-key.ts'
import { MIB, libp2pTransfer, machineLine, mbps, median, rssMiB, spawnChild, withTimeout, type Child } from './bench-transfer.ts'

const GATES: ClusterGate[] = ['prologue', 'pnet']

interface GateResult {
  gate: ClusterGate
  handshakeMs: number[]
  mbps: number[]
  transferErrors: string[]
  wrongKey: string
  wrongKeyMs: number
  rss: number
}

async function localNode (key: Uint8Array, gate: ClusterGate): Promise<SwarmNode> {
  return await createSwarmNode({ privateKey: await generatePeerKey(), clusterKey: key, gate, listen: ['/ip4/127.0.0.1/tcp/0'] })
}

async function dialTimes (node: SwarmNode, addr: string, dials: number): Promise<number[]> {
  const ma = multiaddr(addr)
  const times: number[] = []
  for (let i = 0; i < dials; i++) {
    const t0 = performance.now()
    const conn = await node.libp2p.dial(ma, { signal: AbortSignal.timeout(10_000) })
    times.push(performance.now() - t0)
    await conn.close().catch(() => {})
    // wait until the connection is gone, so the next dial makes a new one
    for (let j = 0; j < 100 && node.libp2p.getConnections(conn.remotePeer).length > 0; j++) await new Promise(resolve => setTimeout(resolve, 5))
  }
  return times
}

async function failure (node: SwarmNode, addr: string): Promise<{ what: string, ms: number }> {
  const t0 = performance.now()
  try {
    await node.libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(10_000) })
    return { what: 'CONNECTED (gate failed!)', ms: performance.now() - t0 }
  } catch (err) {
    const e = err as Error
    return { what: `${e.name}: ${e.message}`, ms: performance.now() - t0 }
  }
}

interface GateSetup { gate: ClusterGate, child: Child, node: SwarmNode, key: Uint8Array, result: GateResult }

/**
 * Both gates are set up side by side and measured in alternation (dials, then transfers), so
 * neither gains from running second on a warmer JIT or a quieter machine.
 */
async function measureGates (bytes: number, runs: number, dials: number): Promise<GateResult[]> {
  const setups: GateSetup[] = []
  const extra: SwarmNode[] = []
  try {
    for (const gate of GATES) {
      const key = generateClusterKey()
      const child = await spawnChild('libp2p-sink', { IMGMESH_BENCH_KEY: Buffer.from(key).toString('hex'), IMGMESH_BENCH_GATE: gate })
      const node = await localNode(key, gate).catch(async (err: unknown) => { await child.stop(); throw err })
      setups.push({ gate, child, node, key, result: { gate, handshakeMs: [], mbps: [], transferErrors: [], wrongKey: '', wrongKeyMs: 0, rss: 0 } })
    }
    for (const s of setups) await dialTimes(s.node, s.child.info.addr!, 10) // warm-up
    for (let r = 0; r < runs; r++) {
      for (const s of setups) s.result.handshakeMs.push(median(await dialTimes(s.node, s.child.info.addr!, dials)))
    }
    for (const s of setups) {
      try {
        await withTimeout('warm-up transfer', 120_000, libp2pTransfer(s.node, s.child.info.addr!, Math.min(bytes, 64 * MIB), 64 * 1024))
      } catch (err) {
        s.result.transferErrors.push(`warm-up: ${(err as Error).name}: ${(err as Error).message}`)
      }
    }
    for (let r = 0; r < runs; r++) {
      for (const s of setups) {
        try {
          const sec = await withTimeout(`transfer ${r + 1}`, 180_000, libp2pTransfer(s.node, s.child.info.addr!, bytes, 64 * 1024))
          s.result.mbps.push(mbps(bytes, sec))
        } catch (err) {
          s.result.transferErrors.push(`run ${r + 1}: ${(err as Error).name}: ${(err as Error).message}`)
        }
      }
    }
    for (const s of setups) {
      s.result.rss = rssMiB(s.child.info.pid)
      const outsider = await localNode(generateClusterKey(), s.gate)
      extra.push(outsider)
      const f = await failure(outsider, s.child.info.addr!)
      s.result.wrongKey = f.what
      s.result.wrongKeyMs = f.ms
    }
  } finally {
    await Promise.allSettled([...setups.map(s => s.node), ...extra].map(async n => { await n.stop() }))
    await Promise.allSettled(setups.map(async s => { await s.child.stop() }))
  }
  return setups.map(s => s.result)
}

/** A node using one gate dialling a node using the other, same cluster key. */
async function crossGate (): Promise<string[]> {
  const key = generateClusterKey()
  const lines: string[] = []
  for (const [from, to] of [['prologue', 'pnet'], ['pnet', 'prologue']] as Array<[ClusterGate, ClusterGate]>) {
    let child: Child | undefined
    let node: SwarmNode | undefined
    try {
      child = await spawnChild('libp2p-sink', { IMGMESH_BENCH_KEY: Buffer.from(key).toString('hex'), IMGMESH_BENCH_GATE: to })
      node = await localNode(key, from)
      const f = await failure(node, child.info.addr!)
      lines.push(`  ${from} -> ${to} (same key): ${f.what} after ${f.ms.toFixed(0)} ms`)
    } finally {
      await node?.stop()
      await child?.stop()
    }
  }
  return lines
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      mib: { type: 'string', default: '256' },
      runs: { type: 'string', default: '3' },
      dials: { type: 'string', default: '20' }
    }
  })
  const bytes = Number(values.mib) * MIB
  const runs = Number(values.runs)
  const dials = Number(values.dials)
  if (!(bytes > 0) || !(runs > 0) || !(dials > 0)) throw new Error('bad arguments')
  console.log(`bench-handshake: ${values.mib} MiB transfers, ${runs} runs, ${dials} dials per run, loopback, Node ${process.version}`)
  console.log(`  ${machineLine()}`)
  for (const r of await measureGates(bytes, runs, dials)) {
    const gate = r.gate
    console.log(`(${gate === 'prologue' ? 'a' : 'b'}) ${gate}`)
    console.log(`  handshake  median ${median(r.handshakeMs).toFixed(2)} ms   runs ${r.handshakeMs.map(x => x.toFixed(2)).join(', ')}`)
    console.log(`  transfer   median ${r.mbps.length > 0 ? median(r.mbps).toFixed(0) : 'n/a'} MB/s   runs ${r.mbps.map(x => x.toFixed(0)).join(', ')}`)
    for (const e of r.transferErrors) console.log(`  transfer FAILED ${e}`)
    console.log(`  receiver RSS after transfers ${r.rss.toFixed(0)} MiB`)
    console.log(`  other cluster key: ${r.wrongKey} after ${r.wrongKeyMs.toFixed(0)} ms`)
  }
  console.log('mixed gates:')
  for (const line of await crossGate()) console.log(line)
  console.log(`  after: ${machineLine()}`)
}

main().then(() => { process.exit(0) }, (err: unknown) => { process.stderr.write(`bench-handshake failed: ${(err as Error).stack ?? String(err)}\n`); process.exit(1) })
