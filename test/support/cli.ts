/** Runs the imgmesh CLI as a separate process, the way admins and scripts do. */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const CLI = fileURLToPath(new URL('../../cli/imgmesh.ts', import.meta.url))

export interface CliResult { code: number, stdout: string, stderr: string }

export async function imgmesh (args: string[], opts: { env?: Record<string, string>, timeoutMs?: number } = {}): Promise<CliResult> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`imgmesh ${args.join(' ')} timed out`)) }, opts.timeoutMs ?? 300_000)
    child.on('error', reject)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }) })
  })
}

export async function imgmeshJson<T> (args: string[], opts?: { env?: Record<string, string> }): Promise<T> {
  const r = await imgmesh([...args, '--json'], opts)
  if (r.code !== 0) throw new Error(`imgmesh ${args.join(' ')} failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}
