/** Commands on targets: deploy and verify. */
import type { Argv } from 'yargs'
import { ImageStore } from '../../node/image/image-store.ts'
import { resolve as resolvePath } from 'node:path'
import { deploy, type DeployResult } from '../../node/target/deploy.ts'
import { ControlClient } from '../../node/control/control-api.ts'
import { verifyTarget } from '../../node/target/verify.ts'
import { emit, formatBytes, ProgressLine } from '../output.ts'
import { collectExcludes } from './image.ts'
import type { GlobalArgs } from '../imgmesh.ts'

const SYMBOL = { create: '+', update: '>', attributes: '.', delete: '-', link: 'h' } as const

export function targetCommands (y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command('deploy <spec> <target>', 'make TARGET equal to an image version (NAME or NAME@N)', (c) => c
      .positional('spec', { type: 'string', demandOption: true })
      .positional('target', { type: 'string', demandOption: true })
      .option('exclude', { type: 'string', array: true, describe: 'path pattern on the target neither written nor deleted' })
      .option('exclude-from', { type: 'string', array: true, describe: 'file of exclude patterns' })
      .option('dry-run', { alias: 'n', type: 'boolean', default: false, describe: 'list what would change, change nothing' })
      .option('delete', { type: 'boolean', default: true, describe: 'remove what the image does not have (--no-delete keeps it)' }),
    async (a) => {
      const progress = new ProgressLine(a.json)
      const started = Date.now()
      const excludes = await collectExcludes(a)
      const target = resolvePath(a.target)
      const agent = await ControlClient.find(a.dataDir)
      let r: DeployResult
      if (agent !== null) {
        // Through the agent: chunks come from every peer that has them.
        r = await agent.call<DeployResult>('deploy', { spec: a.spec, target, excludes, dryRun: a.dryRun, delete: a.delete }, (e) => {
          const p = e as { bytes: number, totalBytes: number, rate: number, peers: number, have: number, pieces: number }
          progress.update(`fetching ${p.have}/${p.pieces} pieces, ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)} at ${formatBytes(p.rate)}/s from ${p.peers} peer(s)`)
        })
      } else {
        const store = await ImageStore.open(a.dataDir)
        const resolved = await store.resolve(a.spec)
        r = await deploy(store, resolved, {
          target,
          excludes,
          dryRun: a.dryRun,
          delete: a.delete,
          onProgress: (p) => { progress.update(`deploying ${p.files} files, ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)}  ${p.path}`) }
        })
      }
      progress.done()
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
      const seconds = (Date.now() - started) / 1000
      emit(a, { ...r, seconds }, () => [
        ...(r.dryRun ? r.changes.map(c => `${SYMBOL[c.kind]} ${c.path}`) : []),
        `${r.dryRun ? 'would deploy' : 'deployed'} ${r.image}@${r.version} to ${r.target}: ${r.created} created, ${r.updated} updated, ${r.attributes} attributes, ${r.deleted} deleted, ${r.linked} linked, ${formatBytes(r.bytesWritten)} written in ${seconds.toFixed(1)}s`
      ])
    })
    .command('verify <target>', 'check TARGET against the version deployed there; exit 1 on any difference', (c) => c
      .positional('target', { type: 'string', demandOption: true }), async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const r = await verifyTarget(store, a.target)
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
      emit(a, r, () => [
        ...r.differences.map(d => `${d.what}\t${d.path}${d.detail === undefined ? '' : '\t' + d.detail}`),
        r.differences.length === 0 ? `${r.target} matches ${r.image}@${r.version} (${r.checked} entries checked)` : `${r.differences.length} difference(s) from ${r.image}@${r.version}`
      ])
      if (r.differences.length > 0) process.exitCode = 1
    })
}
