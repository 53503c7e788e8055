/**
 * The canonical DAG-CBOR bytes of a tree block, written directly.
 *
 * A tree block is `{ e: [entry...], v: 1 }` and each entry a map with a fixed set of short keys
 * (see `encodeEntry` in tree.ts), so the encoder needs only unsigned and negative integers, byte
 * and text strings, arrays, maps whose keys are known here, and CIDs (tag 42). The keys are
 * written in DAG-CBOR's order (shorter keys first, then by bytes): c d g i l m n r s t u x z ns.
 * The output is byte for byte what `@ipld/dag-cbor` encodes for the same value. The tests in
 * test/tree-format.test.ts compare the two over fixed entries of every type and every width of
 * CBOR head, and over generated trees; the blocks of a Debian /usr captured with the general
 * encoder pass decodeTree's canonical check, which uses this one.
 *
 * Why not the general encoder: a node checks every tree block it loads by encoding the decoded
 * entries again (only the canonical encoding is a tree block), and a deploy loads the whole tree
 * before its first piece moves. The general encoder builds a token list and sorts each map's
 * keys; on the testbed (10 clients, 1,700 entries) those re-encodings were a fifth of all the
 * agents' CPU in the first two seconds of a deploy.
 */
import type { CID } from 'multiformats/cid'
import type { TreeEntry } from './tree.ts'

const MAJOR_UINT = 0
const MAJOR_NEGINT = 1
const MAJOR_BYTES = 2
const MAJOR_TEXT = 3
const MAJOR_ARRAY = 4
const MAJOR_MAP = 5
/** Tag 42 (a CID), as its two-byte head. */
const CID_TAG = [0xd8, 0x2a]

const utf8 = new TextEncoder()

class Writer {
  buf: Uint8Array
  view: DataView
  pos = 0

  constructor (size: number) {
    this.buf = new Uint8Array(size)
    this.view = new DataView(this.buf.buffer)
  }

  private room (n: number): void {
    if (this.pos + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n))
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  /** A head: major type and argument, in the shortest form. */
  head (major: number, n: number): void {
    this.room(9)
    const m = major << 5
    if (n < 24) {
      this.buf[this.pos++] = m | n
    } else if (n < 0x100) {
      this.buf[this.pos++] = m | 24
      this.buf[this.pos++] = n
    } else if (n < 0x10000) {
      this.buf[this.pos++] = m | 25
      this.view.setUint16(this.pos, n)
      this.pos += 2
    } else if (n < 0x1_0000_0000) {
      this.buf[this.pos++] = m | 26
      this.view.setUint32(this.pos, n)
      this.pos += 4
    } else {
      this.buf[this.pos++] = m | 27
      this.view.setUint32(this.pos, Math.floor(n / 0x1_0000_0000))
      this.view.setUint32(this.pos + 4, n % 0x1_0000_0000)
      this.pos += 8
    }
  }

  int (v: number): void {
    if (!Number.isSafeInteger(v)) throw new RangeError(`not a safe integer: ${v}`)
    if (v >= 0) this.head(MAJOR_UINT, v)
    else this.head(MAJOR_NEGINT, -1 - v)
  }

  bytes (b: Uint8Array): void {
    this.head(MAJOR_BYTES, b.length)
    this.raw(b)
  }

  text (s: string): void {
    // Short ASCII keys are most of the text here; encodeInto would need the length first anyway.
    const b = utf8.encode(s)
    this.head(MAJOR_TEXT, b.length)
    this.raw(b)
  }

  /** A map key of one or two ASCII letters. */
  key (k: string): void {
    this.room(3)
    this.buf[this.pos++] = (MAJOR_TEXT << 5) | k.length
    for (let i = 0; i < k.length; i++) this.buf[this.pos++] = k.charCodeAt(i)
  }

  cid (c: CID): void {
    this.room(2)
    this.buf[this.pos++] = CID_TAG[0]
    this.buf[this.pos++] = CID_TAG[1]
    // DAG-CBOR's CID: a byte string of a zero byte (the identity multibase prefix) and the CID
    this.head(MAJOR_BYTES, c.bytes.length + 1)
    this.room(1)
    this.buf[this.pos++] = 0
    this.raw(c.bytes)
  }

  raw (b: Uint8Array): void {
    this.room(b.length)
    this.buf.set(b, this.pos)
    this.pos += b.length
  }

  result (): Uint8Array { return this.buf.slice(0, this.pos) }
}

function writeEntry (w: Writer, e: TreeEntry): void {
  const hasX = e.xattrs.length > 0
  const hasZ = e.size !== undefined
  const hasC = e.segments !== undefined
  const hasI = e.inline !== undefined
  const hasL = e.link !== undefined
  const hasR = e.major !== undefined
  const hasD = e.tree !== undefined
  const fields = 7 + Number(hasX) + Number(hasZ) + Number(hasC) + Number(hasI) + Number(hasL) + Number(hasR) + Number(hasD)
  w.head(MAJOR_MAP, fields)
  if (hasC) {
    w.key('c')
    const segs = e.segments as NonNullable<TreeEntry['segments']>
    w.head(MAJOR_ARRAY, segs.length)
    for (const s of segs) {
      w.head(MAJOR_ARRAY, s.cid === undefined ? 1 : s.offset === undefined ? 2 : 3)
      w.int(s.length)
      if (s.cid !== undefined) w.cid(s.cid)
      if (s.cid !== undefined && s.offset !== undefined) w.int(s.offset)
    }
  }
  if (hasD) { w.key('d'); w.cid(e.tree as CID) }
  w.key('g'); w.int(e.gid)
  if (hasI) { w.key('i'); w.bytes(e.inline as Uint8Array) }
  if (hasL) { w.key('l'); w.bytes(e.link as Uint8Array) }
  w.key('m'); w.int(e.mode)
  w.key('n'); w.bytes(e.name)
  if (hasR) {
    w.key('r')
    w.head(MAJOR_ARRAY, 2)
    w.int(e.major as number)
    w.int(e.minor ?? 0)
  }
  w.key('s'); w.int(e.mtimeSec)
  w.key('t'); w.text(e.type)
  w.key('u'); w.int(e.uid)
  if (hasX) {
    w.key('x')
    w.head(MAJOR_ARRAY, e.xattrs.length)
    for (const [k, v] of e.xattrs) {
      w.head(MAJOR_ARRAY, 2)
      w.text(k)
      w.bytes(v)
    }
  }
  if (hasZ) { w.key('z'); w.int(e.size as number) }
  w.key('ns'); w.int(e.mtimeNsec)
}

/** `{ e: entries, v: version }` as canonical DAG-CBOR; `entries` must already be in name order. */
export function writeTreeBlock (version: number, entries: readonly TreeEntry[]): Uint8Array {
  const w = new Writer(64 + entries.length * 96)
  w.head(MAJOR_MAP, 2)
  w.key('e')
  w.head(MAJOR_ARRAY, entries.length)
  for (const e of entries) writeEntry(w, e)
  w.key('v')
  w.int(version)
  return w.result()
}

/** One entry as canonical DAG-CBOR (the map it is inside its tree block). */
export function writeTreeEntry (entry: TreeEntry): Uint8Array {
  const w = new Writer(96)
  writeEntry(w, entry)
  return w.result()
}
