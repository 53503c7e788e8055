/**
 * /metrics in Prometheus text format: two agents on loopback, the metrics of each scraped over
 * HTTP before and after a deploy from one to the other; the counters move the right way.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { capture } from '../node/image/capture.ts'
import { OperatorSwarm, waitUntil } from './operator-swarm.ts'

let work: string
let swarm: OperatorSwarm

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'imgmesh-metrics-'))
  swarm = new OperatorSwarm(join(work, 'nodes'))
})
after(async () => {
  await swarm.stopAll()
  await rm(work, { recursive: true, force: true })
})

/** Parses the text format into "name{labels}" → value, checking every sample line's shape. */
function parse (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/i.exec(line)
    assert.ok(m !== null, `not a sample line: ${line}`)
    out.set(m[1], Number(m[2]))
  }
  return out
}

async function scrape (url: string): Promise<Map<string, number>> {
  const r = await fetch(url)
  assert.equal(r.status, 200)
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  return parse(await r.text())
}

test('counters, gauges and the deploy histogram move after a deploy', { timeout: 120_000 }, async () => {
  const golden = join(work, 'golden')
  await makeSampleTree(golden, { bytes: 6 * 1024 * 1024, seed: 9 })
  const a = await swarm.add('a', { operator: { metrics: '127.0.0.1:0' } })
  await capture(a.agent.store, { source: golden, image: 'sample', defaultExcludes: false, message: 'metrics test' })
  const b = await swarm.add('b', { operator: { metrics: '127.0.0.1:0', dashboard: '127.0.0.1:0' } })
  await waitUntil('connected', () => a.agent.swarm.libp2p.getPeers().length >= 1)
  await a.agent.publish('sample@1')
  await waitUntil('b learns sample@1', async () => await b.agent.store.refs.get('sample', 1) !== null)

  const aUrl = a.surface.metricsUrl!
  const bUrl = b.surface.metricsUrl!
  const before = { a: await scrape(aUrl), b: await scrape(bUrl) }
  assert.equal(before.a.get('imgmesh_bytes_sent_total{protocol="blocks"}'), 0)
  assert.equal(before.b.get('imgmesh_bytes_received_total{protocol="blocks"}'), 0)
  assert.equal(before.b.get('imgmesh_deploy_duration_seconds_count{result="done"}') ?? 0, 0)
  assert.equal(before.a.get('imgmesh_peers'), 1)
  assert.ok((before.a.get('imgmesh_store_bytes') ?? 0) > 4 * 1024 * 1024, 'source store size')
  assert.ok((before.a.get('imgmesh_store_blocks') ?? 0) > 50)
  assert.equal(before.a.get('imgmesh_versions_held{state="complete"}'), 1)
  assert.equal(before.a.get('imgmesh_images'), 1)
  assert.ok(before.a.has('imgmesh_process_resident_memory_bytes'), 'process metrics')
  assert.ok([...before.a.keys()].some(k => k.startsWith('imgmesh_info{')))

  const r = await b.agent.deploy('sample@1', { target: join(work, 'target-b') })
  assert.ok(r.bytesWritten > 0)

  const after = { a: await scrape(aUrl), b: await scrape(bUrl) }
  const sent = after.a.get('imgmesh_bytes_sent_total{protocol="blocks"}') ?? 0
  const received = after.b.get('imgmesh_bytes_received_total{protocol="blocks"}') ?? 0
  assert.ok(sent >= 4 * 1024 * 1024, `sent ${sent}`)
  assert.ok(received >= 4 * 1024 * 1024, `received ${received}`)
  assert.ok((after.a.get('imgmesh_blocks_served_total') ?? 0) > 0)
  assert.equal(after.a.get('imgmesh_blocks_served_total'), after.b.get('imgmesh_blocks_fetched_total'))
  assert.equal(after.b.get('imgmesh_bad_blocks_total'), 0)
  assert.equal(after.b.get('imgmesh_deploy_duration_seconds_count{result="done"}'), 1)
  assert.ok((after.b.get('imgmesh_deploy_duration_seconds_sum{result="done"}') ?? 0) > 0)
  assert.equal(after.b.get('imgmesh_deploy_duration_seconds_bucket{le="+Inf",result="done"}'), 1)
  assert.equal(after.b.get('imgmesh_deploys_running'), 0)
  assert.equal(after.b.get('imgmesh_versions_held{state="complete"}'), 1)
  assert.ok((after.b.get('imgmesh_store_bytes') ?? 0) >= received * 0.9, 'deployer store size follows the blocks it fetched')
  // Swarm-wide gauges from the gossiped node table.
  let swarmView = new Map<string, number>()
  await waitUntil('b sees both nodes idle', async () => {
    swarmView = await scrape(bUrl)
    return swarmView.get('imgmesh_swarm_nodes_by_state{state="idle"}') === 2
  }, 20_000, 250)
  assert.equal(swarmView.get('imgmesh_swarm_nodes'), 2)
  assert.equal(swarmView.get('imgmesh_swarm_nodes_by_state{state="failed"}'), 0)
  // The same registry is served on the dashboard server.
  const onDashboard = await scrape(new URL('metrics', b.surface.dashboard!.url).toString())
  assert.equal(onDashboard.get('imgmesh_deploy_duration_seconds_count{result="done"}'), 1)
  // Counters never go down between scrapes.
  const again = await scrape(aUrl)
  assert.ok((again.get('imgmesh_bytes_sent_total{protocol="blocks"}') ?? 0) >= sent)
})
