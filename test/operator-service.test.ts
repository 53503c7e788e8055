/**
 * Service install and doctor: the systemd unit and the sample config written to a temporary
 * directory (and --print writing nothing), the config file's syntax and precedence under
 * IMGMESH_* variables and flags, and doctor's verdicts on broken and healthy data dirs, with a
 * running agent and a peer (clock offset through the operator socket).
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, readFile, writeFile, chmod, mkdir } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import yargs from 'yargs'
import { agentOperatorOptions } from '../cli/commands/service.ts'
import { AGENT_CONFIG_KEYS, parseAgentConfig, sampleAgentConfig, agentConfigFromEnv } from '../node/operator/agent-config.ts'
import { runDoctor, formatChecks, nodeVersionCheck, type Check } from '../node/operator/doctor.ts'
import { ImageStore } from '../node/image/image-store.ts'
import { initNode } from '../node/agent/node-identity.ts'
import { ImgmeshError } from '../node/errors.ts'
import { OperatorSwarm, waitUntil } from './operator-swarm.ts'

const work = await mkdtemp(join(tmpdir(), 'imgmesh-service-'))
after(async () => { await rm(work, { recursive: true, force: true }) })

const SERVICE = new URL('../cli/commands/service.ts', import.meta.url).href
const ERRORS = new URL('../node/errors.ts', import.meta.url).href
/**
 * Runs the service commands as a separate process, registered the way cli/imgmesh.ts registers
 * its command groups (global --data-dir/--json/--verbose, strict); returns stdout and the exit code.
 */
const DRIVER = `
import yargs from 'yargs'
import { serviceCommands } from '${SERVICE}'
import { ImgmeshError } from '${ERRORS}'
try {
  const y = yargs(process.argv.slice(1)).option('data-dir', { type: 'string', default: '/nonexistent' }).option('json', { type: 'boolean', default: false }).option('verbose', { type: 'boolean', default: false })
  await serviceCommands(y).strict().exitProcess(false).fail((msg, err) => { throw err ?? new ImgmeshError('EBADARG', msg) }).parseAsync()
} catch (err) { process.stderr.write('imgmesh: ' + err.message + '\\n'); process.exitCode = 2 }
`
async function cli (args: string[]): Promise<{ stdout: string, code: number }> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', DRIVER, '--', ...args], { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      if (code === 2) reject(new Error(stderr))
      else resolve({ stdout, code: code ?? -1 })
    })
  })
}

test('install-service writes the unit and the sample config; --print writes nothing', async () => {
  const units = join(work, 'units')
  const config = join(work, 'etc', 'agent.yaml')
  const printed = await cli(['install-service', '--print', '--unit-dir', units, '--config', config])
  assert.match(printed.stdout, /^\[Service\]$/m)
  assert.match(printed.stdout, new RegExp(`^ExecStart=\\S+node\\S* \\S+/cli/imgmesh\\.ts agent --config ${config.replaceAll('/', '\\/')}$`, 'm'))
  assert.match(printed.stdout, /^WantedBy=multi-user.target$/m)
  assert.equal(existsSync(units), false, '--print wrote something')

  const r = await cli(['install-service', '--unit-dir', units, '--config', config, '--json'])
  const res = JSON.parse(r.stdout) as { unit: string, configWritten: boolean }
  assert.equal(res.unit, join(units, 'imgmesh-agent.service'))
  assert.equal(res.configWritten, true)
  const unit = await readFile(res.unit, 'utf8')
  assert.equal(unit, printed.stdout)
  // The sample parses, and documents every option with its flag and variable.
  const sample = await readFile(config, 'utf8')
  const parsed = parseAgentConfig(sample, config)
  assert.deepEqual(Object.keys(parsed).sort(), AGENT_CONFIG_KEYS.filter(k => k.set === true).map(k => k.key).sort())
  for (const k of AGENT_CONFIG_KEYS) {
    assert.ok(sample.includes(`flag --${k.key}, environment ${k.env}`), k.key)
    assert.match(sample, new RegExp(`^(# )?${k.key}: `, 'm'))
  }
  // An existing config is kept, unless --force.
  await writeFile(config, 'upload-limit: 1M\n')
  const again = JSON.parse((await cli(['install-service', '--unit-dir', units, '--config', config, '--json'])).stdout) as { configWritten: boolean }
  assert.equal(again.configWritten, false)
  assert.equal(await readFile(config, 'utf8'), 'upload-limit: 1M\n')
  await cli(['install-service', '--unit-dir', units, '--config', config, '--force'])
  assert.equal(await readFile(config, 'utf8'), sampleAgentConfig())
  assert.equal((await cli(['install-service', '--print-config'])).stdout, sampleAgentConfig())
})

