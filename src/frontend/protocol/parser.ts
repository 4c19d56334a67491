// Postfix policy delegation protocol (SMTPD_POLICY_README), read side:
// "name=value\n" lines, an empty line ends a request. Limits are in bytes and a
// request is decoded only when complete, so a UTF-8 character split across reads
// decodes the same, and invalid bytes become U+FFFD instead of an error.
// Any limit crossed or malformed line is a ProtocolError: the caller logs it and
// closes the connection without replying, as Postfix's own servers do.
import { isAscii } from 'node:buffer';

/** Postfix limits SMTP command lines to 2048 bytes (line_length_limit); attributes derive from them. */
export const MAX_LINE_BYTES = 8192;
/** A real smtpd request is ~30 attributes and ~1 KiB; 64 KiB is far beyond any. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Postfix 3.x sends ~35 attributes; leave room for future versions. */
export const MAX_ATTRIBUTES = 256;

/** A request's attributes (a Map fits too: tests build requests that way). */
export interface PolicyRequest {
  /** The value of an attribute; a repeated one gives its last value. */
  get(name: string): string | undefined;
}

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const CR = 0x0d;

/** The first buffer for a request split across reads; a Postfix request is ~1 KiB. Doubles up to MAX_REQUEST_BYTES. */
export const FIRST_PARTIAL_BYTES = 2048;

/**
 * Checks every line as its bytes arrive (limits, "=", empty name), scanning a
 * Latin-1 view of the read (one character per byte, so offsets are byte
 * offsets) with the engine's own string search, and decodes a request as UTF-8
 * only once it is complete, in one piece. Decoding first and splitting after
 * gives the same strings as splitting bytes first: the bytes split on (LF, CR,
 * "=") are ASCII, and a UTF-8 decoder never folds an ASCII byte into a
 * replacement character. This is the hot path: a Postfix request has ~30 lines.
 *
 * Memory, whatever the sender's write pattern: the read being parsed (feed),
 * kept until next() has taken every request in it, and the bytes of one
 * unfinished request copied into one buffer of at most MAX_REQUEST_BYTES. A
 * sender writing one byte at a time costs one buffer, not one per read.
 */
export class PolicyParser {
  /** Bytes of the unfinished request from earlier reads, copied; partialLength of them are used. */
  private partial: Buffer | undefined;
  private partialLength = 0;
  /** The read being parsed, its Latin-1 view, where parsing stopped and where the current request began in it. */
  private chunk: Buffer | undefined;
  private text = '';
  /** The read is all ASCII: its Latin-1 view is its UTF-8 text. */
  private ascii = false;
  private pos = 0;
  private reqStart = 0;
  private requestBytes = 0;
  /** requestBytes at the end of the last attribute line (its LF included): where the next line starts. */
  private contentBytes = 0;
  private lineBytes = 0;
  private lineLast = -1;
  private lineEq = -1;
  /**
   * Per attribute line so far: its start and its "=" (request offsets), in the first `offsetCount`
   * entries. Reused from request to request (a request copies its own, at its exact size), so
   * the ~60 entries of a Postfix request cost one array, not a growing one.
   */
  private readonly offsets: number[] = [];
  private offsetCount = 0;

  /** Feeds bytes; returns every request completed by them. Throws ProtocolError. */
  push(chunk: Buffer): Attributes[] {
    this.feed(chunk);
    const done: Attributes[] = [];
    for (let r = this.next(); r !== undefined; r = this.next()) done.push(r);
    return done;
  }

  /**
   * Takes a read, to be parsed by next(). The caller stops reading until next()
   * has taken it all (unread is 0); if it does not, the rest is joined to it.
   */
  feed(chunk: Buffer): void {
    if (this.chunk !== undefined) chunk = Buffer.concat([this.chunk.subarray(this.pos), chunk]);
    this.chunk = chunk;
    this.text = chunk.toString('latin1');
    this.ascii = isAscii(chunk);
    this.pos = this.reqStart = 0;
  }

