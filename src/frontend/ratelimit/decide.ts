// Rate-limit decisions, pure: who is counted, how many events (or bytes),
// against which limits. The window test itself (store.ts breaks()) runs
// inside each store, atomically with the recording.
import type { PolicyRequest } from '../protocol/parser.js';
import { inNetworks, ipGroup } from './net.js';
import type { Network } from '../../shared/network.js';
import { addressKey } from '../../shared/address.js';

export type Limit = readonly [count: number, seconds: number];
export type CountMode = 'rcpt' | 'data_recipients' | 'data_messages';
export type IdKind = 'sasl' | 'sender' | 'ip';

export interface RateRules {
  limits: readonly Limit[];
  /** Keys as addressKey() makes them (with foldLocalPart), like exemptIds. */
  limitsById: ReadonlyMap<string, readonly Limit[]>;
  /** Default windows per identity kind, over `limits`, under limitsById. */
  limitsByKind: Readonly<Partial<Record<IdKind, readonly Limit[]>>>;
  /** Windows for every counted request together (key SERVER_KEY). */
  serverLimits: readonly Limit[];
  /** Windows [bytes, seconds] per id (keys "bytes:KIND:ID"). */
  volumeLimits: readonly Limit[];
  /** Keys as limitsById's. */
  volumeLimitsById: ReadonlyMap<string, readonly Limit[]>;
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

/**
 * One store call: n events (or bytes) against every bucket, all or nothing.
 * record=false only looks (the early test of a declared size): it never
 * counts, whatever the caller's commit.
 */
export interface Step {
  n: number;
  buckets: Bucket[];
  record: boolean;
  /** What n is, for log lines: "events", "bytes", "declared bytes". */
  unit: string;
}

export type Subject =
  | { applies: false; reason: string }
  | {
      applies: true;
      id: string;
      idKind: IdKind;
      /** Run in order; the first refusal ends the request (a step never records after another refused). */
      steps: Step[];
      /** The id's own keys (count and volume): a refusal under one of them answers hold_action. */
      ownKeys: string[];
    };

/** The key of server_limits' bucket: every counted request, whoever sent it. */
export const SERVER_KEY = 'all:';
/** The prefix of a volume key: "bytes:" + the id's own key. */
export const VOLUME_PREFIX = 'bytes:';

const DATA_STATES = new Set(['DATA', 'BDAT']);
const END_OF_MESSAGE = 'END-OF-MESSAGE';

/** The size attribute as Postfix sends it: a non-negative integer; anything else is unknown (0). */
function sizeOf(req: PolicyRequest): number {
  const v = req.get('size') ?? '';
  const n = /^\d{1,15}$/.test(v) ? Number(v) : 0;
  return n;
}

/**
 * Which identity a request is counted under: SASL user, then sender, then
 * client IP (as policyd-rate-limit). An id that is a mail address comes back
 * as addressKey() makes it, the form it is counted, looked up and exempted under.
 */
export function identify(req: PolicyRequest, r: RateRules): { id: string; kind: IdKind } | undefined {
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

/** The windows an id's events are counted against: sql_limits_by_id, limits_by_id, limits_by_kind, limits. */
export function idLimitsFor(
  r: RateRules,
  who: { id: string; kind: IdKind },
  client: string,
  fromDb?: readonly Limit[],
): { limits: readonly Limit[]; source: string } {
  if (fromDb !== undefined) return { limits: fromDb, source: 'sql_limits_by_id' };
  // limits_by_id may name a client by its own address even when it is counted in a group.
  const byId = r.limitsById.get(who.id) ?? (who.kind === 'ip' && client !== '' ? r.limitsById.get(client) : undefined);
  if (byId !== undefined) return { limits: byId, source: 'limits_by_id' };
  const byKind = r.limitsByKind[who.kind];
  if (byKind !== undefined) return { limits: byKind, source: `limits_by_kind.${who.kind}` };
  return { limits: r.limits, source: 'limits' };
}

/** The windows an id's bytes are counted against: volume_limits_by_id, else volume_limits. */
export function volumeLimitsFor(
  r: RateRules,
  who: { id: string; kind: IdKind },
  client: string,
): { limits: readonly Limit[]; source: string } {
  const byId =
    r.volumeLimitsById.get(who.id) ?? (who.kind === 'ip' && client !== '' ? r.volumeLimitsById.get(client) : undefined);
  return byId !== undefined
    ? { limits: byId, source: 'volume_limits_by_id' }
    : { limits: r.volumeLimits, source: 'volume_limits' };
}

const hasVolume = (r: RateRules): boolean => r.volumeLimits.length > 0 || r.volumeLimitsById.size > 0;

/**
 * What this request would count, or why it is not counted.
 * `idLimits` are limits found for the id outside the config (sql_limits_by_id).
 *
 * Events are counted where count_mode says (RCPT, or DATA/BDAT), with every
 * bucket (the id's, the domains', server_limits') in one atomic step. Bytes
 * are counted at END-OF-MESSAGE, where `size` is the real size: exactly the
 * messages that pass there, once each. Where events are counted, a declared
 * size (MAIL FROM SIZE=) is first looked at without counting, so a message
 * that cannot fit is refused before it is sent; a size of 0 or none (not
 * declared) looks at 1 byte: only a window already full refuses.
 */
export function subject(req: PolicyRequest, r: RateRules, idLimits?: readonly Limit[]): Subject {
  if (req.get('request') !== 'smtpd_access_policy')
    return { applies: false, reason: 'not an smtpd_access_policy request' };
  const state = (req.get('protocol_state') ?? '').toUpperCase();
  const atEnd = state === END_OF_MESSAGE && hasVolume(r);
  const counting = r.countMode === 'rcpt' ? state === 'RCPT' : DATA_STATES.has(state);
  if (!counting && !atEnd)
    return {
      applies: false,
      reason: `count_mode ${r.countMode}: state ${state || '(none)'} not counted${hasVolume(r) ? ' (bytes are counted at END-OF-MESSAGE)' : ''}`,
    };
  const who = identify(req, r);
  if (who === undefined) return { applies: false, reason: 'no identity to count' };
  const client = req.get('client_address') ?? '';
  if (r.exemptIds.has(who.id) || (client !== '' && inNetworks(client, r.exemptNetworks)))
    return { applies: false, reason: 'exempt' };
  const ownKey = `${who.kind}:${who.id}`;
  const volumeKey = `${VOLUME_PREFIX}${ownKey}`;
  const volume = volumeLimitsFor(r, who, client).limits;
  const steps: Step[] = [];
  if (atEnd) {
    if (volume.length > 0) {
      const size = sizeOf(req);
      // Postfix always sends the real size here; a request without one has nothing to count.
      if (size === 0) return { applies: false, reason: 'END-OF-MESSAGE without a size: no bytes counted' };
      steps.push({ n: size, buckets: [{ key: volumeKey, limits: volume }], record: true, unit: 'bytes' });
    }
    return { applies: true, id: who.id, idKind: who.kind, steps, ownKeys: [ownKey, volumeKey] };
  }
  if (volume.length > 0)
    steps.push({
      n: Math.max(sizeOf(req), 1),
      buckets: [{ key: volumeKey, limits: volume }],
      record: false,
      unit: 'declared bytes',
    });
  const rc = Number(req.get('recipient_count') ?? '0');
  const n = r.countMode === 'data_recipients' ? Math.max(Number.isSafeInteger(rc) ? rc : 0, 1) : 1;
  const buckets: Bucket[] = [{ key: ownKey, limits: idLimitsFor(r, who, client, idLimits).limits }];
  const rcptDomain = domainOf(req.get('recipient') ?? '');
  const rd = r.limitsByRecipientDomain.get(rcptDomain);
  if (rd) buckets.push({ key: `rcpt_domain:${rcptDomain}`, limits: rd });
  const senderDomain = domainOf(req.get('sender') ?? '');
  const sd = r.limitsBySenderDomain.get(senderDomain);
  if (sd) buckets.push({ key: `sender_domain:${senderDomain}`, limits: sd });
  buckets.push({ key: SERVER_KEY, limits: r.serverLimits });
  const counted = buckets.filter((b) => b.limits.length > 0);
  if (counted.length > 0) steps.push({ n, buckets: counted, record: true, unit: 'events' });
  return { applies: true, id: who.id, idKind: who.kind, steps, ownKeys: [ownKey, volumeKey] };
}

/** The oldest event any bucket still needs, for clean: seconds. */
export function longestWindow(r: RateRules): number {
  const all = [
    r.limits,
    r.serverLimits,
    r.volumeLimits,
    ...Object.values(r.limitsByKind),
    ...r.limitsById.values(),
    ...r.volumeLimitsById.values(),
    ...r.limitsByRecipientDomain.values(),
    ...r.limitsBySenderDomain.values(),
  ];
  return Math.max(0, ...all.flat().map(([, s]) => s));
}
