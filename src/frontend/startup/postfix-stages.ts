// Does Postfix ask this daemon at the stages the config answers? Pure: the
// text `postconf -x NAME...` printed in, findings out (./postconf.ts runs it).
// A count_mode or quota_states stage that no restriction list sends to this
// daemon is a check that silently never happens: count_mode data_messages
// with check_policy_service only in smtpd_recipient_restrictions counts
// nothing, and every message passes every limit.
import { posix } from 'node:path';
import { isIP } from 'node:net';
import { socketAddress } from '../../shared/config/checks.js';

/** The parameters read for each stage, and what Postfix's chroot and paths need. */
export const RCPT_LISTS = ['smtpd_relay_restrictions', 'smtpd_recipient_restrictions'] as const;
/** With smtpd_delay_reject = yes (the default), Postfix evaluates these at RCPT TO too (postconf(5)). */
export const DELAYED_LISTS = ['smtpd_client_restrictions', 'smtpd_helo_restrictions', 'smtpd_sender_restrictions'];
export const DATA_LISTS = ['smtpd_data_restrictions'] as const;
export const EOD_LISTS = ['smtpd_end_of_data_restrictions'] as const;
export const POSTCONF_PARAMS = [
  'queue_directory',
  'smtpd_delay_reject',
  'smtpd_restriction_classes',
  ...DELAYED_LISTS,
  ...RCPT_LISTS,
  ...DATA_LISTS,
  ...EOD_LISTS,
];
/** Restriction classes followed at most this deep: a class naming itself must not loop. */
export const MAX_CLASS_DEPTH = 8;
/** Restriction classes read at most: each is a postconf argument, and real configs have a handful. */
export const MAX_CLASSES = 64;
/** A restriction class name as postconf takes it (a main.cf parameter name). */
export const CLASS_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

