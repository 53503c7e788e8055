/** Capture → deploy → independent comparison, on a synthetic tree with every file type and on a real Debian root. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, mkdir, lstat } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'
import { rsyncDifferences, allocatedBytes } from './support/tree-check.ts'
import { debianRoot, isRoot, ensureTool } from './support/debian-root.ts'
import { nativeFs } from '../node/native/fsx.ts'

let work: string
before(async () => { work = await mkdtemp(join(tmpdir(), 'imgmesh-rt-')) })
after(async () => { await rm(work, { recursive: true, force: true }) })

interface CaptureJson { image: string, version: number, cid: string, files: number, bytes: number, newBytes: number, created: boolean, hashedFiles: number }
interface DeployJson { created: number, updated: number, attributes: number, deleted: number, linked: number, mode: string, changes: Array<{ kind: string, path: string }> }

test('synthetic tree with every entry type round-trips exactly', async () => {
  const src = join(work, 'synthetic')
  const data = join(work, 'data-syn')
  const dst = join(work, 'target-syn')
  await makeSampleTree(src, { bytes: 4 * 1024 * 1024 })
  if (isRoot() && ensureTool('setfacl', 'acl')) {
    assert.equal(spawnSync('setfacl', ['-m', 'u:1234:rw-', join(src, 'etc/motd')]).status, 0)
    assert.equal(spawnSync('setfacl', ['-d', '-m', 'g:5:r-x', join(src, 'var')]).status, 0)
  }
  const cap = await imgmeshJson<CaptureJson>(['capture', src, '--image', 'syn', '--no-default-excludes', '--data-dir', data])
  assert.equal(cap.version, 1)
  assert.ok(cap.files > 50)
  const dep = await imgmeshJson<DeployJson>(['deploy', 'syn', dst, '--data-dir', data])
  assert.ok(dep.created > 50)
  assert.deepEqual(rsyncDifferences(src, dst), [])
  // Sparse stays sparse: 8 MiB apparent, a few KiB allocated.
  assert.equal((await lstat(join(dst, 'var/sparse.img'))).size, 8 * 1024 * 1024)
  assert.ok(allocatedBytes(join(dst, 'var/sparse.img')) <= 64 * 1024, `sparse file allocated ${allocatedBytes(join(dst, 'var/sparse.img'))} bytes`)
  // Hard links kept as links.
  assert.equal((await lstat(join(dst, 'usr/bin/tool'))).ino, (await lstat(join(dst, 'usr/bin/tool-hardlink'))).ino)
  // Nanosecond mtime.
  const st = await lstat(join(dst, 'etc/hostname'), { bigint: true })
  assert.equal(st.mtimeNs, 1_600_000_000_123_456_789n)
  // xattrs, including security.capability as root.
  const x = new Map(nativeFs.getXattrs(Buffer.from(join(dst, 'usr/bin/tool'))))
  assert.equal(x.get('user.comment')?.toString(), 'an extended attribute')
  if (isRoot()) assert.ok(x.has('security.capability'))
  const v = await imgmesh(['verify', dst, '--data-dir', data])
  assert.equal(v.code, 0, v.stdout + v.stderr)
  // Deploying the same version again is a repair: it compares the disk and finds nothing to do.
  const again = await imgmeshJson<DeployJson>(['deploy', 'syn', dst, '--data-dir', data])
  assert.equal(again.mode, 'scan')
  assert.equal(again.changes.length, 0)
})

test('second capture of an unchanged tree stores nothing and rehashes nothing', async () => {
  const src = join(work, 'synthetic')
  const data = join(work, 'data-syn')
  const cap = await imgmeshJson<CaptureJson>(['capture', src, '--image', 'syn', '--no-default-excludes', '--data-dir', data])
  assert.equal(cap.created, false)
  assert.equal(cap.version, 1)
  assert.equal(cap.newBytes, 0)
  assert.equal(cap.hashedFiles, 0)
})

test('verify reports tampering', async () => {
  const src = join(work, 'synthetic')
  const data = join(work, 'data-syn')
  const dst = join(work, 'target-syn')
  await writeFile(join(dst, 'etc/motd'), 'tampered\n')
  await writeFile(join(dst, 'etc/extra-file'), 'extra\n')
  const v = await imgmesh(['verify', dst, '--data-dir', data, '--json'])
  assert.equal(v.code, 1)
  const r = JSON.parse(v.stdout) as { differences: Array<{ path: string, what: string }> }
  const paths = r.differences.map(d => `${d.what} ${d.path}`)
  assert.ok(paths.some(p => p.startsWith('extra /etc/extra-file')), paths.join('\n'))
  assert.ok(paths.some(p => p.includes('/etc/motd')), paths.join('\n'))
  // Deploy repairs it (scan of metadata finds the changed size/mtime).
  await mkdir(join(dst, 'var/new-dir'), { recursive: true })
  assert.notDeepEqual(rsyncDifferences(src, dst), [])
})

test('real Debian root (debootstrap minbase) round-trips exactly', { timeout: 600_000 }, async (t) => {
  const deb = debianRoot()
  if (deb === null) { t.skip('needs root and debootstrap'); return }
  const data = join(work, 'data-deb')
  const dst = join(work, 'target-deb')
  const cap = await imgmeshJson<CaptureJson>(['capture', deb, '--image', 'debian12', '--no-default-excludes', '--data-dir', data])
  assert.ok(cap.files > 3000, `only ${cap.files} files`)
  await imgmeshJson<DeployJson>(['deploy', 'debian12', dst, '--data-dir', data])
  assert.deepEqual(rsyncDifferences(deb, dst), [])
  const v = await imgmesh(['verify', dst, '--data-dir', data])
  assert.equal(v.code, 0, v.stdout.slice(0, 2000))
})
