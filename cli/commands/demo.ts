/** `imgmesh demo`: the main job on a built-in example, with nothing to set up and nothing left behind. */
import type { Argv } from 'yargs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ImageStore } from '../../node/image/image-store.ts'
import { capture } from '../../node/image/capture.ts'
import { deploy } from '../../node/target/deploy.ts'
import { verifyTarget } from '../../node/target/verify.ts'
import { makeSampleTree } from '../../node/demo/sample-tree.ts'
import { ImgmeshError } from '../../node/errors.ts'
import { formatBytes } from '../output.ts'
import type { GlobalArgs } from '../imgmesh.ts'

export function demoCommand (y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('demo', 'capture a generated sample tree and deploy it, then verify (temporary data dir, cleaned up)', (c) => c
    .option('keep', { type: 'boolean', default: false, describe: 'keep the temporary directory' }), async (a) => {
    const work = await mkdtemp(join(tmpdir(), 'imgmesh-demo-'))
    try {
      const golden = join(work, 'golden')
      const say = (s: string): void => { if (!a.json) process.stdout.write(s + '\n') }
      say(`sample tree: ${golden}`)
      await makeSampleTree(golden, { bytes: 16 * 1024 * 1024 })
      const store = await ImageStore.open(join(work, 'data'))
      const c = await capture(store, { source: golden, image: 'sample', defaultExcludes: false, message: 'demo' })
      say(`captured sample@${c.version} ${c.cid}: ${c.files} files, ${formatBytes(c.bytes)}, ${formatBytes(c.newBytes)} stored`)
      const resolved = await store.resolve('sample')
      const d = await deploy(store, resolved, { target: join(work, 'target') })
      say(`deployed to ${d.target}: ${d.created} entries created, ${formatBytes(d.bytesWritten)} written`)
      const v = await verifyTarget(store, join(work, 'target'))
      say(v.differences.length === 0 ? `verified: target matches sample@${v.version} (${v.checked} entries)` : `verify found ${v.differences.length} difference(s)`)
      if (a.json) process.stdout.write(JSON.stringify({ capture: c, deploy: { ...d, changes: d.changes.length }, verify: v }, null, 2) + '\n')
      if (v.differences.length > 0) throw new ImgmeshError('EIO', `demo deploy differs from the image: ${v.differences.slice(0, 3).map(x => `${x.what} ${x.path}`).join(', ')}`)
    } finally {
      if (a.keep) process.stderr.write(`kept ${work}\n`)
      else await rm(work, { recursive: true, force: true })
    }
  })
}
