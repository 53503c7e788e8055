/** Commands on the local image store: capture, images, log, show, diff, rm, gc. */
import type { Argv } from 'yargs'
import { ImageStore, parseImageSpec } from '../../node/image/image-store.ts'
import { capture } from '../../node/image/capture.ts'
import { captureBlock } from '../../node/image/block-capture.ts'
import { diffVersions } from '../../node/image/version-diff.ts'
import { pruneVersions } from '../../node/image/retention.ts'
import { DEFAULT_CAPTURE_EXCLUDES, readExcludeFile } from '../../node/tree/exclude.ts'
import { ImgmeshError } from '../../node/errors.ts'
import { ControlClient } from '../../node/control/control-api.ts'
import { resolve as resolvePath } from 'node:path'
import { realpath } from 'node:fs/promises'
import { CID } from 'multiformats/cid'
import { deploy, type DeployResult } from '../../node/target/deploy.ts'
import { readTargetState, writeTargetState } from '../../node/target/target-state.ts'
import { recordCheckout } from '../../node/image/checkout.ts'
import { emit, formatBytes, ProgressLine } from '../output.ts'
import type { GlobalArgs } from '../imgmesh.ts'

export async function collectExcludes (args: { exclude?: string[], excludeFrom?: string[] }): Promise<string[]> {
  const out = [...(args.exclude ?? [])]
  for (const file of args.excludeFrom ?? []) out.push(...await readExcludeFile(file))
  return out
}

