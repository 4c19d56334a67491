// A small SMTP client for rate-limit reports (`quotapolicy clean`) and
// alerts (the front, alert_mail): EHLO, optional STARTTLS, AUTH
// PLAIN, one message to each recipient. Every step has a deadline; any
// non-2xx/3xx reply is an error naming the step.
import net from 'node:net';
import tls from 'node:tls';
import { hostname } from 'node:os';

/** Each SMTP reply must arrive within this. */
export const SMTP_STEP_TIMEOUT_MS = 15_000;
/**
 * Bytes received and not yet read as a reply, at most. A reply line is at
 * most 512 bytes (RFC 5321 4.5.3.1.5) and an EHLO reply a few dozen lines;
 * a server sending more without ending a reply is broken or hostile.
 */
export const SMTP_MAX_REPLY_BYTES = 64 * 1024;

export interface SmtpOptions {
  host: string;
  port: number;
  starttls: boolean;
  credentials: [string, string] | null;
  ca?: string | Buffer;
}

class Conversation {
  /** Raw bytes, so that what is left at the switch to TLS is counted exactly (no decoder holding a partial character). */
  private buf = Buffer.alloc(0);
  private waiting: ((line: string) => void) | undefined;
  private failed: Error | undefined;
  constructor(private sock: net.Socket) {
    this.attach(sock);
  }

  attach(sock: net.Socket): void {
    this.sock = sock;
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      if (this.buf.length > SMTP_MAX_REPLY_BYTES) {
        this.failed ??= new Error(`more than ${SMTP_MAX_REPLY_BYTES} bytes without the end of a reply`);
        sock.destroy();
        this.waiting?.('');
        return;
      }
      this.pump();
    });
    sock.on('error', (e) => {
      this.failed ??= e;
      this.waiting?.('');
    });
  }

  /** Bytes received that no reply has taken yet. */
  get unread(): Buffer {
    return this.buf;
  }

  private pump(): void {
    // A reply ends at a line whose code is followed by a space ("250 ok"; "250-" continues).
    // Searched in a Latin-1 view (one character per byte), so offsets are byte offsets.
    const m = /(^|\n)(\d{3}) [^\n]*\n/.exec(this.buf.toString('latin1'));
    if (m && this.waiting) {
      const end = m.index + m[0].length;
      const reply = this.buf.toString('utf8', 0, end);
      this.buf = this.buf.subarray(end);
      const w = this.waiting;
      this.waiting = undefined;
      w(reply);
    }
  }

  reply(step: string, ok: RegExp = /^[23]/): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.failed) return reject(new Error(`SMTP ${step}: ${this.failed.message}`));
      const t = setTimeout(
        () => reject(new Error(`SMTP ${step}: no reply in ${SMTP_STEP_TIMEOUT_MS} ms`)),
        SMTP_STEP_TIMEOUT_MS,
      );
      this.waiting = (r) => {
        clearTimeout(t);
        if (this.failed) return reject(new Error(`SMTP ${step}: ${this.failed.message}`));
        const last = r.trimEnd().split('\n').pop() ?? '';
        if (!ok.test(last)) return reject(new Error(`SMTP ${step}: ${last.trim()}`));
        resolve(r);
      };
      this.pump();
    });
  }

  send(line: string, step: string, ok?: RegExp): Promise<string> {
    this.sock.write(line + '\r\n');
    return this.reply(step, ok);
  }
}

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.setTimeout(SMTP_STEP_TIMEOUT_MS, () => s.destroy(new Error('timeout')));
    s.once('connect', () => resolve(s));
    s.once('error', (e) => reject(new Error(`SMTP connect ${host}:${port}: ${e.message}`)));
  });
}

/** Sends one message (headers + body) from `from` to each of `to`, one transaction each. */
export async function sendMail(
  o: SmtpOptions,
  from: string,
  to: readonly string[],
  subject: string,
  body: string,
): Promise<void> {
  let sock = await connect(o.host, o.port);
  const c = new Conversation(sock);
  try {
    await c.reply('greeting');
    const me = hostname() || 'localhost';
    let ehlo = await c.send(`EHLO ${me}`, 'EHLO');
    if (o.starttls) {
      if (!/STARTTLS/i.test(ehlo)) throw new Error('SMTP STARTTLS: not offered by the server');
      await c.send('STARTTLS', 'STARTTLS');
      // Anything after the 220 was sent in plaintext: read after the switch it would pass for the first
      // reply inside TLS, and every later reply would answer the command before it. smtpd and nodemailer
      // refuse the session; so does this. (Bytes arriving after the switch go to TLS and fail its handshake.)
      if (c.unread.length > 0 || sock.readableLength > 0) {
        const early = c.unread.length + sock.readableLength;
        throw new Error(
          `SMTP STARTTLS: the server sent ${early} bytes after its 220 reply, before TLS (${JSON.stringify(c.unread.toString('latin1', 0, 40))}); refusing the session`,
        );
      }
      sock.removeAllListeners('data');
      // SNI takes host names only; an IP address is still checked against the certificate.
      sock = tls.connect({
        socket: sock,
        host: o.host,
        ...(net.isIP(o.host) ? {} : { servername: o.host }),
        ...(o.ca === undefined ? {} : { ca: o.ca }),
      });
      await new Promise<void>((resolve, reject) => {
        sock.once('secureConnect', () => resolve());
        sock.once('error', (e) => reject(new Error(`SMTP STARTTLS: ${e.message}`)));
      });
      c.attach(sock);
      ehlo = await c.send(`EHLO ${me}`, 'EHLO after STARTTLS');
    }
    if (o.credentials) {
      if (!o.starttls) throw new Error('SMTP AUTH: refusing to send credentials without STARTTLS');
      const token = Buffer.from(`\0${o.credentials[0]}\0${o.credentials[1]}`).toString('base64');
      await c.send(`AUTH PLAIN ${token}`, 'AUTH');
    }
    for (const rcpt of to) {
      await c.send(`MAIL FROM:<${from}>`, 'MAIL FROM');
      await c.send(`RCPT TO:<${rcpt}>`, `RCPT TO ${rcpt}`);
      await c.send('DATA', 'DATA', /^3/);
      const msg = [
        `From: ${from}`,
        `To: ${rcpt}`,
        `Subject: ${subject}`,
        `Date: ${new Date().toUTCString()}`,
        'MIME-Version: 1.0',
        'Content-Type: text/plain; charset=utf-8',
        '',
        ...body.split('\n'),
      ]
        .map((l) => (l.startsWith('.') ? `.${l}` : l))
        .join('\r\n');
      await c.send(`${msg}\r\n.`, 'end of data');
    }
    await c.send('QUIT', 'QUIT').catch(() => {});
  } finally {
    sock.destroy();
  }
}
