/**
 * The noise channel's cipher, alone: CPU per GB to seal and open 64 KiB noise messages with the
 * agent's cipher (node/swarm/noise-crypto.ts) next to libp2p-noise's own, in the same process and
 * run, rounds interleaved. Each message is opened as libp2p-noise hands it over: a list of the
 * buffers it arrived in (one, or two when it spans two socket reads) with its own bytes as dst.
 *
 *   node simulations/bench-noise.ts [--mib 256] [--runs 5]
 */
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import { cpus } from 'node:os'
import { Uint8ArrayList } from 'uint8arraylist'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { open, seal, type Data } from '../node/swarm/noise-crypto.ts'
import { median } from './bench-transfer.ts'

type Seal = (p: Data, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array) => Uint8Array | { subarray: () => Uint8Array }
type Open = (c: Data, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array, dst?: Uint8Array) => unknown

const { values: v } = parseArgs({ options: { mib: { type: 'string', default: '256' }, runs: { type: 'string', default: '5' } } })
const MSG = 65535 - 16
const messages = Math.max(1, Math.round(Number(v.mib) * 1024 * 1024 / MSG))
const runs = Math.max(1, Number(v.runs))
const k = randomBytes(32)
const nonce = randomBytes(12)
const ad = new Uint8Array(0)
const plain = randomBytes(MSG)

/** CPU seconds per GB of plaintext to seal and then open every message (the wire copy is the same for both ciphers). */
function measure (sealFn: Seal, openFn: Open, split: boolean): number {
  const t0 = process.cpuUsage()
  for (let i = 0; i < messages; i++) {
    const c = sealFn(plain, nonce, ad, k)
    const wire = Buffer.from(c instanceof Uint8Array ? c : c.subarray())
    const list = split ? new Uint8ArrayList(wire.subarray(0, 30000), wire.subarray(30000)) : new Uint8ArrayList(wire)
    openFn(list, nonce, ad, k, list.subarray(0, list.byteLength - 16))
  }
  const u = process.cpuUsage(t0)
  return (u.user + u.system) / 1e6 / (messages * MSG / 1e9)
}

const ciphers: Array<[string, Seal, Open]> = [
  // libp2p-noise types its lists with its own copy of uint8arraylist; the bytes are the same
  ['libp2p-noise (node:crypto)', defaultCrypto.chaCha20Poly1305Encrypt as unknown as Seal, defaultCrypto.chaCha20Poly1305Decrypt as unknown as Open],
  ['imgmesh (native, in place)', seal, open]
]
process.stdout.write(`noise cipher: ${messages} messages of ${MSG} bytes (${v.mib} MiB) per run, ${runs} runs, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Node ${process.version}\n`)
for (const split of [false, true]) {
  const samples = ciphers.map(() => [] as number[])
  for (let r = 0; r < runs + 1; r++) {
    ciphers.forEach(([, s, o], i) => {
      const x = measure(s, o, split)
      if (r > 0) samples[i].push(x) // round 0 warms up
    })
  }
  const base = median(samples[0])
  process.stdout.write(`\nmessages ${split ? 'spanning two reads' : 'in one read'}: CPU s per GB sealed and opened, median (runs)\n`)
  ciphers.forEach(([name], i) => {
    const m = median(samples[i])
    process.stdout.write(`  ${name.padEnd(28)} ${m.toFixed(2)}  (${samples[i].map(x => x.toFixed(2)).join(', ')})  ratio ${(m / base).toFixed(2)}\n`)
  })
}
