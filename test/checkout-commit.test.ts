/** Live customisation: checkout a version, edit it, commit it back; only changed files are rehashed. */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'

const work = await mkdtemp(join(tmpdir(), 'imgmesh-co-'))
after(async () => { await rm(work, { recursive: true, force: true }) })

interface CommitJson { version: number, created: boolean, base: number, files: number, hashedFiles: number, newBytes: number }

test('checkout, edit, commit: the next version, based on the checkout, rehashing only what changed', async () => {
  const src = join(work, 'src')
  const data = join(work, 'data')
  const edit = join(work, 'edit')
  await makeSampleTree(src, { bytes: 4 * 1024 * 1024, seed: 9 })
  await imgmeshJson(['capture', src, '--image', 'img', '--no-default-excludes', '--data-dir', data])
  const co = await imgmeshJson<{ version: number, files: number }>(['checkout', 'img@1', edit, '--data-dir', data])
  assert.equal(co.version, 1)
  // Meanwhile someone captures version 2 from the golden tree.
  await writeFile(join(src, 'etc/motd'), 'v2 from the golden tree\n')
  await imgmeshJson(['capture', src, '--image', 'img', '--no-default-excludes', '--data-dir', data])
  // Edit the checkout and commit it.
  await writeFile(join(edit, 'etc/edited-in-chroot'), 'custom\n')
  await writeFile(join(edit, 'usr/lib/data/file-002.dat'), 'replaced content\n')
  const c = await imgmeshJson<CommitJson>(['commit', edit, '--image', 'img', '-m', 'edited', '--data-dir', data])
  assert.equal(c.created, true)
  assert.equal(c.version, 3)
  assert.equal(c.base, 1)
  assert.ok(c.hashedFiles <= 2, `rehashed ${c.hashedFiles} of ${c.files} files`)
  const show = await imgmeshJson<{ parents: string[] }>(['show', 'img@3', '--data-dir', data])
  const v1 = await imgmeshJson<{ cid: string }>(['show', 'img@1', '--data-dir', data])
  assert.deepEqual(show.parents, [v1.cid])
  const diff = await imgmeshJson<{ added: Array<{ path: string }>, changed: Array<{ path: string }> }>(['diff', 'img@1', 'img@3', '--data-dir', data])
  assert.deepEqual(diff.added.map(p => p.path), ['/etc/edited-in-chroot'])
  assert.ok(diff.changed.some(p => p.path === '/usr/lib/data/file-002.dat'))
  // The next commit builds on the one just made.
  await writeFile(join(edit, 'etc/edited-in-chroot'), 'custom, second edit\n')
  const c2 = await imgmeshJson<CommitJson>(['commit', edit, '--image', 'img', '--data-dir', data])
  assert.equal(c2.base, 3)
  assert.equal(c2.version, 4)
  assert.ok(c2.hashedFiles <= 1)
  const same = await imgmeshJson<CommitJson>(['commit', edit, '--image', 'img', '--data-dir', data])
  assert.equal(same.created, false)
  // Not a checkout: a clear error.
  const bad = await imgmesh(['commit', src, '--image', 'img', '--data-dir', data])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /not a checkout/)
})
