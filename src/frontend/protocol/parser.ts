// Postfix policy delegation protocol (SMTPD_POLICY_README), read side:
// "name=value\n" lines, an empty line ends a request. Works on bytes: lines are
// cut at 0x0A first and only then decoded, so a UTF-8 character split across
// reads decodes the same, and invalid bytes become U+FFFD instead of an error.
// Any limit crossed or malformed line is a ProtocolError: the caller logs it and
// closes the connection without replying, as Postfix's own servers do.

/** Postfix limits SMTP command lines to 2048 bytes (line_length_limit); attributes derive from them. */
export const MAX_LINE_BYTES = 8192;
/** A real smtpd request is ~30 attributes and ~1 KiB; 64 KiB is far beyond any. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Postfix 3.x sends ~35 attributes; leave room for future versions. */
export const MAX_ATTRIBUTES = 256;

export type PolicyRequest = ReadonlyMap<string, string>;

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const NL = 0x0a;

export class PolicyParser {
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private requestBytes = 0;
  private attrs = new Map<string, string>();
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });

  /** Feeds bytes; returns every request completed by them. Throws ProtocolError. */
  push(chunk: Buffer): PolicyRequest[] {
    const done: PolicyRequest[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(NL, start);
      const end = nl === -1 ? chunk.length : nl;
      this.partialBytes += end - start;
      this.requestBytes += end - start + (nl === -1 ? 0 : 1);
      if (this.partialBytes > MAX_LINE_BYTES) throw new ProtocolError(`line longer than ${MAX_LINE_BYTES} bytes`);
      if (this.requestBytes > MAX_REQUEST_BYTES) throw new ProtocolError(`request larger than ${MAX_REQUEST_BYTES} bytes`);
      if (end > start) this.partial.push(chunk.subarray(start, end));
      if (nl === -1) break;
      const line = this.partial.length === 1 ? this.partial[0]! : Buffer.concat(this.partial);
      this.partial = [];
      this.partialBytes = 0;
      const req = this.line(line[line.length - 1] === 0x0d ? line.subarray(0, -1) : line);
      if (req) done.push(req);
      start = nl + 1;
    }
    return done;
  }

  /** True when bytes of an unfinished request are buffered. */
  get midRequest(): boolean {
    return this.requestBytes > 0;
  }

  private line(bytes: Buffer): PolicyRequest | undefined {
    if (bytes.length === 0) {
      if (this.attrs.size === 0) throw new ProtocolError('empty request');
      const req = this.attrs;
      this.attrs = new Map();
      this.requestBytes = 0;
      return req;
    }
    const eq = bytes.indexOf(0x3d);
    if (eq <= 0) throw new ProtocolError(eq === 0 ? 'attribute with an empty name' : 'line without "="');
    if (this.attrs.size >= MAX_ATTRIBUTES) throw new ProtocolError(`more than ${MAX_ATTRIBUTES} attributes`);
    // Unknown attributes are kept but never looked at; a repeated one keeps the last value.
    this.attrs.set(this.decoder.decode(bytes.subarray(0, eq)), this.decoder.decode(bytes.subarray(eq + 1)));
    return undefined;
  }
}