export function imageCommands (y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command('capture [src]', 'capture a directory tree (or, with --block, a disk) as the next version of an image', (c) => c
      .positional('src', { type: 'string', describe: 'directory to capture (a golden client\'s root or an image tree)' })
      .option('block', { type: 'string', describe: 'capture this block device or disk-image file instead of a directory (SRC not needed)' })
      .option('image', { type: 'string', demandOption: true, describe: 'image name' })
      .option('exclude', { type: 'string', array: true, describe: 'rsync-style pattern to leave out (anchored at SRC when it starts with /)' })
      .option('exclude-from', { type: 'string', array: true, describe: 'file of exclude patterns, one per line' })
      .option('default-excludes', { type: 'boolean', default: true, describe: `leave out what a live root should not carry (--no-default-excludes for image trees): ${DEFAULT_CAPTURE_EXCLUDES.join(' ')}` })
      .option('message', { alias: 'm', type: 'string', default: '', describe: 'description of the version' })
      .option('allow-empty', { type: 'boolean', default: false, describe: 'create a version even if nothing changed' })
      .option('compress', { type: 'boolean', default: true, describe: 'keep new chunks zstd-compressed in the store where that saves a tenth; the agent sends them as stored (--no-compress: faster capture, larger store)' })
      .option('publish', { type: 'boolean', default: true, describe: 'announce the new version through the running agent (--no-publish to keep it local)' }),
    async (a) => {
      const store = await ImageStore.open(a.dataDir)
      // With an agent up, learn the newest numbers from the swarm first, so numbers rarely collide.
      const running = await ControlClient.find(a.dataDir)
      if (running !== null) await running.call('sync').catch(() => {})
      const progress = new ProgressLine(a.json)
      let files = 0
      let bytes = 0
      if (a.src === undefined && a.block === undefined) throw new ImgmeshError('EBADARG', 'capture needs SRC (a directory) or --block DEVICE_OR_FILE')
      const r = a.block !== undefined
        ? await captureBlock(store, { device: a.block, image: a.image, message: a.message, allowEmpty: a.allowEmpty, compress: a.compress, onProgress: (p) => { progress.update(`capturing ${p.path} ${formatBytes(p.bytes)}/${formatBytes(p.totalBytes)}`) } })
        : await capture(store, {
        source: a.src ?? '',
        image: a.image,
        excludes: await collectExcludes(a),
        defaultExcludes: a.defaultExcludes,
        message: a.message,
        allowEmpty: a.allowEmpty,
        compress: a.compress,
        onProgress: (p) => { files++; bytes += p.bytes; progress.update(`capturing ${files} files, ${formatBytes(bytes)}  ${p.path}`) }
      })
      progress.done()
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
      // Hand the new version to the agent of this data dir, which announces it to the swarm.
      let published = false
      if (r.created && a.publish) {
        const agent = await ControlClient.find(a.dataDir)
        if (agent !== null) { await agent.call('publish', { spec: `${r.image}@${r.version}` }); published = true }
      }
      emit(a, { image: r.image, version: r.version, cid: r.cid, created: r.created, published, files: r.files, entries: r.entries, bytes: r.bytes, newBytes: r.newBytes, hashedFiles: r.hashedFiles }, () =>
        r.created
          ? `${r.image}@${r.version} ${r.cid} (${r.files} files, ${formatBytes(r.bytes)}, ${formatBytes(r.newBytes)} new)`
          : `${r.image}@${r.version} ${r.cid} unchanged (nothing new stored)`)
    })
    .command('checkout <spec> <dir>', 'materialise a version in DIR for editing (chroot-able); commit it back with imgmesh commit', (c) => c
      .positional('spec', { type: 'string', demandOption: true })
      .positional('dir', { type: 'string', demandOption: true }), async (a) => {
      const dir = resolvePath(a.dir)
      const agent = await ControlClient.find(a.dataDir)
      const r = agent !== null
        ? await agent.call<DeployResult>('deploy', { spec: a.spec, target: dir })
        : await (async () => { const st = await ImageStore.open(a.dataDir); return await deploy(st, await st.resolve(a.spec), { target: dir }) })()
      const store = await ImageStore.open(a.dataDir)
      const version = await store.getVersion(CID.parse(r.cid))
      const files = await recordCheckout(store, version.body.image, r.target, version.body.tree)
      emit(a, { image: r.image, version: r.version, cid: r.cid, dir: r.target, files }, () => `checked out ${r.image}@${r.version} in ${r.target}; edit it (chroot ${r.target}), then: imgmesh commit ${a.dir} --image ${r.image}`)
    })
    .command('commit <dir>', 'capture a checked-out DIR as the next version, based on the version checked out', (c) => c
      .positional('dir', { type: 'string', demandOption: true })
      .option('image', { type: 'string', demandOption: true, describe: 'image name' })
      .option('message', { alias: 'm', type: 'string', default: '', describe: 'description of the version' })
      .option('publish', { type: 'boolean', default: true, describe: 'announce it through the running agent' }), async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const dir = resolvePath(a.dir)
      const state = await readTargetState(store.targetsDir, await realpath(dir).catch(() => dir))
      if (state.deployed === undefined || state.deployed.image !== a.image) {
        throw new ImgmeshError('EBADARG', `${a.dir} is not a checkout of ${a.image} (imgmesh checkout ${a.image} ${a.dir} first, or use capture)`)
      }
      const running = await ControlClient.find(a.dataDir)
      if (running !== null) await running.call('sync').catch(() => {})
      const r = await capture(store, { source: dir, image: a.image, base: state.deployed.cid, defaultExcludes: false, message: a.message })
      // The directory now is the new version: the next commit builds on it.
      if (r.created) {
        const realDir = await realpath(dir)
        await writeTargetState(store.targetsDir, { target: realDir, deployed: { image: r.image, number: r.version, cid: CID.parse(r.cid), tree: CID.parse(r.tree), at: new Date().toISOString(), excludes: [] }, previous: state.deployed })
      }
      let published = false
      if (r.created && a.publish && running !== null) { await running.call('publish', { spec: `${r.image}@${r.version}` }); published = true }
      emit(a, { image: r.image, version: r.version, cid: r.cid, created: r.created, published, base: state.deployed.number, files: r.files, hashedFiles: r.hashedFiles, newBytes: r.newBytes }, () =>
        r.created ? `${r.image}@${r.version} ${r.cid} (from @${state.deployed!.number}; ${r.hashedFiles} of ${r.files} files rehashed, ${formatBytes(r.newBytes)} new)` : `${a.dir} is unchanged from ${r.image}@${r.version}`)
    })
    .command('images', 'list the images in the store', () => {}, async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const out: Array<{ image: string, versions: number, latest: number, cid: string, created: string, files: number, bytes: number }> = []
      for (const image of await store.refs.images()) {
        const versions = await store.refs.versions(image)
        const head = versions[versions.length - 1]
        const v = await store.getVersion(head.cid)
        out.push({ image, versions: versions.length, latest: head.number, cid: head.cid.toString(), created: v.body.created, files: v.body.stats.files, bytes: v.body.stats.bytes })
      }
      emit(a, out, () => out.length === 0 ? 'no images' : out.map(i => `${i.image}\t@${i.latest}\t${i.versions} version(s)\t${i.files} files\t${formatBytes(i.bytes)}\t${i.created}`))
    })
    .command('log <image>', 'list the versions of an image, newest first', (c) => c.positional('image', { type: 'string', demandOption: true }), async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const { image } = parseImageSpec(a.image)
      const refs = await store.refs.versions(image)
      if (refs.length === 0) throw new ImgmeshError('ENOIMAGE', `no image named ${image}`)
      const out: Array<{ version: number, cid: string, parents: string[], created: string, author: string, message: string, files: number, bytes: number }> = []
      for (const ref of refs.reverse()) {
        const { body } = await store.getVersion(ref.cid)
        out.push({ version: body.number, cid: ref.cid.toString(), parents: body.parents.map(p => p.toString()), created: body.created, author: body.author, message: body.message, files: body.stats.files, bytes: body.stats.bytes })
      }
      emit(a, out, () => out.map(v => `${image}@${v.version}  ${v.cid}\n  created ${v.created} by ${v.author.slice(0, 16)}…  ${v.files} files ${formatBytes(v.bytes)}${v.message === '' ? '' : '\n  ' + v.message}`))
    })
    .command('show <spec>', 'show one version (NAME or NAME@N)', (c) => c.positional('spec', { type: 'string', demandOption: true }), async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const { cid, version } = await store.resolve(a.spec)
      const b = version.body
      const out = { image: b.image, version: b.number, cid: cid.toString(), tree: b.tree.toString(), parents: b.parents.map(p => p.toString()), created: b.created, author: b.author, message: b.message, stats: b.stats }
      emit(a, out, () => [
        `${b.image}@${b.number}  ${cid.toString()}`,
        `tree     ${b.tree.toString()}`,
        `parents  ${out.parents.join(' ') || '-'}`,
        `created  ${b.created}`,
        `author   ${b.author}`,
        `content  ${b.stats.files} files, ${b.stats.dirs} dirs, ${b.stats.entries} entries, ${formatBytes(b.stats.bytes)}; ${b.stats.chunks} unique chunks, ${formatBytes(b.stats.chunkBytes)}`,
        ...(b.message === '' ? [] : [`message  ${b.message}`])
      ])
    })
    .command('diff <a> <b>', 'paths added, removed and changed between two versions, and the bytes a deploy would move', (c) => c
      .positional('a', { type: 'string', demandOption: true }).positional('b', { type: 'string', demandOption: true }), async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const [va, vb] = await Promise.all([store.resolve(a.a), store.resolve(a.b)])
      const d = await diffVersions(store.blocks, va.version.body.tree, vb.version.body.tree)
      emit(a, d, () => [
        ...d.added.map(p => `+ ${p.path}`),
        ...d.removed.map(p => `- ${p.path}`),
        ...d.changed.map(p => `${p.kind === 'attributes' ? '.' : '~'} ${p.path}`),
        `${d.added.length} added, ${d.removed.length} removed, ${d.changed.length} changed; ${d.newChunks} new chunks, ${formatBytes(d.newBytes)} to move`
      ])
    })
    .command('rm <spec>', 'remove an image (NAME) or one version (NAME@N); blocks go at the next gc', (c) => c.positional('spec', { type: 'string', demandOption: true }), async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const { image, number } = parseImageSpec(a.spec)
      const removed = await store.refs.remove(image, number)
      if (removed === 0) throw new ImgmeshError(number === undefined ? 'ENOIMAGE' : 'ENOVERSION', `no such image or version: ${a.spec}`)
      emit(a, { removed }, () => `removed ${removed} version(s) of ${image}`)
    })
    .command('gc', 'remove blocks that no kept or deployed version references', (c) => c
      .option('keep', { type: 'number', describe: 'first drop all but the newest K versions of each image (deployed ones are always kept)' }), async (a) => {
      const store = await ImageStore.open(a.dataDir)
      const pruned = a.keep === undefined ? { removed: [], kept: 0 } : await pruneVersions(store, a.keep)
      const r = await store.gc()
      emit(a, { ...r, versionsRemoved: pruned.removed }, () => [
        ...pruned.removed.map(v => `dropped ${v.image}@${v.number}`),
        `removed ${r.removed} blocks (${formatBytes(r.bytes)})`
      ])
    })
}