test('the config file: YAML subset, clear errors with line numbers', () => {
  const c = parseAgentConfig([
    '# comment',
    'listen: [/ip4/0.0.0.0/tcp/4001, /ip6/::/tcp/4001]',
    'bootstrap:',
    '  - /ip4/10.0.0.1/tcp/4001/p2p/12D3KooWabc   # first',
    '  - "/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWdef"',
    'mdns: no',
    'upload_limit: 50M',
    'status-interval: 2.5',
    'group: lab1',
    'dashboard: \'127.0.0.1:8080\'',
    ''
  ].join('\n'))
  assert.deepEqual(c, {
    listen: ['/ip4/0.0.0.0/tcp/4001', '/ip6/::/tcp/4001'],
    bootstrap: ['/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWabc', '/ip4/10.0.0.2/tcp/4001/p2p/12D3KooWdef'],
    mdns: false,
    'upload-limit': '50M',
    'status-interval': 2.5,
    group: ['lab1'],
    dashboard: '127.0.0.1:8080'
  })
  const bad = (text: string, re: RegExp): void => { assert.throws(() => parseAgentConfig(text, 'x.yaml'), (e: unknown) => e instanceof ImgmeshError && re.test(e.message)) }
  bad('uplod-limit: 5M', /x\.yaml:1: unknown option uplod-limit/)
  bad('mdns: maybe', /x\.yaml:1: mdns takes true or false/)
  bad('listen: [a\n', /x\.yaml:1: unterminated/)
  bad('# c\n  - a', /x\.yaml:2: a list item outside a list/)
  bad('mdns: true\nmdns: false', /x\.yaml:2: mdns given twice/)
  bad('status-interval: soon', /takes a number/)
  bad('target:', /target needs a value/)
  assert.deepEqual(agentConfigFromEnv({ IMGMESH_LISTEN: '/ip4/1.2.3.4/tcp/1, /ip4/1.2.3.4/tcp/2', IMGMESH_MDNS: 'off', IMGMESH_STATUS_INTERVAL: '3' }), { listen: ['/ip4/1.2.3.4/tcp/1', '/ip4/1.2.3.4/tcp/2'], mdns: false, 'status-interval': 3 })
  assert.throws(() => agentConfigFromEnv({ IMGMESH_MDNS: 'perhaps' }), ImgmeshError)
})

test('precedence: flag, then IMGMESH_* variable, then the file, then the default', async () => {
  const file = join(work, 'prec.yaml')
  await writeFile(file, 'upload-limit: 1M\nlisten: [/ip4/127.0.0.1/tcp/1]\nmdns: false\ngroup: [from-file]\nstatus-interval: 9\ndashboard: 127.0.0.1:1\n')
  const saved = { ...process.env }
  process.env.IMGMESH_LISTEN = '/ip4/127.0.0.1/tcp/2'
  process.env.IMGMESH_STATUS_INTERVAL = '7'
  try {
    let seen: Record<string, unknown> = {}
    await agentOperatorOptions(yargs(['agent', '--config', file, '--upload-limit', '9M', '--status-interval', '3']).command('agent', 'x', (c) => agentOperatorOptions(c
      .option('listen', { type: 'string', array: true, default: ['/ip4/0.0.0.0/tcp/4001'] })
      .option('mdns', { type: 'boolean', default: true })
      .option('upload-limit', { type: 'string' })
      .option('group', { type: 'string', array: true })), (a) => { seen = a })).strict().exitProcess(false).parseAsync()
    assert.equal(seen.uploadLimit, '9M') // flag over file
    assert.equal(seen.statusInterval, 3) // flag over variable over file
    assert.deepEqual(seen.listen, ['/ip4/127.0.0.1/tcp/2']) // variable over file over default
    assert.equal(seen.mdns, false) // file over default
    assert.deepEqual(seen.group, ['from-file'])
    assert.equal(seen.dashboard, '127.0.0.1:1')
    assert.equal(seen.dashboardActions, false) // default
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) Reflect.deleteProperty(process.env, k)
    Object.assign(process.env, saved)
  }
})