  /** The next request completed by the bytes fed, or undefined when they are all read. Throws ProtocolError. */
  next(): Attributes | undefined {
    const chunk = this.chunk;
    if (chunk === undefined) return undefined;
    const bytes = this.text;
    const length = bytes.length;
    // The line and request state in locals while scanning (this is the hot path: ~30 lines a
    // request), stored back when the read is used up; after a ProtocolError the parser is done.
    const offsets = this.offsets;
    let start = this.pos;
    let lineBytes = this.lineBytes;
    let lineLast = this.lineLast;
    let lineEq = this.lineEq;
    let requestBytes = this.requestBytes;
    let count = this.offsetCount;
    while (start < length) {
      const nl = bytes.indexOf('\n', start);
      const end = nl === -1 ? length : nl;
      if (end > start) {
        if (lineEq === -1) {
          const eq = bytes.indexOf('=', start);
          if (eq !== -1 && eq < end) lineEq = lineBytes + eq - start;
        }
        lineLast = bytes.charCodeAt(end - 1);
        lineBytes += end - start;
      }
      requestBytes += end - start + (nl === -1 ? 0 : 1);
      if (lineBytes > MAX_LINE_BYTES) throw new ProtocolError(`line longer than ${MAX_LINE_BYTES} bytes`);
      if (requestBytes > MAX_REQUEST_BYTES) throw new ProtocolError(`request larger than ${MAX_REQUEST_BYTES} bytes`);
      if (nl === -1) break;
      start = nl + 1;
      const empty = lineBytes === 0 || (lineBytes === 1 && lineLast === CR);
      const eq = lineEq;
      lineBytes = 0;
      lineLast = -1;
      lineEq = -1;
      if (!empty) {
        if (eq === -1) throw new ProtocolError('line without "="');
        if (eq === 0) throw new ProtocolError('attribute with an empty name');
        if (count >= 2 * MAX_ATTRIBUTES) throw new ProtocolError(`more than ${MAX_ATTRIBUTES} attributes`);
        const lineStart = this.contentBytes;
        offsets[count++] = lineStart;
        offsets[count++] = lineStart + eq;
        this.contentBytes = requestBytes;
        continue;
      }
      if (count === 0) throw new ProtocolError('empty request');
      const contentBytes = this.contentBytes;
      let text: string;
      // A read holding exactly this request, in ASCII (Postfix writes one request per write): its
      // Latin-1 view is the text already, and a slice of it holds no more than the read.
      if (this.partialLength === 0 && this.ascii && this.reqStart === 0 && start === length)
        text = bytes.slice(0, contentBytes);
      else if (this.partialLength === 0) text = chunk.toString('utf8', this.reqStart, this.reqStart + contentBytes);
      else {
        this.keep(chunk, this.reqStart, start);
        text = this.partial!.toString('utf8', 0, contentBytes);
      }
      // One character per byte (ASCII, or single invalid bytes as U+FFFD): the byte offsets hold.
      const req =
        text.length === contentBytes ? new Attributes(text, offsets.slice(0, count)) : Attributes.fromText(text);
      this.partial = undefined;
      this.partialLength = 0;
      this.offsetCount = 0;
      this.requestBytes = 0;
      this.contentBytes = 0;
      this.lineBytes = 0;
      this.lineLast = -1;
      this.lineEq = -1;
      this.pos = this.reqStart = start;
      if (start === length) this.release();
      return req;
    }
    this.lineBytes = lineBytes;
    this.lineLast = lineLast;
    this.lineEq = lineEq;
    this.requestBytes = requestBytes;
    this.offsetCount = count;
    // The read is used up: an unfinished request's bytes move into the one buffer.
    if (requestBytes > 0 && this.reqStart < chunk.length) this.keep(chunk, this.reqStart, chunk.length);
    this.release();
    return undefined;
  }

  /** Copies chunk[from, to) after the unfinished request's earlier bytes (at most MAX_REQUEST_BYTES in all: checked by next). */
  private keep(chunk: Buffer, from: number, to: number): void {
    const need = this.partialLength + to - from;
    if (this.partial === undefined || this.partial.length < need) {
      let size = this.partial?.length ?? FIRST_PARTIAL_BYTES;
      while (size < need) size *= 2;
      // Unpooled: a pooled slice would keep its whole 8 KiB slab alive.
      const grown = Buffer.allocUnsafeSlow(Math.min(size, MAX_REQUEST_BYTES));
      this.partial?.copy(grown, 0, 0, this.partialLength);
      this.partial = grown;
    }
    chunk.copy(this.partial, this.partialLength, from, to);
    this.partialLength = need;
  }

  private release(): void {
    this.chunk = undefined;
    this.text = '';
    this.ascii = false;
    this.pos = this.reqStart = 0;
  }

  /** True when bytes of an unfinished request are buffered. */
  get midRequest(): boolean {
    return this.requestBytes > 0;
  }

  /** Bytes fed and not yet read by next(). */
  get unread(): number {
    return this.chunk === undefined ? 0 : this.chunk.length - this.pos;
  }

  /** Bytes this parser holds: the read being parsed and the unfinished request's buffer. */
  get heldBytes(): number {
    return (this.chunk?.length ?? 0) + (this.partial?.length ?? 0);
  }
}

/**
 * A parsed request: its decoded text and where each line and its "=" are, read
 * on demand. A check looks at a handful of the ~30 attributes Postfix sends, so
 * they are not split into strings up front; a lookup compares name lengths first
 * and reads one or two names. Invalid UTF-8 is U+FFFD already.
 */
export class Attributes implements PolicyRequest {
  /**
   * @param text whole "name=value" lines, each ending in LF (checked by push)
   * @param at per line, its start and its first "=", as offsets into text
   */
  constructor(
    private readonly text: string,
    private readonly at: readonly number[],
  ) {}

  /** When the decoded text's offsets are not the bytes' (multi-byte UTF-8): find the lines again. */
  static fromText(text: string): Attributes {
    const at: number[] = [];
    for (let i = 0; i < text.length; i = text.indexOf('\n', i) + 1) at.push(i, text.indexOf('=', i));
    return new Attributes(text, at);
  }

  get(name: string): string | undefined {
    const at = this.at;
    // From the last line: a repeated attribute gives its last value.
    for (let i = at.length - 2; i >= 0; i -= 2) {
      const eq = at[i + 1]!;
      if (eq - at[i]! === name.length && this.text.startsWith(name, at[i])) return this.value(i);
    }
    return undefined;
  }

  /** The value of line i/2: after its "=", up to its LF or a CR just before it. */
  private value(i: number): string {
    const from = this.at[i + 1]! + 1;
    const nl = i + 2 < this.at.length ? this.at[i + 2]! - 1 : this.text.length - 1;
    return this.text.slice(from, nl > from && this.text.charCodeAt(nl - 1) === CR ? nl - 1 : nl);
  }

  /** Every attribute in order, a repeated name once with its last value (for tests and tools). */
  entries(): Map<string, string> {
    const all = new Map<string, string>();
    for (let i = 0; i < this.at.length; i += 2) all.set(this.text.slice(this.at[i], this.at[i + 1]), this.value(i));
    return all;
  }
}
