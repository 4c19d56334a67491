// `quotapolicy query RECIPIENT`: sends one policy request to a running daemon,
// as smtpd would, and prints the reply. For admins testing their set-up.
import net from 'node:net';
import { loadConfig } from '../shared/config/load.js';
import { listenSpec, netOptions } from '../shared/config/schema.js';
import { flagOf, UsageError, type CommandLine } from '../shared/options.js';

/** A daemon answers in milliseconds; a cache miss on a hung NFS takes quota_timeout_ms. */
export const QUERY_TIMEOUT_MS = 15_000;
export const EX_UNAVAILABLE = 69;
export const EX_TEMPFAIL = 75;

export class QueryError extends Error {
  constructor(message: string, readonly exitCode: number) { super(message); }
}

export function buildRequest(recipient: string, state: string, size: string, extra: readonly string[]): string {
  const attrs = new Map([['request', 'smtpd_access_policy'], ['protocol_state', state], ['protocol_name', 'ESMTP'],
    ['client_address', '127.0.0.1'], ['client_name', 'localhost'], ['sender', 'query@localhost'], ['recipient', recipient],
    ['recipient_count', state === 'RCPT' ? '0' : '1'], ['size', size], ['queue_id', '']]);
  for (const a of extra) {
    const eq = a.indexOf('=');
    if (eq <= 0 || /[\r\n]/.test(a)) throw new UsageError(`--attr needs NAME=VALUE on one line, got "${a}"`);
    attrs.set(a.slice(0, eq), a.slice(eq + 1));
  }
  return [...attrs].map(([k, v]) => `${k}=${v}\n`).join('') + '\n';
}

export async function query(cl: CommandLine, out: (s: string) => void): Promise<number> {
  const recipient = cl.positionals[1];
  if (recipient === undefined || cl.positionals.length > 2 || /[\r\n]/.test(recipient)) {
    throw new UsageError('usage: quotapolicy query RECIPIENT [--to SPEC] [--size N] [--state RCPT|END-OF-MESSAGE] [--attr NAME=VALUE]...');
  }
  const to = cl.to ?? loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf }).config.listen[0]!;
  const bad = listenSpec(to);
  if (bad !== undefined) throw new UsageError(`--to ${to}: ${bad}`);
  if (cl.size !== undefined && !/^\d{1,15}$/.test(cl.size)) throw new UsageError('--size must be a number of bytes');
  const state = cl.state ?? 'RCPT';
  if (!/^[A-Z-]{1,20}$/.test(state)) throw new UsageError('--state must be a protocol state such as RCPT');
  const req = buildRequest(recipient, state, cl.size ?? '0', cl.attrs);
  const reply = await new Promise<string>((resolve, reject) => {
    const s = net.connect(netOptions(to));
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new QueryError(`no reply from ${to} within ${QUERY_TIMEOUT_MS} ms`, EX_TEMPFAIL)); }, QUERY_TIMEOUT_MS);
    s.on('connect', () => s.write(req));
    s.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.includes('\n\n')) { clearTimeout(timer); s.end(); resolve(buf.slice(0, buf.indexOf('\n\n'))); }
    });
    s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(timer); reject(new QueryError(`cannot reach ${to}: ${e.code ?? e.message}`, EX_UNAVAILABLE)); });
    s.on('close', () => { clearTimeout(timer); reject(new QueryError(`${to} closed the connection without a reply`, EX_TEMPFAIL)); });
  });
  out(`${reply}\n`);
  return 0;
}
