/**
 * The dashboard in a real browser: three agents on loopback gossip their status; headless
 * Chromium (playwright-core) loads the page of one of them, sees every node, and watches a
 * deploy (slowed by an upload limit on the source) move to done, live over SSE. A screenshot
 * is kept in results/ as an artifact. The page must make no request beyond 127.0.0.1.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { request } from 'node:http'
import { mkdtemp, rm, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { capture } from '../node/image/capture.ts'
import { OperatorSwarm, waitUntil } from './operator-swarm.ts'

const CHROMIUM = '/usr/bin/chromium'
const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`

let work: string
let swarm: OperatorSwarm
let context: BrowserContext | null = null

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'imgmesh-dash-'))
  swarm = new OperatorSwarm(join(work, 'nodes'))
})
after(async () => {
  await context?.close().catch(() => {})
  await swarm.stopAll()
  await rm(work, { recursive: true, force: true })
})

/** The little of the DOM the page checks use (the project compiles without the DOM library). */
interface El { getAttribute: (name: string) => string | null, querySelectorAll: (sel: string) => Iterable<El> }
interface Doc { querySelector: (sel: string) => El | null, querySelectorAll: (sel: string) => { length: number } }

async function rowState (page: Page, peer: string): Promise<{ state: string | null, progress: number[], transfer: string[] }> {
  return await page.evaluate((p) => {
    const document = (globalThis as unknown as { document: Doc }).document
    const row = document.querySelector(`#nodes tr[data-peer="${p}"]`)
    if (row === null) return { state: null, progress: [], transfer: [] }
    const x = [...row.querySelectorAll('[data-progress]')]
    return { state: row.getAttribute('data-state'), progress: x.map(e => Number(e.getAttribute('data-progress'))), transfer: x.map(e => e.getAttribute('data-transfer-state') ?? '') }
  }, peer)
}

