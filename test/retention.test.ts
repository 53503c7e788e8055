/** Retention: gc --keep K drops old versions but never a deployed one, and removes only unreferenced blocks. */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSampleTree } from '../node/demo/sample-tree.ts'
import { imgmesh, imgmeshJson } from './support/cli.ts'

const work = await mkdtemp(join(tmpdir(), 'imgmesh-ret-'))
after(async () => { await rm(work, { recursive: true, force: true }) })

function du (path: string): number { return Number(spawnSync('du', ['-sb', path], { encoding: 'utf8' }).stdout.split('\t')[0]) }

test('gc --keep 1 keeps the newest and the deployed version, drops the rest and their blocks', async () => {
  const src = join(work, 'src')
  const data = join(work, 'data')
  await makeSampleTree(src, { bytes: 2 * 1024 * 1024, seed: 5 })
  for (let v = 1; v <= 4; v++) {
    await writeFile(join(src, `usr/lib/data/only-in-v${v}.bin`), Buffer.alloc(300_000, v))
    if (v > 1) await rm(join(src, `usr/lib/data/only-in-v${v - 1}.bin`))
    await imgmeshJson(['capture', src, '--image', 'app', '--no-default-excludes', '--data-dir', data])
  }
  await imgmeshJson(['deploy', 'app@2', join(work, 'target'), '--data-dir', data])
  const before = du(join(data, 'blocks'))
  const r = await imgmeshJson<{ versionsRemoved: Array<{ number: number }>, removed: number }>(['gc', '--keep', '1', '--data-dir', data])
  assert.deepEqual(r.versionsRemoved.map(v => v.number).sort(), [1, 3])
  assert.ok(r.removed > 0)
  assert.ok(du(join(data, 'blocks')) < before)
  const log = await imgmeshJson<Array<{ version: number }>>(['log', 'app', '--data-dir', data])
  assert.deepEqual(log.map(v => v.version), [4, 2])
  const v = await imgmesh(['verify', join(work, 'target'), '--data-dir', data])
  assert.equal(v.code, 0, v.stdout)
  const d = await imgmesh(['deploy', 'app@4', join(work, 'target'), '--data-dir', data])
  assert.equal(d.code, 0, d.stderr)
  const bad = await imgmesh(['gc', '--keep', '0', '--data-dir', data])
  assert.notEqual(bad.code, 0)
})
