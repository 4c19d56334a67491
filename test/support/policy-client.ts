// A minimal policy-protocol client for tests: send bytes, collect replies.
import { encodeRequest } from '../../src/frontend/protocol/request.js';
import net from 'node:net';

export type Address = { path: string } | { host: string; port: number };

export function request(attrs: Record<string, string>): string {
  return encodeRequest(attrs);
}

/** Hostile input the real encoder refuses (NUL, CR in values): written exactly as given. */
export function uncheckedRcpt(recipient: string): string {
  return `request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=${recipient}\n\n`;
}

export function rcpt(recipient: string, extra: Record<string, string> = {}): string {
  return request({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient, ...extra });
}

/**
 * Opens a connection, writes each chunk (with an optional pause between), and
 * resolves with everything the server sent once it has sent `replies` replies
 * or closed the connection, or after `timeoutMs`.
 */
export function exchange(
  addr: Address,
  chunks: (string | Buffer)[],
  opts: { replies?: number; timeoutMs?: number; gapMs?: number; halfClose?: boolean } = {},
): Promise<{ text: string; closedByServer: boolean; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(addr as net.NetConnectOpts);
    let text = '';
    let done = false;
    const finish = (closedByServer: boolean, timedOut = false): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text, closedByServer, timedOut });
    };
    const timer = setTimeout(() => finish(false, true), opts.timeoutMs ?? 5000);
    s.on('data', (d) => {
      text += d.toString('utf8');
      if (opts.replies !== undefined && text.split('\n\n').length - 1 >= opts.replies) finish(false);
    });
    s.on('close', () => finish(true));
    s.on('error', (e) => (done ? undefined : reject(e)));
    const send = async (): Promise<void> => {
      for (const c of chunks) {
        s.write(c);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      if (opts.halfClose) s.end();
    };
    s.on('connect', () => void send());
  });
}

export function actions(text: string): string[] {
  return text
    .split('\n\n')
    .filter((x) => x !== '')
    .map((x) => x.replace(/^action=/, ''));
}