/** `name = value` lines as postconf prints them (no -h); values are one line each. */
export function parsePostconf(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_.-]+) = ?(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

/** Tokens of a restriction list: separated by space or comma; `{ ... }` is one token (Postfix 3.0 syntax). */
export function tokens(list: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < list.length) {
    const c = list[i]!;
    if (/[\s,]/.test(c)) {
      i++;
    } else if (c === '{') {
      const end = list.indexOf('}', i);
      const stop = end === -1 ? list.length : end + 1;
      out.push(list.slice(i, stop));
      i = stop;
    } else {
      let j = i;
      while (j < list.length && !/[\s,{]/.test(list[j]!)) j++;
      out.push(list.slice(i, j));
      i = j;
    }
  }
  return out;
}

/**
 * The policy services a list calls, following restriction classes:
 * `check_policy_service unix:private/x` and `check_policy_service { inet:h:p, timeout=10s }`.
 */
export function policyServices(list: string, classes: ReadonlyMap<string, string>, depth = 0): string[] {
  const t = tokens(list);
  const out: string[] = [];
  for (let i = 0; i < t.length; i++) {
    const word = t[i]!;
    if (word.toLowerCase() === 'check_policy_service' && i + 1 < t.length) {
      const arg = t[++i]!;
      const service = arg.startsWith('{') ? tokens(arg.slice(1, -1))[0] : arg;
      if (service !== undefined) out.push(service);
    } else if (classes.has(word) && depth < MAX_CLASS_DEPTH) {
      out.push(...policyServices(classes.get(word)!, classes, depth + 1));
    }
  }
  return out;
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1']);
const ANY = new Set(['0.0.0.0', '::']);

/**
 * Is the Postfix endpoint `service` one of `listen`? Unix paths: a relative
 * one is relative to queue_directory (Postfix daemons run there); an absolute
 * one is taken as it is and, for a chrooted smtpd, inside queue_directory
 * (master.cf's chroot column is not read: either counts). inet: the same port
 * and host, or a listener on every address, or a host name other than
 * localhost (not resolved here: it may be this host, so no warning).
 */
export function reaches(service: string, listen: readonly string[], queueDir: string): boolean {
  const m = /^(unix|local|inet):(.*)$/.exec(service);
  if (!m) return false;
  const [, type, rest] = m;
  if (type !== 'inet') {
    const p = rest!;
    const candidates = p.startsWith('/') ? [p, posix.join(queueDir, p)] : [posix.join(queueDir, p)];
    const want = new Set(candidates.map((c) => posix.normalize(c)));
    return listen.some((l) => l.startsWith('unix:') && want.has(posix.normalize(l.slice(5))));
  }
  const hm = /^(?:\[(.+)\]|(.*)):(\d+)$/.exec(rest!);
  if (!hm) return false;
  const host = (hm[1] ?? hm[2]!).toLowerCase();
  const port = Number(hm[3]);
  return listen.some((l) => {
    if (!l.startsWith('inet:')) return false;
    const a = socketAddress(l);
    if (!('port' in a) || a.port !== port) return false;
    if (a.host === host || ANY.has(a.host)) return true;
    if (host === 'localhost') return LOOPBACK.has(a.host);
    return isIP(host) === 0;
  });
}

/** What to add to main.cf for the first listen entry (relative to queue_directory when it lies there). */
export function serviceFor(listen: readonly string[], queueDir: string): string {
  const first = listen[0] ?? '';
  if (!first.startsWith('unix:')) return first;
  const rel = posix.relative(queueDir, first.slice(5));
  return rel !== '' && !rel.startsWith('..') && !posix.isAbsolute(rel) ? `unix:${rel}` : first;
}

export interface StageConfig {
  listen: readonly string[];
  checks: readonly string[];
  quota_states: readonly string[];
  count_mode: string;
}

type Stage = 'RCPT' | 'DATA' | 'END-OF-MESSAGE';
const STAGE_LISTS: Record<Stage, string> = {
  RCPT: 'smtpd_recipient_restrictions',
  DATA: 'smtpd_data_restrictions',
  'END-OF-MESSAGE': 'smtpd_end_of_data_restrictions',
};

/** The lists Postfix consults at a stage, as the parameters say. */
function listsAt(stage: Stage, params: ReadonlyMap<string, string>): string[] {
  if (stage === 'DATA') return [...DATA_LISTS];
  if (stage === 'END-OF-MESSAGE') return [...EOD_LISTS];
  const delayed = (params.get('smtpd_delay_reject') ?? 'yes').toLowerCase() === 'yes';
  return [...RCPT_LISTS, ...(delayed ? DELAYED_LISTS : [])];
}

/**
 * One finding per check whose stages no list of `params` sends to this
 * daemon: the rate limit at its count_mode's stage; the quota check at none of
 * its quota_states (END-OF-MESSAGE alone missing is the README's optional
 * set-up: the RCPT check still runs). `params`: every POSTCONF_PARAMS value
 * and the restriction classes' own values.
 */
export function stageFindings(params: ReadonlyMap<string, string>, c: StageConfig): string[] {
  const queueDir = params.get('queue_directory') || '/var/spool/postfix';
  const classNames = (params.get('smtpd_restriction_classes') ?? '').split(/[\s,]+/).filter((n) => n !== '');
  const classes = new Map(classNames.filter((n) => params.has(n)).map((n) => [n, params.get(n)!]));
  const needs: { stages: Stage[]; why: string; other: string }[] = [];
  if (c.checks.includes('quota')) {
    const states = c.quota_states as Stage[];
    needs.push({
      stages: states,
      why: `quota_states is ${states.join(', ')}`,
      other: `change quota_states`,
    });
  }
  if (c.checks.includes('rate_limit')) {
    const data = c.count_mode !== 'rcpt';
    needs.push({
      stages: [data ? 'DATA' : 'RCPT'],
      why: `rate_limit.count_mode ${c.count_mode} counts at ${data ? 'DATA' : 'RCPT TO'}`,
      other: data ? 'set count_mode rcpt' : 'set count_mode data_recipients or data_messages',
    });
  }
  const out: string[] = [];
  const want = serviceFor(c.listen, queueDir);
  for (const n of needs) {
    const lists = n.stages.flatMap((s) => listsAt(s, params));
    const called = lists.some((l) =>
      policyServices(params.get(l) ?? '', classes).some((s) => reaches(s, c.listen, queueDir)),
    );
    if (called) continue;
    const check = n.why.startsWith('quota') ? 'the quota check' : 'the rate limit';
    out.push(
      `${n.why}, but Postfix never asks this daemon there: no check_policy_service for ${c.listen.join(', ')} ` +
        `in ${lists.join(', ')} (postconf, queue_directory ${queueDir}), so ${check} never runs: ` +
        `add "check_policy_service ${want}" to ${STAGE_LISTS[n.stages[0]!]}, or ${n.other}`,
    );
  }
  return out;
}
