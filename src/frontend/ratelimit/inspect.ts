// What `quotapolicy ratelimit show|reset KIND:ID` acts on, pure: which
// counter key an admin's id names (the key decide.ts counts under), which
// windows apply to it, and where each window stands at a given time.
import { idLimitsFor, volumeLimitsFor, SERVER_KEY, VOLUME_PREFIX, type Limit, type RateRules } from './decide.js';
import { inNetworks, ipGroup } from './net.js';
import { parseIp } from '../../shared/network.js';
import { addressKey } from '../../shared/address.js';
import type { EventRow } from './store.js';
import { QpError } from '../../shared/errors.js';

/** The kinds of counter keys decide.ts makes ("KIND:ID"; "all:" for server_limits, "bytes:KIND:ID" for volumes). */
export const KEY_KINDS = ['sasl', 'sender', 'ip', 'rcpt_domain', 'sender_domain', 'all', 'bytes'] as const;
export type KeyKind = (typeof KEY_KINDS)[number];

export class KeyIdError extends QpError {
  override name = 'KeyIdError';
  constructor(message: string) {
    super('QP_USAGE', message);
  }
}

export interface Target {
  kind: KeyKind;
  /** The id as it is counted (addressKey() for addresses, the client's group for ip, lower case for domains). */
  id: string;
  /** The counter key, as decide.ts makes it (the store maps it through storedKey()). */
  key: string;
  /** For ip given as one address: that address (limits_by_id may name it, exempt_networks may hold it). */
  address?: string;
  /** For bytes: the id whose volume it is. */
  of?: Target;
}

const KINDS_TEXT = KEY_KINDS.join(', ');

/** Ways to write a text that names no kind, for the error. */
function suggest(text: string): string {
  if (parseIp(text.split('/')[0]!) !== undefined) return `ip:${text}`;
  if (text.includes('@')) return `sender:${text} or sasl:${text}`;
  return `sasl:${text}, or rcpt_domain:${text} / sender_domain:${text} for a domain`;
}

/**
 * "KIND:ID" -> the key it is counted under with these rules. The kind is
 * everything before the first colon (so "ip:2001:db8::1" is an IPv6 address).
 * Throws KeyIdError naming what is wrong and what to write instead.
 */
export function parseTarget(text: string, r: RateRules): Target {
  const colon = text.indexOf(':');
  const kind = colon === -1 ? '' : text.slice(0, colon);
  if (!(KEY_KINDS as readonly string[]).includes(kind)) {
    const what = colon === -1 ? `"${text}" names no kind` : `unknown kind "${kind}" in "${text}"`;
    throw new KeyIdError(
      `${what}: write KIND:ID, e.g. ${suggest(colon === -1 || parseIp(text) !== undefined ? text : text.slice(colon + 1))} (kinds: ${KINDS_TEXT})`,
    );
  }
  const raw = text.slice(colon + 1);
  if (kind === 'all') {
    if (raw !== '') throw new KeyIdError(`all: is one key for every id together: write "all:", nothing after it`);
    return { kind: 'all', id: '', key: SERVER_KEY };
  }
  if (raw === '') throw new KeyIdError(`"${text}" names no id after "${kind}:"`);
  if (kind === 'bytes') {
    const of = parseTarget(raw, r);
    if (of.kind !== 'sasl' && of.kind !== 'sender' && of.kind !== 'ip')
      throw new KeyIdError(
        `bytes:${raw}: volumes are counted per id: write bytes:sasl:NAME, bytes:sender:ADDRESS or bytes:ip:ADDRESS`,
      );
    return { kind: 'bytes', id: of.id, key: `${VOLUME_PREFIX}${of.key}`, of };
  }
  if (/[\r\n]/.test(raw)) throw new KeyIdError(`"${kind}:" id contains a line break: no request can carry one`);
  const k = kind as Exclude<KeyKind, 'all' | 'bytes'>; // those two returned above
  switch (k) {
    case 'sasl':
    case 'sender': {
      const id = addressKey(raw, r.foldLocalPart);
      return { kind: k, id, key: `${k}:${id}` };
    }
    case 'ip': {
      const [addr, bits] = raw.split('/') as [string, string | undefined];
      const ip = parseIp(addr);
      if (ip === undefined) throw new KeyIdError(`ip:${raw} is not an IP address or network`);
      const prefix = ip.family === 4 ? r.ipv4Prefix : r.ipv6Prefix;
      const group = ipGroup(addr, r.ipv4Prefix, r.ipv6Prefix)!;
      if (bits === undefined) return { kind: k, id: group, key: `ip:${group}`, address: addr };
      // A network must be one group exactly as clients are counted in it.
      if (!/^\d{1,3}$/.test(bits) || Number(bits) !== prefix || group.split('/')[0] !== ipGroup(addr, 32, 128)) {
        throw new KeyIdError(
          `ip:${raw}: IPv${ip.family} clients are counted per /${prefix} (ipv${ip.family}_prefix), as ${group}: give ip:${group} or one client address`,
        );
      }
      return { kind: k, id: group, key: `ip:${group}` };
    }
    case 'rcpt_domain':
    case 'sender_domain': {
      if (raw.includes('@'))
        throw new KeyIdError(`${k}:${raw}: takes a domain, not an address (sender:${raw} counts the address)`);
      const id = raw.toLowerCase();
      return { kind: k, id, key: `${k}:${id}` };
    }
  }
}

