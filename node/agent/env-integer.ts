/**
 * An integer setting read from the environment (the agent's V8 tuning knobs): the variable's
 * value when it is an integer in [min, max], else the default, with a warning when the variable
 * was set to something else.
 */
import { createLogger } from '../logger.ts'

const log = createLogger('agent')

export function envInteger (name: string, value: string | undefined, fallback: number, min: number, max = Number.POSITIVE_INFINITY): number {
  if (value === undefined || value.trim() === '') return fallback
  const n = Number(value)
  if (Number.isInteger(n) && n >= min && n <= max) return n
  const range = max === Number.POSITIVE_INFINITY ? `at least ${min}` : `from ${min} to ${max}`
  log.warn(`${name} is not an integer ${range}; using the default`, { value, default: fallback })
  return fallback
}
