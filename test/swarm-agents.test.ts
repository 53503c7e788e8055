/** Many real agent processes on loopback: capture on one, deploy on all, publish from another, late joiners, outsiders. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'
import { rsyncDifferences } from './support/tree-check.ts'
import { AgentSet, waitFor } from './support/agents.ts'

let work: string
let agents: AgentSet
let clusterKey: string
const golden = (): string => join(work, 'golden')

interface Status { peers: unknown[], versions: Array<{ image: string, number: number, complete: boolean }>, traffic: { rejectedAnnouncements: number, sent: number, received: number, providerLookups: number } }

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'imgmesh-swarm-'))
  agents = new AgentSet(join(work, 'nodes'))
  await makeSampleTree(golden(), { bytes: 12 * 1024 * 1024, seed: 3 })
})
after(async () => {
  await agents.stopAll()
  await rm(work, { recursive: true, force: true })
})

const status = async (name: string): Promise<Status> => await imgmeshJson<Status>(['status', '--data-dir', agents.dataDir(name)])

test('five agents: capture on one, every other deploys it from the swarm, every copy exact', { timeout: 120_000 }, async () => {
  clusterKey = await agents.init('a')
  const trustA = agents.publishers.get('a')!
  for (const n of ['b', 'c', 'd', 'e']) await agents.init(n, { clusterKey, trust: [trustA] })
  const a = await agents.start('a')
  for (const n of ['b', 'c', 'd', 'e']) await agents.start(n, { bootstrap: [a.addr] })
  await waitFor('all connected', async () => (await status('a')).peers.length >= 4)

  const cap = await imgmeshJson<{ version: number, published: boolean }>(['capture', golden(), '--image', 'sample', '--no-default-excludes', '--data-dir', agents.dataDir('a')])
  assert.equal(cap.published, true)
  // Gossip brings the version to everyone.
  for (const n of ['b', 'c', 'd', 'e']) await waitFor(`${n} learns sample@1`, async () => (await status(n)).versions.some(v => v.image === 'sample' && v.number === 1))

  const results = await Promise.all(['b', 'c', 'd', 'e'].map(async n => await imgmesh(['deploy', 'sample', join(work, `target-${n}`), '--data-dir', agents.dataDir(n)])))
  for (const r of results) assert.equal(r.code, 0, r.stderr)
  for (const n of ['b', 'c', 'd', 'e']) {
    assert.deepEqual(rsyncDifferences(golden(), join(work, `target-${n}`)), [])
    const v = await imgmesh(['verify', join(work, `target-${n}`), '--data-dir', agents.dataDir(n)])
    assert.equal(v.code, 0, v.stdout)
    const s = await status(n)
    assert.ok(s.versions.find(x => x.number === 1)?.complete)
  }
  // A name no peer knows fails at once, saying that every peer answered.
  const t = Date.now()
  const typo = await imgmesh(['deploy', 'sampel', join(work, 'target-typo'), '--data-dir', agents.dataDir('b')])
  assert.notEqual(typo.code, 0)
  assert.match(typo.stderr, /no image named sampel \(([1-9][0-9]*) of \1 connected peer\(s\) answered\)/)
  assert.ok(Date.now() - t < 20_000, `a mistyped name took ${Date.now() - t} ms to fail`)
  // The swarm, not the origin alone, made the copies.
  const received = await Promise.all(['b', 'c', 'd', 'e'].map(async n => (await status(n)).traffic.sent))
  assert.ok(received.some(sent => sent > 0), 'no client served any piece to another')
  // Every client is connected to the origin, which offered the version at once: no DHT lookup.
  for (const n of ['b', 'c', 'd', 'e']) assert.equal((await status(n)).traffic.providerLookups, 0, `${n} looked for providers`)
})

test('a trusted node other than the origin publishes the next version; others deploy it', { timeout: 120_000 }, async () => {
  const trustC = agents.publishers.get('c')!
  for (const n of ['a', 'b', 'c', 'd', 'e']) {
    const r = await imgmesh(['keys', 'trust', trustC, '--data-dir', agents.dataDir(n)])
    assert.equal(r.code, 0, r.stderr)
  }
  await new Promise(resolve => setTimeout(resolve, 2500)) // running agents re-read the trust list
  const edited = join(work, 'edited')
  assert.equal(spawnSync('cp', ['-a', golden(), edited]).status, 0)
  await writeFile(join(edited, 'etc/motd'), 'version two\n')
  await writeFile(join(edited, 'etc/new-file'), 'added in v2\n')
  const cap = await imgmeshJson<{ version: number, published: boolean }>(['capture', edited, '--image', 'sample', '--no-default-excludes', '--data-dir', agents.dataDir('c')])
  assert.equal(cap.version, 2)
  await waitFor('d learns sample@2', async () => (await status('d')).versions.some(v => v.number === 2))
  const r = await imgmesh(['deploy', 'sample@2', join(work, 'target-d'), '--data-dir', agents.dataDir('d')])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(rsyncDifferences(edited, join(work, 'target-d')), [])
})

test('a late joiner catches up through the heads exchange and deploys', { timeout: 60_000 }, async () => {
  await agents.init('late', { clusterKey, trust: [agents.publishers.get('a')!, agents.publishers.get('c')!] })
  await agents.start('late', { bootstrap: [agents.agents.get('b')!.addr] })
  await waitFor('late knows sample@2', async () => (await status('late')).versions.some(v => v.number === 2), 15_000)
  const r = await imgmesh(['deploy', 'sample', join(work, 'target-late'), '--data-dir', agents.dataDir('late')])
  assert.equal(r.code, 0, r.stderr)
  const v = await imgmesh(['verify', join(work, 'target-late'), '--data-dir', agents.dataDir('late')])
  assert.equal(v.code, 0, v.stdout)
})

test('a node without the cluster key cannot join', { timeout: 60_000 }, async () => {
  await agents.init('outsider')
  await agents.start('outsider', { bootstrap: [agents.agents.get('a')!.addr] })
  await new Promise(resolve => setTimeout(resolve, 3000))
  const s = await status('outsider')
  assert.equal(s.peers.length, 0)
  const r = await imgmesh(['deploy', 'sample', join(work, 'target-outsider'), '--data-dir', agents.dataDir('outsider')])
  assert.notEqual(r.code, 0)
  assert.match(r.stderr, /no image named sample \(no peer connected\)/)
  await agents.stop('outsider')
})

test('two nodes publishing the same number concurrently converge on the earlier capture, and show the conflict', { timeout: 90_000 }, async () => {
  const trustA = agents.publishers.get('a')!
  await agents.init('p1', { clusterKey, trust: [trustA] })
  await agents.init('p2', { clusterKey, trust: [trustA] })
  for (const [n, other] of [['p1', 'p2'], ['p2', 'p1']]) {
    await imgmesh(['keys', 'trust', agents.publishers.get(n)!, '--data-dir', agents.dataDir(n)])
    await imgmesh(['keys', 'trust', agents.publishers.get(other)!, '--data-dir', agents.dataDir(n)])
  }
  // Apart: each publishes conc@1 without seeing the other.
  await agents.start('p1')
  await agents.start('p2')
  for (const n of ['p1', 'p2']) {
    const dir = join(work, `conc-${n}`)
    await makeSampleTree(dir, { bytes: 64 * 1024, seed: n === 'p1' ? 41 : 42 })
    const r = await imgmeshJson<{ version: number }>(['capture', dir, '--image', 'conc', '--no-default-excludes', '--data-dir', agents.dataDir(n)])
    assert.equal(r.version, 1)
  }
  const cidOf = async (n: string): Promise<string> => (await imgmeshJson<{ cid: string }>(['show', 'conc@1', '--data-dir', agents.dataDir(n)])).cid
  const first = await cidOf('p1')
  assert.notEqual(first, await cidOf('p2'))
  // Together: the heads exchange resolves it the same way on both.
  await agents.stop('p2')
  await agents.start('p2', { bootstrap: [agents.agents.get('p1')!.addr] })
  await waitFor('p2 converges on p1\'s version', async () => (await cidOf('p2')) === first, 20_000)
  const s = await imgmeshJson<{ conflicts: Array<{ image: string, kept: string }> }>(['status', '--data-dir', agents.dataDir('p2')])
  assert.ok(s.conflicts.some(c => c.image === 'conc' && c.kept === first))
  await agents.stop('p1')
  await agents.stop('p2')
})