const find = (checks: Check[], name: string): Check => {
  const c = checks.find(x => x.check === name)
  assert.ok(c !== undefined, `no check ${name}: ${formatChecks(checks).join('\n')}`)
  return c
}

test('doctor: a missing or unsafe data dir fails with the fix; Node version verdicts', async () => {
  assert.equal(nodeVersionCheck('20.20.2').status, 'fail')
  assert.equal(nodeVersionCheck('22.4.0').status, 'warn')
  assert.equal(nodeVersionCheck('22.23.3').status, 'ok')
  assert.equal(nodeVersionCheck('24.1.0').status, 'ok')

  const missing = join(work, 'missing')
  const r = await cli(['doctor', '--data-dir', missing, '--min-free', '0'])
  assert.equal(r.code, 1)
  assert.match(r.stdout, /FAIL {2}data dir +.*does not exist/)
  assert.match(r.stdout, /→ imgmesh init --data-dir/)

  const dir = join(work, 'node-x')
  await mkdir(dir, { recursive: true })
  await initNode(await ImageStore.open(dir))
  let checks = await runDoctor({ dataDir: dir, minFreeBytes: 0, checkPathNode: false })
  assert.equal(find(checks, 'data dir').status, 'ok')
  assert.equal(find(checks, 'cluster key').status, 'ok')
  assert.equal(find(checks, 'peer.key').status, 'ok')
  assert.equal(find(checks, 'trusted publishers').status, 'ok')
  assert.equal(find(checks, 'agent').status, 'warn')
  assert.equal(find(checks, 'disk').status, 'ok')
  assert.ok(!checks.some(c => c.status === 'fail'), formatChecks(checks).join('\n'))

  await chmod(join(dir, 'peer.key'), 0o644)
  await chmod(dir, 0o777)
  checks = await runDoctor({ dataDir: dir, minFreeBytes: 0, checkPathNode: false })
  assert.equal(find(checks, 'peer.key').status, 'fail')
  assert.match(find(checks, 'peer.key').fix ?? '', /chmod 600/)
  assert.equal(find(checks, 'data dir').status, 'fail')
  assert.match(find(checks, 'data dir').fix ?? '', /chmod go-w/)
  checks = await runDoctor({ dataDir: dir, minFreeBytes: Number.MAX_SAFE_INTEGER, checkPathNode: false })
  assert.equal(find(checks, 'disk').status, 'fail')
  await chmod(dir, 0o755)
  await chmod(join(dir, 'peer.key'), 0o600)

  // A config file with a typo fails with its line.
  await writeFile(join(work, 'typo.yaml'), 'listen: [/ip4/0.0.0.0/tcp/4001]\nboostrap: [x]\n')
  checks = await runDoctor({ dataDir: dir, config: join(work, 'typo.yaml'), minFreeBytes: 0, checkPathNode: false })
  assert.match(find(checks, 'config').detail, /typo\.yaml:2: unknown option boostrap/)
})

test('doctor with a running agent: peers and clock offsets through the agent', { timeout: 60_000 }, async () => {
  const swarm = new OperatorSwarm(join(work, 'swarm'))
  try {
    const conf = join(work, 'running.yaml')
    await writeFile(conf, 'mdns: false\n')
    const a = await swarm.add('a', { operator: { statusIntervalMs: 500, configFile: conf } })
    const b = await swarm.add('b', { operator: { statusIntervalMs: 500 } })
    await waitUntil('a hears b', () => a.surface.gossip.nodes().length === 2)
    const checks = await runDoctor({ dataDir: a.agent.store.dataDir, minFreeBytes: 0, checkPathNode: false })
    assert.equal(find(checks, 'agent').status, 'ok')
    assert.match(find(checks, 'peers').detail, /^1 connected/)
    assert.equal(find(checks, 'clock').status, 'ok', formatChecks(checks).join('\n'))
    assert.match(find(checks, 'clock').detail, /of 1 peer/)
    // Without --config, doctor checks the file the running agent was started with.
    assert.equal(find(checks, 'config').status, 'ok')
    assert.match(find(checks, 'config').detail, /running\.yaml: 1 option/)
    const json = await cli(['doctor', '--data-dir', b.agent.store.dataDir, '--min-free', '0', '--json'])
    const parsed = JSON.parse(json.stdout) as { ok: boolean, checks: Check[] }
    assert.equal(parsed.ok, true, json.stdout)
    assert.equal(json.code, 0)
  } finally {
    await swarm.stopAll()
  }
})
