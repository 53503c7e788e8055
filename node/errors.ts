/** Typed errors: every failure the agent or CLI reports carries a stable code. */
export type ErrorCode =
  | 'EBADARG'
  | 'ENOIMAGE'
  | 'ENOVERSION'
  | 'ENOBLOCK'
  | 'EBADBLOCK'
  | 'EBADTREE'
  | 'EBADVERSION'
  | 'EBADSIGNATURE'
  | 'EUNTRUSTED'
  | 'EUNSAFEPATH'
  | 'ESOURCECHANGED'
  | 'ENOTDEPLOYED'
  | 'ETARGET'
  | 'ENOSPC'
  | 'EIO'
  | 'ENOAGENT'
  | 'EPEER'
  | 'EPROTOCOL'
  | 'ECONFLICT'
  | 'ETIMEOUT'
  | 'EABORTED'

export class ImgmeshError extends Error {
  readonly code: ErrorCode
  readonly path?: string

  constructor (code: ErrorCode, message: string, options?: { path?: string, cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ImgmeshError'
    this.code = code
    if (options?.path !== undefined) this.path = options.path
  }
}

export function isErrno (err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code
}

/** Wraps an fs error into an ImgmeshError naming the path; ENOSPC/EDQUOT keep their own code. */
export function fsError (err: unknown, action: string, path: string): ImgmeshError {
  if (err instanceof ImgmeshError) return err
  const errno = (err as { code?: string }).code ?? 'EIO'
  const code: ErrorCode = errno === 'ENOSPC' || errno === 'EDQUOT' ? 'ENOSPC' : 'EIO'
  const text = err instanceof Error ? err.message : String(err)
  return new ImgmeshError(code, `${action} ${path}: ${errno === 'ENOSPC' || errno === 'EDQUOT' ? 'no space left on device' : text}`, { path, cause: err })
}
