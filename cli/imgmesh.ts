#!/usr/bin/env node
/** The imgmesh command line. Thin: every command calls into node/ (or a running agent). */
import yargs, { type Argv } from 'yargs'
import { hideBin } from 'yargs/helpers'
import { ImgmeshError } from '../node/errors.ts'
import { reconfigureLogging } from '../node/logger.ts'
import { DEFAULT_DATA_DIR } from '../node/image/image-store.ts'
import { imageCommands } from './commands/image.ts'
import { targetCommands } from './commands/target.ts'
import { demoCommand } from './commands/demo.ts'
import { swarmCommands } from './commands/swarm.ts'
import { serviceCommands } from './commands/service.ts'

export interface GlobalArgs { dataDir: string, json: boolean, verbose: boolean }

function build (argv: string[]): Argv<GlobalArgs> {
  let y: Argv<GlobalArgs> = yargs(argv)
    .scriptName('imgmesh')
    .usage('$0 <command> [options]\n\nCapture Linux trees as versioned images and deploy them exactly.')
    .option('data-dir', { type: 'string', default: process.env.IMGMESH_DATA_DIR ?? DEFAULT_DATA_DIR, describe: 'where blocks, refs and keys live (env IMGMESH_DATA_DIR)', global: true })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable output', global: true })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'log what happens', global: true })
    .middleware((a) => {
      if (a.verbose && process.env.IMGMESH_LOG === undefined) { process.env.IMGMESH_LOG = 'info'; reconfigureLogging() }
    }) as unknown as Argv<GlobalArgs>
  y = imageCommands(y)
  y = targetCommands(y)
  y = swarmCommands(y)
  y = serviceCommands(y)
  y = demoCommand(y)
  return y
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .completion('completion', 'print a shell completion script')
    .help()
    .alias('help', 'h')
    .version()
    .wrap(Math.min(120, process.stdout.columns ?? 100))
    .exitProcess(false)
    .fail((msg, err) => { throw err ?? new ImgmeshError('EBADARG', msg) })
}

export async function main (argv: string[]): Promise<number> {
  try {
    await build(argv).parseAsync()
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    const code = err instanceof ImgmeshError ? err.code : (err as { code?: string }).code
    const message = err instanceof Error ? err.message : String(err)
    process.stderr.write(`imgmesh: ${message.split('\n')[0]}${code !== undefined && !message.includes(code) ? ` (${code})` : ''}\n`)
    return code === 'EBADARG' ? 2 : 1
  }
}

process.exitCode = await main(hideBin(process.argv))