export interface Applying {
  /** The windows requests under the key must stay within; undefined: no setting limits this key. [] = unlimited. */
  limits: readonly Limit[] | undefined;
  /** The setting they come from. */
  source: string;
  /** Why requests are not counted under the key with these rules, if they are not. */
  notCounted: string[];
}

/**
 * The windows that apply to a key, as subject() picks them: for ids,
 * `fromDb` (sql_limits_by_id's answer) over limits_by_id over limits.
 */
export function applying(t: Target, r: RateRules, fromDb?: readonly Limit[]): Applying {
  const notCounted: string[] = [];
  if (t.kind === 'all') {
    if (r.serverLimits.length === 0) notCounted.push('server_limits is empty');
    return { limits: r.serverLimits.length > 0 ? r.serverLimits : undefined, source: 'server_limits', notCounted };
  }
  if (t.kind === 'bytes') {
    const of = t.of!;
    const inner = applying(of, r);
    const v = volumeLimitsFor(r, { id: of.id, kind: of.kind as 'sasl' | 'sender' | 'ip' }, of.address ?? '');
    if (v.source === 'volume_limits' && v.limits.length === 0) inner.notCounted.push('volume_limits is empty');
    return {
      limits: v.source === 'volume_limits' && v.limits.length === 0 ? undefined : v.limits,
      source: v.source,
      notCounted: inner.notCounted,
    };
  }
  if (t.kind === 'rcpt_domain' || t.kind === 'sender_domain') {
    const map = t.kind === 'rcpt_domain' ? r.limitsByRecipientDomain : r.limitsBySenderDomain;
    const setting = t.kind === 'rcpt_domain' ? 'limits_by_recipient_domain' : 'limits_by_sender_domain';
    const limits = map.get(t.id);
    if (limits === undefined) notCounted.push(`${t.id} is not in ${setting}`);
    return { limits, source: setting, notCounted };
  }
  if (t.kind === 'sasl' && !r.bySasl) notCounted.push('limit_by_sasl is off');
  if (t.kind === 'sender' && !r.bySender) notCounted.push('limit_by_sender is off');
  if (t.kind === 'ip') {
    if (!r.byIp) notCounted.push('limit_by_ip is off');
    const addr = t.address ?? t.id.split('/')[0]!;
    if (!inNetworks(addr, r.limitedNetworks)) notCounted.push(`${t.address ?? t.id} is not in limited_networks`);
    if (t.address !== undefined && inNetworks(t.address, r.exemptNetworks))
      notCounted.push(`${t.address} is in exempt_networks`);
  } else if (r.exemptIds.has(t.id)) notCounted.push(`${t.id} is in exempt_ids`);
  return { ...idLimitsFor(r, { id: t.id, kind: t.kind }, t.address ?? '', fromDb), notCounted };
}

export interface WindowState {
  limit: Limit;
  /** Events in the window at nowSec. */
  used: number;
  /** One more event would break it. */
  full: boolean;
  /** When full: the first second at which one more event fits again; null: never (a count of 0). */
  freesAt?: number | null;
}

/**
 * Where each window stands at nowSec, given a key's events (oldest first,
 * at least the longest window's). A window [count, seconds] holds the events
 * at or after nowSec - seconds (store.ts breaks(); events stamped later than
 * nowSec, from a host whose clock runs ahead, count as the stores count them).
 */
export function windowStates(events: readonly EventRow[], limits: readonly Limit[], nowSec: number): WindowState[] {
  return limits.map((limit) => {
    const [count, seconds] = limit;
    const inside = events.filter((e) => e.at >= nowSec - seconds);
    let used = 0;
    for (const e of inside) used += e.n;
    if (used + 1 <= count) return { limit, used, full: false };
    if (count === 0) return { limit, used, full: true, freesAt: null };
    // Oldest first: the window frees up once enough of them have left it (an event at `at` leaves it at at + seconds + 1).
    let left = used;
    for (const e of inside) {
      left -= e.n;
      if (left + 1 <= count) return { limit, used, full: true, freesAt: Math.max(e.at + seconds + 1, nowSec) };
    }
    return { limit, used, full: true, freesAt: null }; // unreachable: with every event gone, 0 + 1 <= count
  });
}
