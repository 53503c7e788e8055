/**
 * Hooks around an apply: executables in the image under /etc/imgmesh/hooks/pre-apply.d/ and
 * post-apply.d/, run in name order with the target as working directory (chrooted into it when
 * the target is a whole root and we are root). Output is logged; a hook that fails or outlives
 * its timeout is reported, and a failing pre-apply hook stops the apply.
 */
import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile, chmod, appendFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { BlockGetter } from '../store/block-store.ts'
import { nameKey, type DirNode } from '../tree/tree-loader.ts'
import { fileContent } from '../tree/file-content.ts'
import type { TreeEntry } from '../../protocols/tree.ts'
import { ImgmeshError } from '../errors.ts'
import { createLogger } from '../logger.ts'

const log = createLogger('hooks')
export const HOOK_DIR = ['etc', 'imgmesh', 'hooks']
export type HookStage = 'pre-apply' | 'post-apply'

export interface HookResult { name: string, stage: HookStage, code: number | null, timedOut: boolean, output: string, seconds: number }

function findDir (tree: DirNode, parts: string[]): DirNode | null {
  let node: DirNode | undefined = tree
  for (const p of parts) {
    node = node?.children.get(nameKey(Buffer.from(p)))
    if (node === undefined) return null
  }
  return node ?? null
}

/** The hook files of a stage in a version's tree, in name order. */
export function hooksIn (tree: DirNode, stage: HookStage): TreeEntry[] {
  const dir = findDir(tree, [...HOOK_DIR, `${stage}.d`])
  if (dir === null) return []
  return dir.entries.filter(e => e.type === 'file' && (e.mode & 0o111) !== 0)
}

export interface RunHooksOptions {
  target: string
  stage: HookStage
  env: Record<string, string>
  timeoutMs: number
  logFile: string
  /**
   * Where pre-apply hooks are written to run (a directory of the agent's own, in its data
   * directory; each run takes a fresh subdirectory and removes it after). An agent that dies
   * while a hook runs leaves its subdirectory behind: `clearHookStaging` removes them at start.
   */
  stagingDir: string
}

/** Removes what pre-apply runs of an agent that died left in its staging directory. */
export async function clearHookStaging (stagingDir: string): Promise<void> {
  await rm(stagingDir, { recursive: true, force: true })
}

/**
 * Runs the hooks of a stage. Pre-apply hooks come from the new version (written to a temporary
 * directory, the target still holds the old one); post-apply hooks from the target itself.
 * Throws EHOOK-like ImgmeshError (code ETARGET) naming the first failing hook.
 */
export async function runHooks (tree: DirNode, blocks: BlockGetter, opts: RunHooksOptions): Promise<HookResult[]> {
  const hooks = hooksIn(tree, opts.stage)
  if (hooks.length === 0) return []
  const results: HookResult[] = []
  const chroot = opts.target !== '/' && process.getuid?.() === 0 && existsSync(join(opts.target, 'bin/sh'))
  // Pre-apply hooks come from the new version: read them all before writing any, so nothing is
  // left on disk while a block is still being read.
  const bytes = opts.stage === 'pre-apply' ? await Promise.all(hooks.map(async h => await fileContent(blocks, h))) : []
  let staging: string | null = null
  if (opts.stage === 'pre-apply') {
    await mkdir(opts.stagingDir, { recursive: true, mode: 0o700 })
    staging = await mkdtemp(join(opts.stagingDir, 'pre-apply-'))
  }
  try {
    for (const [k, hook] of hooks.entries()) {
      const name = Buffer.from(hook.name).toString()
      let cmd: string
      let args: string[] = []
      if (staging !== null) {
        const file = join(staging, name)
        await writeFile(file, bytes[k])
        await chmod(file, 0o755)
        cmd = file
      } else if (chroot) {
        cmd = 'chroot'
        args = [opts.target, '/' + [...HOOK_DIR, `${opts.stage}.d`, name].join('/')]
      } else {
        cmd = join(opts.target, ...HOOK_DIR, `${opts.stage}.d`, name)
      }
      const r = await runOne(cmd, args, opts, name)
      results.push(r)
      await appendFile(opts.logFile, `[${new Date().toISOString()}] ${opts.stage} ${name} exit=${String(r.code)}${r.timedOut ? ' (timed out)' : ''}\n${r.output}`).catch(() => {})
      log.info('hook ran', { stage: opts.stage, hook: name, code: r.code, timedOut: r.timedOut })
      if (r.timedOut) throw new ImgmeshError('ETIMEOUT', `${opts.stage} hook ${name} did not finish within ${opts.timeoutMs / 1000}s`)
      if (r.code !== 0) throw new ImgmeshError('ETARGET', `${opts.stage} hook ${name} failed (exit ${String(r.code)}): ${r.output.trim().split('\n').slice(-1)[0] ?? ''}`)
    }
  } finally {
    if (staging !== null) await rm(staging, { recursive: true, force: true })
  }
  return results
}

async function runOne (cmd: string, args: string[], opts: RunHooksOptions, name: string): Promise<HookResult> {
  const started = Date.now()
  return await new Promise<HookResult>((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.target, env: { ...process.env, ...opts.env, IMGMESH_HOOK_STAGE: opts.stage }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let output = ''
    const add = (d: Buffer): void => { if (output.length < 64 * 1024) output += d.toString() }
    child.stdout.on('data', add)
    child.stderr.on('data', add)
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      // The hook and everything it started: its process group.
      try { process.kill(-child.pid!, 'SIGKILL') } catch { child.kill('SIGKILL') }
    }, opts.timeoutMs)
    child.on('error', (err) => { clearTimeout(timer); resolve({ name, stage: opts.stage, code: 127, timedOut, output: output + err.message, seconds: (Date.now() - started) / 1000 }) })
    child.on('close', (code) => { clearTimeout(timer); resolve({ name, stage: opts.stage, code, timedOut, output, seconds: (Date.now() - started) / 1000 }) })
  })
}
