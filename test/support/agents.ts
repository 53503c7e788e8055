/**
 * Real agent processes on 127.0.0.1, each with its own data dir, for multi-agent tests.
 * Every process is started and stopped by its own pid; `stopAll` runs even when a test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { CLI, imgmeshJson } from './cli.ts'

export interface AgentProcess { name: string, dataDir: string, child: ChildProcess, addr: string, peerId: string, stderr: () => string }

export class AgentSet {
  readonly root: string
  readonly agents = new Map<string, AgentProcess>()
  publishers = new Map<string, string>()

  constructor (root: string) { this.root = root }

  dataDir (name: string): string { return join(this.root, name) }

  /** Initialises a node: the first creates the cluster, the others join it and trust the first's key. */
  async init (name: string, opts: { clusterKey?: string, trust?: string[] } = {}): Promise<string> {
    await mkdir(this.dataDir(name), { recursive: true })
    const args = ['init', '--data-dir', this.dataDir(name)]
    if (opts.clusterKey !== undefined) args.push('--cluster-key', opts.clusterKey)
    for (const t of opts.trust ?? []) args.push('--trust', t)
    const r = await imgmeshJson<{ publisher: string, clusterKeyFile: string }>(args)
    this.publishers.set(name, r.publisher)
    return r.clusterKeyFile
  }

  async start (name: string, opts: { bootstrap?: string[], extra?: string[] } = {}): Promise<AgentProcess> {
    const args = [CLI, 'agent', '--data-dir', this.dataDir(name), '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', ...(opts.extra ?? [])]
    for (const b of opts.bootstrap ?? []) args.push('--bootstrap', b)
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IMGMESH_LOG: process.env.IMGMESH_TEST_LOG ?? 'warn' } })
    let err = ''
    child.stderr!.on('data', (d: Buffer) => { err += d.toString() })
    const addr = await new Promise<string>((resolve, reject) => {
      let out = ''
      const timer = setTimeout(() => { reject(new Error(`agent ${name} did not start: ${err}`)) }, 20_000)
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString()
        const line = out.split('\n').find(l => l.includes('/p2p/'))
        if (line !== undefined) { clearTimeout(timer); resolve(line.trim()) }
      })
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`agent ${name} exited (${String(code)}): ${err}`)) })
    })
    const p: AgentProcess = { name, dataDir: this.dataDir(name), child, addr, peerId: addr.split('/p2p/')[1], stderr: () => err }
    this.agents.set(name, p)
    return p
  }

  /** Stops one agent: SIGTERM (clean shutdown), or SIGKILL to simulate a node dying. */
  async stop (name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const p = this.agents.get(name)
    if (p === undefined) return null
    this.agents.delete(name)
    if (p.child.exitCode !== null) return p.child.exitCode
    const exited = new Promise<number | null>(resolve => { p.child.once('exit', (code) => { resolve(code) }) })
    p.child.kill(signal)
    const timer = setTimeout(() => { p.child.kill('SIGKILL') }, 10_000)
    const code = await exited
    clearTimeout(timer)
    return code
  }

  async stopAll (): Promise<void> {
    await Promise.all([...this.agents.keys()].map(async n => await this.stop(n)))
  }
}

export async function waitFor (what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  throw new Error(`timed out waiting for ${what}`)
}
