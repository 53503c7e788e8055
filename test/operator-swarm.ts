/**
 * In-process agents on 127.0.0.1 with their operator surface, for the operator tests: the
 * first node creates the cluster, the others join it and trust its publisher key, and each
 * bootstraps from the first. Everything is stopped (surfaces, then agents) by stopAll.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent, type AgentOptions } from '../node/agent/agent.ts'
import { ImageStore } from '../node/image/image-store.ts'
import { initNode } from '../node/agent/node-identity.ts'
import { startOperatorSurface, type OperatorOptions, type OperatorSurface } from '../node/operator/surface.ts'

export interface OperatorNode { name: string, agent: Agent, surface: OperatorSurface }

export class OperatorSwarm {
  readonly root: string
  readonly nodes: OperatorNode[] = []
  private clusterKeyFile: string | null = null
  private publisher: string | null = null

  constructor (root: string) { this.root = root }

  async add (name: string, opts: { agent?: Partial<AgentOptions>, operator?: OperatorOptions } = {}): Promise<OperatorNode> {
    const dataDir = join(this.root, name)
    await mkdir(dataDir, { recursive: true })
    const store = await ImageStore.open(dataDir)
    if (this.clusterKeyFile === null) {
      const r = await initNode(store)
      this.clusterKeyFile = r.clusterKeyFile
      this.publisher = r.publisher
    } else {
      await initNode(store, { clusterKeyFile: this.clusterKeyFile, trust: [this.publisher!] })
    }
    const first = this.nodes[0]
    const agent = await Agent.start({
      dataDir,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      mdns: false,
      bootstrap: first === undefined ? [] : [first.agent.addresses()[0]],
      ...opts.agent
    })
    let surface: OperatorSurface
    try {
      surface = await startOperatorSurface(agent, { statusIntervalMs: 1000, ...opts.operator })
    } catch (err) {
      await agent.stop()
      throw err
    }
    const node = { name, agent, surface }
    this.nodes.push(node)
    return node
  }

  get (name: string): OperatorNode {
    const n = this.nodes.find(x => x.name === name)
    if (n === undefined) throw new Error(`no node ${name}`)
    return n
  }

  async stopAll (): Promise<void> {
    for (const n of this.nodes.splice(0).reverse()) {
      await n.surface.stop().catch(() => {})
      await n.agent.stop().catch(() => {})
    }
  }
}

export async function waitUntil (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
  throw new Error(`timed out waiting for ${what}`)
}
