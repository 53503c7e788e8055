/**
 * `imgmesh demo` (what `npm start` runs): a local swarm of agents as separate processes on
 * 127.0.0.1, each with its own data dir; a generated sample tree captured on the first and
 * deployed on all the others at once through the swarm; every copy verified; everything
 * stopped and removed at the end. No root needed.
 */
import type { Argv } from 'yargs'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ImageStore } from '../../node/image/image-store.ts'
import { capture } from '../../node/image/capture.ts'
import { verifyTarget } from '../../node/target/verify.ts'
import { initNode } from '../../node/agent/node-identity.ts'
import { ControlClient } from '../../node/control/control-api.ts'
import { makeSampleTree } from '../../node/demo/sample-tree.ts'
import { ImgmeshError } from '../../node/errors.ts'
import { formatBytes } from '../output.ts'
import type { GlobalArgs } from '../imgmesh.ts'

const CLI = fileURLToPath(new URL('../imgmesh.ts', import.meta.url))

interface Progress { have: number, pieces: number, bytes: number, totalBytes: number, rate: number, peers: number }

async function startAgent (dataDir: string, bootstrap: string[]): Promise<{ child: ChildProcess, addr: string }> {
  const args = [CLI, 'agent', '--data-dir', dataDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', ...bootstrap.flatMap(b => ['--bootstrap', b])]
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr!.on('data', (d: Buffer) => { err += d.toString() })
  const addr = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => { reject(new ImgmeshError('ETIMEOUT', `agent in ${dataDir} did not start: ${err}`)) }, 30_000)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const line = out.split('\n').find(l => l.includes('/p2p/'))
      if (line !== undefined) { clearTimeout(timer); resolve(line.trim()) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new ImgmeshError('EIO', `agent in ${dataDir} exited (${String(code)}): ${err}`)) })
  })
  return { child, addr }
}

export function demoCommand (y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('demo', 'run a local swarm of agents: capture a sample tree on one, deploy it on the others, verify, clean up', (c) => c
    .option('nodes', { type: 'number', default: 4, describe: 'number of agents (2-16)' })
    .option('size', { type: 'number', default: 32, describe: 'sample tree size in MiB' })
    .option('keep', { type: 'boolean', default: false, describe: 'keep the temporary directory' }), async (a) => {
    const nodes = Math.max(2, Math.min(16, a.nodes))
    const work = await mkdtemp(join(tmpdir(), 'imgmesh-demo-'))
    const children: ChildProcess[] = []
    const say = (s: string): void => { if (!a.json) process.stdout.write(s + '\n') }
    try {
      const golden = join(work, 'golden')
      await makeSampleTree(golden, { bytes: a.size * 1024 * 1024 })
      say(`sample tree of ${a.size} MiB in ${golden}`)
      const dirs = Array.from({ length: nodes }, (_, i) => join(work, `node${i + 1}`))
      for (const d of dirs) await mkdir(d, { recursive: true })
      const first = await initNode(await ImageStore.open(dirs[0]))
      for (const d of dirs.slice(1)) await initNode(await ImageStore.open(d), { clusterKeyFile: first.clusterKeyFile, trust: [first.publisher] })
      const origin = await startAgent(dirs[0], [])
      children.push(origin.child)
      for (const d of dirs.slice(1)) children.push((await startAgent(d, [origin.addr])).child)
      say(`${nodes} agents running on 127.0.0.1 (cluster ${first.clusterId})`)

      const store = await ImageStore.open(dirs[0])
      const cap = await capture(store, { source: golden, image: 'sample', defaultExcludes: false, message: 'demo' })
      const originClient = await ControlClient.require(dirs[0])
      await originClient.call('publish', { spec: `sample@${cap.version}` })
      say(`node1 captured sample@${cap.version}: ${cap.files} files, ${formatBytes(cap.bytes)}; announced to the swarm`)

      const started = Date.now()
      const reported = new Map<number, number>()
      const results = await Promise.all(dirs.slice(1).map(async (d, k) => {
        const n = k + 2
        const client = await ControlClient.require(d)
        return await client.call<{ created: number, bytesWritten: number }>('deploy', { spec: `sample@${cap.version}`, target: join(work, `target${n}`) }, (e) => {
          const p = e as Progress
          const pct = p.pieces === 0 ? 100 : Math.floor(p.have * 100 / p.pieces)
          const step = Math.floor(pct / 25)
          if ((reported.get(n) ?? -1) >= step) return
          reported.set(n, step)
          say(`node${n}: ${pct}% ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)} at ${formatBytes(p.rate)}/s from ${p.peers} peer(s)`)
        })
      }))
      const seconds = (Date.now() - started) / 1000
      say(`all ${nodes - 1} deploys done in ${seconds.toFixed(1)}s`)
      let bad = 0
      const verified = []
      for (let k = 0; k < results.length; k++) {
        const v = await verifyTarget(await ImageStore.open(dirs[k + 1]), join(work, `target${k + 2}`))
        verified.push({ node: k + 2, differences: v.differences.length, checked: v.checked })
        bad += v.differences.length
        say(`node${k + 2}: ${v.differences.length === 0 ? 'verified' : `${v.differences.length} difference(s)`}, ${v.checked} entries`)
      }
      if (a.json) process.stdout.write(JSON.stringify({ nodes, image: `sample@${cap.version}`, bytes: cap.bytes, seconds, verified }, null, 2) + '\n')
      if (bad > 0) throw new ImgmeshError('EIO', `${bad} difference(s) between the deployed copies and the image`)
    } finally {
      await Promise.all(children.map(async (child) => {
        if (child.exitCode !== null) return
        const exited = new Promise(resolve => child.once('exit', resolve))
        child.kill('SIGTERM')
        const timer = setTimeout(() => { child.kill('SIGKILL') }, 10_000)
        await exited
        clearTimeout(timer)
      }))
      if (a.keep) process.stderr.write(`kept ${work}\n`)
      else await rm(work, { recursive: true, force: true })
    }
  })
}
