/** Updates through the swarm: groups, assignments, staging, apply with hooks and excludes, rollback, bad input. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, mkdir, chmod, readFile, readdir } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir, hostname } from 'node:os'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'
import { rsyncDifferences } from './support/tree-check.ts'
import { AgentSet, waitFor } from './support/agents.ts'
import { ControlClient } from '../node/control/control-api.ts'
import { DEFAULT_UPDATE_EXCLUDES } from '../node/tree/exclude.ts'

let work: string
// What an apply leaves alone on a node (SystemImager's updateclient.local.exclude), plus the hooks' log.
const UPDATE_EXCLUDES = [...DEFAULT_UPDATE_EXCLUDES, '/var/log']
let agents: AgentSet
const target = (n: string): string => join(work, `target-${n}`)

interface Status {
  versions: Array<{ image: string, number: number, complete: boolean }>
  updates: { state: string, error: string | null, deployed: { number: number } | null, hooks: Array<{ name: string, stage: string, code: number }> }
  traffic: { rejectedAssignments: number }
}
const status = async (name: string): Promise<Status> => await (await ControlClient.require(agents.dataDir(name))).call<Status>('status')

async function hook (tree: string, stage: string, name: string, script: string): Promise<void> {
  const dir = join(tree, 'etc/imgmesh/hooks', `${stage}.d`)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, name), `#!/bin/sh\n${script}\n`)
  await chmod(join(dir, name), 0o755)
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'imgmesh-updates-'))
  agents = new AgentSet(join(work, 'nodes'))
  const v1 = join(work, 'v1')
  await makeSampleTree(v1, { bytes: 4 * 1024 * 1024, seed: 21 })
  await mkdir(join(v1, 'var/log'), { recursive: true })
  await hook(v1, 'pre-apply', '10-pre', 'mkdir -p var/log && echo "pre $IMGMESH_VERSION" >> var/log/hooks.log')
  await hook(v1, 'post-apply', '10-post', 'echo "post $IMGMESH_VERSION" >> var/log/hooks.log')
  const key = await agents.init('origin')
  for (const n of ['c1', 'c2', 'g1', 'pub']) await agents.init(n, { clusterKey: key, trust: [agents.publishers.get('origin')!] })
  // pub publishes too: everyone trusts it.
  for (const n of ['origin', 'c1', 'c2', 'g1']) await imgmesh(['keys', 'trust', agents.publishers.get('pub')!, '--data-dir', agents.dataDir(n)])
  const o = await agents.start('origin')
  for (const n of ['c1', 'c2']) {
    await mkdir(target(n), { recursive: true })
    await agents.start(n, { bootstrap: [o.addr], extra: ['--group', 'compute', '--target', target(n), '--hook-timeout', '3'] })
  }
  await mkdir(target('g1'), { recursive: true })
  await agents.start('g1', { bootstrap: [o.addr], extra: ['--group', 'gpu', '--target', target('g1')] })
  // pub follows the compute group too: it applies what it publishes.
  await mkdir(target('pub'), { recursive: true })
  await agents.start('pub', { bootstrap: [o.addr], extra: ['--group', 'compute', '--target', target('pub')] })
  await imgmeshJson(['capture', v1, '--image', 'os', '--no-default-excludes', '--data-dir', agents.dataDir('origin')])
})

after(async () => {
  await agents.stopAll()
  await rm(work, { recursive: true, force: true })
})

test('an apply assignment reaches its group only; followers apply with hooks in order', { timeout: 120_000 }, async () => {
  const r = await imgmesh(['assign', 'os', '--group', 'compute', '--policy', 'apply', '--data-dir', agents.dataDir('origin')])
  assert.equal(r.code, 0, r.stderr)
  const g = await imgmesh(['assign', 'os', '--group', 'gpu', '--policy', 'stage', '--data-dir', agents.dataDir('origin')])
  assert.equal(g.code, 0, g.stderr)
  for (const n of ['c1', 'c2', 'pub']) await waitFor(`${n} applies os@1`, async () => (await status(n)).updates.deployed?.number === 1, 60_000)
  assert.equal(await readFile(join(target('c1'), 'var/log/hooks.log'), 'utf8'), 'pre 1\npost 1\n')
  assert.deepEqual(rsyncDifferences(join(work, 'v1'), target('c1'), UPDATE_EXCLUDES), [])
  // The gpu group stages only: the version is complete in its store, its target untouched.
  await waitFor('g1 stages os@1', async () => (await status('g1')).versions.some(v => v.number === 1 && v.complete), 30_000)
  const sg = await status('g1')
  assert.equal(sg.updates.deployed, null)
  assert.equal(sg.updates.state, 'staged')
})

test('a version published from a non-origin node is staged and applied by every follower; node files survive', { timeout: 120_000 }, async () => {
  await writeFile(join(target('c1'), 'etc/hostname'), 'node-c1\n')   // per-node file, in the update excludes
  assert.ok(DEFAULT_UPDATE_EXCLUDES.includes('/etc/hostname'))
  const v2 = join(work, 'v2')
  assert.equal(spawnSync('cp', ['-a', join(work, 'v1'), v2]).status, 0)
  await writeFile(join(v2, 'etc/motd'), 'version two\n')
  await writeFile(join(v2, 'usr/bin/new-tool'), 'new\n')
  const cap = await imgmeshJson<{ version: number, published: boolean }>(['capture', v2, '--image', 'os', '--no-default-excludes', '--data-dir', agents.dataDir('pub')])
  assert.equal(cap.version, 2)
  assert.equal(cap.published, true)
  // The publisher applies its own version at once, not at its update manager's next periodic
  // check (every 10 s).
  await waitFor('pub applies its own os@2', async () => (await status('pub')).updates.deployed?.number === 2, 5_000)
  for (const n of ['c1', 'c2']) await waitFor(`${n} applies os@2`, async () => (await status(n)).updates.deployed?.number === 2, 60_000)
  await waitFor('g1 stages os@2', async () => (await status('g1')).versions.some(v => v.number === 2 && v.complete), 30_000)
  assert.equal((await status('g1')).updates.deployed, null)
  assert.equal(await readFile(join(target('c1'), 'etc/hostname'), 'utf8'), 'node-c1\n')
  assert.equal(await readFile(join(target('c2'), 'etc/motd'), 'utf8'), 'version two\n')
  assert.equal(await readFile(join(target('c2'), 'var/log/hooks.log'), 'utf8'), 'pre 1\npost 1\npre 2\npost 2\n')
})

test('rollback returns a target to its previous version exactly; with none, a clear error', { timeout: 60_000 }, async () => {
  // Pin the group to version 2 so the agent does not re-apply while we roll back by hand.
  const r = await imgmesh(['rollback', target('c2'), '--data-dir', agents.dataDir('c2')])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /from os@2 to os@1/)
  assert.deepEqual(rsyncDifferences(join(work, 'v1'), target('c2'), UPDATE_EXCLUDES), [])
  const none = await imgmesh(['rollback', join(work, 'nowhere'), '--data-dir', agents.dataDir('c2')])
  assert.notEqual(none.code, 0)
  assert.match(none.stderr, /no previous version|cannot roll back/)
})

test('override images per group and templates customise each node, in order; verify still exact', { timeout: 120_000 }, async () => {
  const ov = join(work, 'override-compute')
  await mkdir(join(ov, 'etc'), { recursive: true })
  await writeFile(join(ov, 'etc/motd'), 'compute nodes only\n')
  await writeFile(join(ov, 'etc/issue.imgmesh-template'), 'Welcome to {{hostname}} ({{groups}}), {{image}}@{{version}}\n')
  await imgmeshJson(['capture', ov, '--image', 'os+compute', '--no-default-excludes', '--data-dir', agents.dataDir('origin')])
  for (const n of ['c1', 'c2']) {
    await waitFor(`${n} applies the override`, async () => {
      try { return (await readFile(join(target(n), 'etc/motd'), 'utf8')) === 'compute nodes only\n' } catch { return false }
    }, 60_000)
    await waitFor(`${n} settles`, async () => (await status(n)).updates.state === 'applied', 30_000)
  }
  assert.equal(await readFile(join(target('c1'), 'etc/issue'), 'utf8'), `Welcome to ${hostname()} (compute), os@2\n`)
  assert.ok(!existsSync(join(target('c1'), 'etc/issue.imgmesh-template')))
  // The rest of the image is untouched, and verify compares with the composition.
  assert.equal(await readFile(join(target('c1'), 'usr/bin/new-tool'), 'utf8'), 'new\n')
  const v = await imgmesh(['verify', target('c1'), '--data-dir', agents.dataDir('c1')])
  assert.equal(v.code, 0, v.stdout)
  // The gpu group has no override and stages only.
  assert.equal((await status('g1')).updates.deployed, null)
})

test('a failing or hanging pre-apply hook stops the apply and is reported; the target stays on its version', { timeout: 120_000 }, async () => {
  const v3 = join(work, 'v3')
  assert.equal(spawnSync('cp', ['-a', join(work, 'v2'), v3]).status, 0)
  await hook(v3, 'pre-apply', '20-hang', 'sleep 30')
  await writeFile(join(v3, 'etc/motd'), 'version three\n')
  await imgmeshJson(['capture', v3, '--image', 'os', '--no-default-excludes', '--data-dir', agents.dataDir('origin')])
  await waitFor('c1 reports the hook timeout', async () => { const s = await status('c1'); return s.updates.state === 'failed' && /did not finish/.test(s.updates.error ?? '') }, 60_000)
  const s = await status('c1')
  assert.equal(s.updates.deployed?.number, 2)
  assert.equal(await readFile(join(target('c1'), 'etc/motd'), 'utf8'), 'compute nodes only\n') // still v2 with its override
  const v = await imgmesh(['verify', target('c1'), '--data-dir', agents.dataDir('c1')])
  assert.equal(v.code, 0, v.stdout)
  // The timed-out run removed the copies of the hooks it ran.
  assert.deepEqual(await readdir(join(agents.dataDir('c1'), 'hooks-staging')), [])
  // pub (hook timeout 300 s) is still in the hanging hook: its copies are in its data directory.
  const pubStaging = join(agents.dataDir('pub'), 'hooks-staging')
  await waitFor('pub runs the hanging hook', async () => (await readdir(pubStaging).catch(() => [])).length === 1, 30_000)
  const [run] = await readdir(pubStaging)
  assert.match(run, /^pre-apply-/)
  assert.deepEqual((await readdir(join(pubStaging, run))).sort(), ['10-pre', '20-hang'])
  // An agent that dies there leaves them behind; started again, it removes them.
  await agents.stop('pub', 'SIGKILL')
  assert.ok(existsSync(join(pubStaging, run)))
  await mkdir(target('pub'), { recursive: true })
  await agents.start('pub', { bootstrap: [agents.agents.get('origin')!.addr], extra: ['--group', 'compute', '--target', target('pub')] })
  assert.ok(!existsSync(join(pubStaging, run)))
})

test('an assignment signed by a key the cluster does not trust is refused', { timeout: 60_000 }, async () => {
  // A cluster member whose publisher key only it trusts.
  await agents.init('stranger', { clusterKey: join(agents.dataDir('origin'), 'cluster.key'), trust: [agents.publishers.get('origin')!] })
  await imgmesh(['keys', 'trust', agents.publishers.get('stranger')!, '--data-dir', agents.dataDir('stranger')])
  await agents.start('stranger', { bootstrap: [agents.agents.get('c1')!.addr] })
  await waitFor('stranger connected', async () => ((await (await ControlClient.require(agents.dataDir('stranger'))).call<{ peers: unknown[] }>('status')).peers.length >= 1))
  await new Promise(resolve => setTimeout(resolve, 1500)) // gossip mesh
  const r = await imgmesh(['assign', 'os@1', '--group', 'compute', '--policy', 'apply', '--data-dir', agents.dataDir('stranger')])
  assert.equal(r.code, 0, r.stderr)
  await waitFor('c1 rejects it', async () => (await status('c1')).traffic.rejectedAssignments > 0, 15_000)
  assert.equal((await status('c1')).updates.deployed?.number, 2)
  await agents.stop('stranger')
  // A bad cron expression is refused before anything is signed.
  const bad = await imgmesh(['assign', 'os', '--group', 'compute', '--policy', 'apply-at', '--at', '99 * * * *', '--data-dir', agents.dataDir('origin')])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /cron/)
})

test('a full disk while staging is reported by status; the agent stays up and its target untouched', { timeout: 90_000, skip: process.getuid?.() !== 0 && 'needs root to mount a small tmpfs' }, async () => {
  const dir = agents.dataDir('tiny')
  await mkdir(dir, { recursive: true })
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]).status, 0)
  try {
    await agents.init('tiny', { clusterKey: join(agents.dataDir('origin'), 'cluster.key'), trust: [agents.publishers.get('origin')!, agents.publishers.get('pub')!] })
    await mkdir(target('tiny'), { recursive: true })
    await writeFile(join(target('tiny'), 'keep'), 'the running system\n')
    await agents.start('tiny', { bootstrap: [agents.agents.get('origin')!.addr], extra: ['--group', 'tiny', '--target', target('tiny')] })
    const r = await imgmesh(['assign', 'os@2', '--group', 'tiny', '--policy', 'apply', '--data-dir', agents.dataDir('origin')])
    assert.equal(r.code, 0, r.stderr)
    await waitFor('tiny reports the full disk', async () => {
      const s = await status('tiny')
      return s.updates.state === 'failed' && /space/i.test(s.updates.error ?? '')
    }, 60_000)
    const s = await status('tiny')
    assert.equal(s.updates.deployed, null)
    assert.equal(await readFile(join(target('tiny'), 'keep'), 'utf8'), 'the running system\n')
    await agents.stop('tiny')
  } finally {
    await agents.stop('tiny')
    spawnSync('umount', [dir])
  }
})
