// `quotapolicy query RECIPIENT`: sends one policy request to a running daemon,
// as smtpd would, and prints the reply. For admins testing their set-up: by
// default a dry query (QUERY_ATTRIBUTE), which counts against no limit and
// comes back with which check answered and why; --count sends exactly what
// smtpd sends, and is counted.
import { encodeRequest } from '../frontend/protocol/request.js';
import net from 'node:net';
import { loadConfig } from '../shared/config/load.js';
import { listenSpec, netOptions } from '../shared/config/checks.js';
import { flagOf, UsageError, type CommandLine } from '../shared/options.js';
import { EXIT, QpError } from '../shared/errors.js';
import { QUERY_ATTRIBUTE, QUERY_DRY, POSTFIX_ATTRIBUTE } from '../frontend/protocol/dry-query.js';
import { decodeReplyValue } from '../frontend/protocol/reply.js';

/** A daemon answers in milliseconds; a cache miss on a hung NFS takes quota_timeout_ms. */
export const QUERY_TIMEOUT_MS = 15_000;

export function buildRequest(
  recipient: string,
  state: string,
  size: string,
  extra: readonly string[],
  dry = false,
): string {
  const attrs = new Map([
    ['request', 'smtpd_access_policy'],
    ['protocol_state', state],
    ['protocol_name', 'ESMTP'],
    ['client_address', '127.0.0.1'],
    ['client_name', 'localhost'],
    ['sender', 'query@localhost'],
    ['recipient', recipient],
    ['recipient_count', state === 'RCPT' ? '0' : '1'],
    ['size', size],
    ['queue_id', ''],
  ]);
  for (const a of extra) {
    const eq = a.indexOf('=');
    if (eq <= 0 || /[\r\n]/.test(a)) throw new UsageError(`--attr needs NAME=VALUE on one line, got "${a}"`);
    if (a.slice(0, eq) === QUERY_ATTRIBUTE)
      throw new UsageError(`--attr ${QUERY_ATTRIBUTE} is set by query itself (dry unless --count)`);
    if (a.slice(0, eq) === POSTFIX_ATTRIBUTE && dry)
      throw new UsageError(
        `--attr ${POSTFIX_ATTRIBUTE}: only Postfix sends it, and the daemon counts a request with it as mail; add --count to send one`,
      );
    attrs.set(a.slice(0, eq), a.slice(eq + 1));
  }
  if (dry) attrs.set(QUERY_ATTRIBUTE, QUERY_DRY);
  return encodeRequest(attrs);
}

export async function query(cl: CommandLine, out: (s: string) => void): Promise<number> {
  const recipient = cl.positionals[1];
  if (recipient === undefined || cl.positionals.length > 2 || /[\r\n]/.test(recipient)) {
    throw new UsageError(
      'usage: quotapolicy query RECIPIENT [--count] [--to SPEC] [--size N] [--state RCPT|END-OF-MESSAGE] [--attr NAME=VALUE]...',
    );
  }
  const to = cl.to ?? loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf }).config.listen[0]!;
  const bad = listenSpec(to);
  if (bad !== undefined) throw new UsageError(`--to ${to}: ${bad}`);
  if (cl.size !== undefined && !/^\d{1,15}$/.test(cl.size)) throw new UsageError('--size must be a number of bytes');
  const state = cl.state ?? 'RCPT';
  if (!/^[A-Z-]{1,20}$/.test(state)) throw new UsageError('--state must be a protocol state such as RCPT');
  const req = buildRequest(recipient, state, cl.size ?? '0', cl.attrs, !cl.count);
  const reply = await new Promise<string>((resolve, reject) => {
    const s = net.connect(netOptions(to));
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new QpError('QP_NO_REPLY', `no reply from ${to} within ${QUERY_TIMEOUT_MS} ms`));
    }, QUERY_TIMEOUT_MS);
    s.on('connect', () => s.write(req));
    s.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.includes('\n\n')) {
        clearTimeout(timer);
        s.end();
        resolve(buf.slice(0, buf.indexOf('\n\n')));
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new QpError('QP_UNREACHABLE', `cannot reach ${to}: ${e.code ?? e.message}`));
    });
    s.on('close', () => {
      clearTimeout(timer);
      reject(new QpError('QP_NO_REPLY', `${to} closed the connection without a reply`));
    });
  });
  out(cl.count ? `${reply}\n` : explain(reply));
  return EXIT.OK;
}

const DETAIL_PREFIX = 'quotapolicy_';

/** A dry query's reply as lines: the action as Postfix would see it, then what the daemon said about it. */
export function explain(reply: string): string {
  const [first = '', ...rest] = reply.split('\n');
  const lines = [first];
  let counted: string | undefined;
  for (const line of rest) {
    const eq = line.indexOf('=');
    const name = line.slice(0, eq);
    const value = decodeReplyValue(line.slice(eq + 1));
    if (name === `${DETAIL_PREFIX}counted`) counted = value;
    else lines.push(`${name.startsWith(DETAIL_PREFIX) ? name.slice(DETAIL_PREFIX.length) : name}: ${value}`);
  }
  lines.push(
    counted === 'no'
      ? 'counted: no (dry query)'
      : 'counted: unknown: the daemon does not take dry queries (an older quotapolicy?), so this request may have been counted',
  );
  return `${lines.join('\n')}\n`;
}
