// Rate-limit decisions, pure: who is counted, how many events, against which
// limits. The window test itself (store.ts breaks()) runs inside each store,
// atomically with the recording.
import type { PolicyRequest } from '../protocol/parser.js';
import { inNetworks, ipGroup } from './net.js';
import type { Network } from '../../shared/network.js';
import { addressKey } from '../../shared/address.js';

export type Limit = readonly [count: number, seconds: number];
export type CountMode = 'rcpt' | 'data_recipients' | 'data_messages';

export interface RateRules {
  limits: readonly Limit[];
  /** Keys as addressKey() makes them (with foldLocalPart), like exemptIds. */
  limitsById: ReadonlyMap<string, readonly Limit[]>;
  bySasl: boolean;
  bySender: boolean;
  byIp: boolean;
  limitedNetworks: readonly Network[];
  ipv4Prefix: number;
  ipv6Prefix: number;
  countMode: CountMode;
  /** Addresses compare with their local part folded to lower case (addressKey). */
  foldLocalPart: boolean;
  exemptIds: ReadonlySet<string>;
  exemptNetworks: readonly Network[];
  limitsByRecipientDomain: ReadonlyMap<string, readonly Limit[]>;
  limitsBySenderDomain: ReadonlyMap<string, readonly Limit[]>;
}

/** One counter: a key and the windows it must stay within. */
export interface Bucket {
  key: string;
  limits: readonly Limit[];
}

export type Subject =
  | { applies: false; reason: string }
  | { applies: true; id: string; idKind: 'sasl' | 'sender' | 'ip'; n: number; buckets: Bucket[] };

const DATA_STATES = new Set(['DATA', 'BDAT']);

/**
 * Which identity a request is counted under: SASL user, then sender, then
 * client IP (as policyd-rate-limit). An id that is a mail address comes back
 * as addressKey() makes it, the form it is counted, looked up and exempted under.
 */
export function identify(req: PolicyRequest, r: RateRules): { id: string; kind: 'sasl' | 'sender' | 'ip' } | undefined {
  const sasl = req.get('sasl_username') ?? '';
  const sender = req.get('sender') ?? '';
  const client = req.get('client_address') ?? '';
  if (r.bySasl && sasl !== '') return { id: addressKey(sasl, r.foldLocalPart), kind: 'sasl' };
  if (r.bySender && sender !== '') return { id: addressKey(sender, r.foldLocalPart), kind: 'sender' };
  if (r.byIp && client !== '' && inNetworks(client, r.limitedNetworks)) {
    const group = ipGroup(client, r.ipv4Prefix, r.ipv6Prefix);
    if (group !== undefined) return { id: group, kind: 'ip' };
  }
  return undefined;
}

const domainOf = (addr: string): string =>
  addr.includes('@') ? addr.slice(addr.lastIndexOf('@') + 1).toLowerCase() : '';

/**
 * What this request would count, or why it is not counted.
 * `idLimits` are limits found for the id outside the config (sql_limits_by_id).
 */
export function subject(req: PolicyRequest, r: RateRules, idLimits?: readonly Limit[]): Subject {
  if (req.get('request') !== 'smtpd_access_policy')
    return { applies: false, reason: 'not an smtpd_access_policy request' };
  const state = (req.get('protocol_state') ?? '').toUpperCase();
  const atData = DATA_STATES.has(state);
  if (r.countMode === 'rcpt' ? state !== 'RCPT' : !atData)
    return { applies: false, reason: `count_mode ${r.countMode}: state ${state || '(none)'} not counted` };
  const who = identify(req, r);
  if (who === undefined) return { applies: false, reason: 'no identity to count' };
  const client = req.get('client_address') ?? '';
  if (r.exemptIds.has(who.id) || (client !== '' && inNetworks(client, r.exemptNetworks)))
    return { applies: false, reason: 'exempt' };
  const rc = Number(req.get('recipient_count') ?? '0');
  const n = r.countMode === 'data_recipients' ? Math.max(Number.isSafeInteger(rc) ? rc : 0, 1) : 1;
  // limits_by_id may name a client by its own address even when it is counted in a group.
  const byId = r.limitsById.get(who.id) ?? (who.kind === 'ip' ? r.limitsById.get(client) : undefined);
  const buckets: Bucket[] = [{ key: `${who.kind}:${who.id}`, limits: idLimits ?? byId ?? r.limits }];
  const rcptDomain = domainOf(req.get('recipient') ?? '');
  const rd = r.limitsByRecipientDomain.get(rcptDomain);
  if (rd) buckets.push({ key: `rcpt_domain:${rcptDomain}`, limits: rd });
  const senderDomain = domainOf(req.get('sender') ?? '');
  const sd = r.limitsBySenderDomain.get(senderDomain);
  if (sd) buckets.push({ key: `sender_domain:${senderDomain}`, limits: sd });
  return { applies: true, id: who.id, idKind: who.kind, n, buckets: buckets.filter((b) => b.limits.length > 0) };
}

/** The oldest event any bucket still needs, for clean: seconds. */
export function longestWindow(r: RateRules): number {
  const all = [
    r.limits,
    ...r.limitsById.values(),
    ...r.limitsByRecipientDomain.values(),
    ...r.limitsBySenderDomain.values(),
  ];
  return Math.max(0, ...all.flat().map(([, s]) => s));
}
