/**
 * Smoke run of the network testbed (simulations/testbed): 3 clients, a 4 MiB tree with every
 * common entry type, 100 Mbit/s links, rsync and multicast. Every copy must verify, and nothing
 * of the run (namespaces, cgroups, scratch directory) may remain afterwards, also after Ctrl-C.
 * Needs root (network namespaces); skips otherwise.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, symlinkSync, linkSync, chownSync, chmodSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const REPO = resolve(import.meta.dirname, '..')
const RUN = join(REPO, 'simulations', 'testbed', 'run.ts')
const isRoot = process.getuid?.() === 0
const missing = ['ip', 'tc', 'rsync', 'udp-sender', 'udp-receiver', 'tar', 'ss']
  .filter(t => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0)
const skip = !isRoot ? 'needs root (network namespaces, veth, tc)' : missing.length > 0 ? `missing tools: ${missing.join(', ')}` : false

let work: string

/** About 4 MiB: regular files, an empty file, hard links, symlinks, a fifo, owners, modes, setuid, odd names. */
function makeTree (dir: string): void {
  mkdirSync(join(dir, 'usr', 'bin'), { recursive: true })
  mkdirSync(join(dir, 'usr', 'lib', 'deep', 'er'), { recursive: true })
  mkdirSync(join(dir, 'etc'), { recursive: true })
  for (let i = 0; i < 30; i++) writeFileSync(join(dir, 'usr', 'lib', `f${i}.so`), randomBytes(100_000 + i * 1000))
  writeFileSync(join(dir, 'usr', 'lib', 'deep', 'er', 'big.bin'), randomBytes(700_000))
  writeFileSync(join(dir, 'usr', 'bin', 'tool'), randomBytes(20_000))
  chmodSync(join(dir, 'usr', 'bin', 'tool'), 0o4755)
  linkSync(join(dir, 'usr', 'bin', 'tool'), join(dir, 'usr', 'bin', 'tool-hardlink'))
  symlinkSync('tool', join(dir, 'usr', 'bin', 'tool-link'))
  symlinkSync('/nonexistent/target', join(dir, 'usr', 'bin', 'dangling'))
  writeFileSync(join(dir, 'etc', 'empty'), '')
  writeFileSync(join(dir, 'etc', 'owned by 1234'), 'x\n')
  chownSync(join(dir, 'etc', 'owned by 1234'), 1234, 4321)
  writeFileSync(join(dir, 'etc', 'ünïcødé'), 'y\n')
  mkdirSync(join(dir, 'etc', 'private'), { mode: 0o700 })
  writeFileSync(join(dir, 'etc', 'private', 'secret'), 'z\n', { mode: 0o600 })
  spawnSync('mkfifo', [join(dir, 'etc', 'fifo')])
}

function namespaces (prefix: string): string[] {
  const out = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout
  return out.split('\n').map(l => l.split(' ')[0]).filter(n => n.startsWith(prefix))
}

function cgroups (prefix: string): string[] {
  const out: string[] = []
  for (const root of ['/sys/fs/cgroup/cpuacct', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    try { out.push(...readdirSync(root).filter(n => n.startsWith(prefix))) } catch { /* not there */ }
  }
  return out
}

function runTestbed (args: string[], onStderr?: (text: string, child: ReturnType<typeof spawn>) => void): Promise<{ code: number | null, signal: string | null, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    const child = spawn(process.execPath, [RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; onStderr?.(stderr, child) })
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }) })
  })
}

before(() => {
  if (skip !== false) return
  work = mkdtempSync(join(tmpdir(), 'imgmesh-testbed-'))
  makeTree(join(work, 'tree'))
})
after(() => { if (work !== undefined) rmSync(work, { recursive: true, force: true }) })

interface Row { transport: string, status: string, verified: number, finished: number, tS: number | null, tMinS: number, clients: Array<{ verified: boolean }> }

test('testbed smoke: 3 clients, 4 MiB, rsync and multicast; every copy verifies; nothing left behind', { skip, timeout: 100_000 }, async () => {
  const prefix = `imtsmoke${process.pid}-`
  const out = join(work, 'out')
  const r = await runTestbed(['--clients', '3', '--image', join(work, 'tree'), '--image-mb', '4', '--rate', '100mbit',
    '--transports', 'rsync,multicast', '--timeout', '80', '--out', out, '--work', join(work, 'scratch'), '--prefix', prefix])
  assert.equal(r.code, 0, `exit ${String(r.code)} ${String(r.signal)}\n${r.stderr}`)
  const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { rows: Row[], image: { bytes: number, files: number } }
  assert.ok(res.image.bytes > 3_500_000 && res.image.bytes <= 4 * 1048576, `image bytes ${res.image.bytes}`)
  assert.deepEqual(res.rows.map(x => x.transport), ['rsync', 'multicast'])
  for (const row of res.rows) {
    assert.equal(row.status, 'ok', JSON.stringify(row))
    assert.equal(row.verified, 3)
    assert.equal(row.clients.length, 3)
    assert.ok(row.clients.every(c => c.verified))
    assert.ok(row.tS !== null && row.tS >= row.tMinS * 0.9, `T ${String(row.tS)} vs T_min ${row.tMinS}`)
  }
  for (const f of ['summary.csv', 'clients.csv', 'rates.csv', 'summary.md', 'rate-N3-rsync.svg', 'rate-N3-multicast.svg', 'aggregate-N3.svg', 'deploy-vs-n.svg']) {
    assert.ok(existsSync(join(out, f)), `${f} written`)
  }
  assert.match(r.stdout, /rsync\s+ok\s+3\/3/)
  assert.deepEqual(namespaces(prefix), [], 'no namespace of the run remains')
  assert.deepEqual(cgroups(prefix), [], 'no cgroup of the run remains')
  assert.deepEqual(readdirSync(join(work, 'scratch')), [], 'scratch directory removed')
})

test('testbed: Ctrl-C in the middle of a run removes every namespace and process', { skip, timeout: 60_000 }, async () => {
  const prefix = `imtsigint${process.pid}-`
  let sent = false
  const r = await runTestbed(['--clients', '2', '--image', join(work, 'tree'), '--image-mb', '4', '--rate', '10mbit',
    '--transports', 'rsync', '--timeout', '50', '--out', join(work, 'out-sigint'), '--work', join(work, 'scratch2'), '--prefix', prefix],
  (text, child) => {
    if (!sent && /rsync: start/.test(text)) { sent = true; setTimeout(() => child.kill('SIGINT'), 1500) }
  })
  assert.ok(sent, r.stderr)
  assert.equal(r.code, 130, r.stderr)
  assert.match(r.stderr, /cleaning up \(SIGINT\)/)
  assert.deepEqual(namespaces(prefix), [])
  assert.deepEqual(cgroups(prefix), [])
  assert.deepEqual(readdirSync(join(work, 'scratch2')), [])
  // every process of the run has the run's scratch directory (named after the prefix) in its arguments
  const tag = prefix.replace(/-$/, '')
  const stray = spawnSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).stdout.split('\n').filter(l => l.includes(tag))
  assert.deepEqual(stray, [], 'no process of the run remains')
})