test('the dashboard shows every node and a deploy moving to done, with no request off 127.0.0.1', { skip, timeout: 180_000 }, async (t) => {
  // a: the source, uploads at 2 MiB/s so the deploy lasts a few seconds; it serves the dashboard.
  const a = await swarm.add('a', { agent: { uploadLimit: 2 * 1024 * 1024 }, operator: { dashboard: '127.0.0.1:0', groups: ['golden'] } })
  const b = await swarm.add('b', { operator: { groups: ['lab1'] } })
  const c = await swarm.add('c', { operator: { groups: ['lab1', 'gpu'] } })
  await waitUntil('everyone connected', () => a.agent.swarm.libp2p.getPeers().length >= 2 && b.agent.swarm.libp2p.getPeers().length >= 1 && c.agent.swarm.libp2p.getPeers().length >= 1)
  await waitUntil('a hears every node', () => a.surface.gossip.nodes().length === 3, 30_000)

  const golden = join(work, 'golden')
  await makeSampleTree(golden, { bytes: 12 * 1024 * 1024, seed: 6 })
  await capture(a.agent.store, { source: golden, image: 'sample', defaultExcludes: false, message: 'dashboard test' })
  await a.agent.publish('sample@1')

  const url = a.surface.dashboard!.url
  const userDataDir = await mkdtemp(join(tmpdir(), 'imgmesh-chromium-'))
  const requests: string[] = []
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1440, height: 1000 }
    })
    context.on('request', (r) => { requests.push(r.url()) })
    const page = context.pages()[0] ?? await context.newPage()
    const errors: string[] = []
    page.on('pageerror', (e) => { errors.push(e.message) })
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()) })
    await page.goto(url, { waitUntil: 'load', timeout: 20_000 })

    // Every node of the swarm, from gossip, with its groups.
    await page.waitForFunction(() => (globalThis as unknown as { document: Doc }).document.querySelectorAll('#nodes tr[data-peer]').length === 3, undefined, { timeout: 20_000 })
    for (const n of [a, b, c]) assert.ok((await rowState(page, n.agent.identity.peerId)).state !== null, `row of ${n.name}`)
    const gpuRow = await page.locator(`#nodes tr[data-peer="${c.agent.identity.peerId}"]`).innerText()
    assert.match(gpuRow, /gpu/)
    assert.equal(await page.locator('#live-text').innerText(), 'live')
    // The image view lists the version.
    await page.waitForSelector('#images [data-image="sample"] tr[data-version="1"]', { timeout: 20_000 })

    // A deploy on b, slowed by a's upload limit: the page shows its progress moving to done.
    const target = join(work, 'target-b')
    const deploying = b.agent.deploy('sample@1', { target })
    deploying.catch(() => {})
    const seen: number[] = []
    let sawApplying = false
    const bPeer = b.agent.identity.peerId
    await waitUntil('b done on the page', async () => {
      const r = await rowState(page, bPeer)
      if (r.state === 'applying') sawApplying = true
      for (const p of r.progress) if (seen[seen.length - 1] !== p) seen.push(p)
      return r.transfer.includes('done') && r.progress.includes(100)
    }, 90_000, 200)
    await deploying
    assert.ok(sawApplying, 'b was never shown applying')
    const partial = seen.filter(p => p > 0 && p < 100)
    assert.ok(partial.length >= 1, `no intermediate progress shown: ${seen.join(', ')}`)
    t.diagnostic(`progress shown on the page: ${seen.join(' → ')}`)
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i] >= seen[i - 1], `progress went back: ${seen.join(', ')}`)

    // After the deploy: b is idle again and runs sample@1; the chart drew the throughput.
    await page.waitForFunction((p) => (globalThis as unknown as { document: Doc }).document.querySelector(`#nodes tr[data-peer="${p}"]`)?.getAttribute('data-state') === 'idle', bPeer, { timeout: 20_000 })
    await page.waitForSelector('#images [data-image="sample"] tr[data-version="1"] .chip', { timeout: 20_000 })
    assert.ok(await page.locator('#chart #aggregate').count() === 1, 'no aggregate throughput line')

    // Let the rates settle so the screenshot shows the whole transfer on the chart.
    await page.waitForFunction(() => (globalThis as unknown as { document: { getElementById: (id: string) => { textContent: string | null } | null } }).document.getElementById('t-down')?.textContent === '0 B/s', undefined, { timeout: 15_000 }).catch(() => {})
    await mkdir(RESULTS, { recursive: true })
    await page.screenshot({ path: join(RESULTS, 'operator-dashboard.png'), fullPage: true })
    assert.deepEqual(errors, [], `page errors: ${errors.join('; ')}`)
  } finally {
    await context?.close().catch(() => {})
    context = null
    await rm(userDataDir, { recursive: true, force: true })
  }
  assert.ok(requests.length >= 2, 'no request recorded')
  const off = requests.filter(u => !u.startsWith('http://127.0.0.1:'))
  assert.deepEqual(off, [], `requests that left 127.0.0.1: ${off.join(' ')}`)
})

test('the dashboard is read-only unless actions are on, and actions need the token', { skip, timeout: 60_000 }, async () => {
  const d = await swarm.add('d', { operator: { dashboard: '127.0.0.1:0', dashboardActions: true, dashboardToken: 'a-test-token-of-some-length' } })
  const ro = swarm.get('a').surface.dashboard!.url
  const rw = d.surface.dashboard!.url
  const post = async (base: string, token?: string, body: unknown = { target: '/nonexistent-target' }): Promise<number> => {
    const r = await fetch(new URL('api/actions/rollback', base), { method: 'POST', headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) }, body: JSON.stringify(body) })
    await r.arrayBuffer()
    return r.status
  }
  assert.equal(await post(ro), 403)
  assert.equal(await post(ro, 'a-test-token-of-some-length'), 403)
  assert.equal(await post(rw), 401)
  assert.equal(await post(rw, 'wrong-token-wrong-token-xx'), 401)
  // Authorised: the action runs (and fails: nothing was deployed there).
  const code = await post(rw, 'a-test-token-of-some-length')
  assert.ok(code === 400 || code === 500, `authorised action answered ${code}`)
  // A foreign Host header (DNS rebinding) is refused.
  const u = new URL('api/state', rw)
  const status = await new Promise<number>((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, headers: { host: 'evil.example' } }, (res) => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('error', reject)
    req.end()
  })
  assert.equal(status, 421)
  // The page's policy allows nothing but this origin.
  const page = await fetch(rw)
  const csp = page.headers.get('content-security-policy') ?? ''
  await page.text()
  assert.match(csp, /default-src 'none'/)
  assert.match(csp, /connect-src 'self'/)
})
