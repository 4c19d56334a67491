// Recipient -> the local users Postfix would deliver it to, through its
// virtual_alias_maps (cleanup(8), every recipient) and alias_maps (local(8),
// local domains only). Pure apart from the injected map reader: the order of
// keys, extensions, recursion, loops and limits are decided here; running
// postmap/postalias is ./postfix-maps.ts.
import { stripExtension } from './recipient.js';

/**
 * Levels of aliases followed. Postfix allows 1000 (virtual_alias_recursion_limit), but real
 * nests are two or three deep, and each level costs a postmap run per map.
 */
export const MAX_ALIAS_DEPTH = 8;
/**
 * Addresses one recipient may expand to, over all levels. A list alias bigger than this is
 * a mailing list: checking every member's quota per RCPT would cost a quota run each.
 */
export const MAX_ALIAS_FANOUT = 64;
/** SMTP paths are at most 256 octets (RFC 5321 4.5.3.1.3); a longer key is no address Postfix accepted. */
export const MAX_KEY_LENGTH = 256;
/** What an alias may name that is no address: delivered by local(8) itself, never to a mailbox we can check. */
const UNCHECKED = /^("?\||"?\/|:include:)/i;

export type MapKind = 'alias' | 'virtual';

/**
 * Looks keys up in every map of a kind. For each map, in the order Postfix searches them,
 * the values of the keys it holds. Rejects (with a reason) when a map cannot be read.
 */
export interface MapReader {
  lookup(kind: MapKind, keys: readonly string[]): Promise<ReadonlyMap<string, string>[]>;
}

export interface ExpandRules {
  /** recipient_delimiter characters ("" = none). */
  delimiters: string;
  /** Is this domain delivered by local(8)? (the `domains` setting: empty = every domain) */
  isLocal(domain: string): boolean;
}

export type Expansion =
  /** No alias names the recipient: it is its own user (or no one). */
  | { alias: false }
  | {
      alias: true;
      /** Local user names reached (deduplicated), to be checked like a recipient's. */
      users: string[];
      /** Addresses in other domains: delivered elsewhere, no quota of ours. */
      remote: number;
      /** Files, commands and :include: lists: local(8) delivers them itself (see README). */
      unchecked: string[];
    }
  | { error: string };

interface Node {
  /** Local part with its extension, lower case. */
  local: string;
  /** null: a bare name. */
  domain: string | null;
  /** A bare name from aliases(5) is expanded by local(8) in alias_maps only, never resubmitted. */
  fromAliases: boolean;
}

/** Postfix's table search: the first key (in order) that any map (in order) holds. */
function first(keys: readonly string[], found: readonly ReadonlyMap<string, string>[]): string | undefined {
  for (const k of keys)
    for (const m of found) {
      const v = m.get(k);
      if (v !== undefined) return v;
    }
  return undefined;
}

/** With the extension, then without (Postfix tries both, in that order). */
function localForms(local: string, delimiters: string): string[] {
  const base = stripExtension(local, delimiters);
  return base === local ? [local] : [local, base];
}

/** virtual(5) TABLE SEARCH ORDER: user+ext@domain, user@domain, user+ext, user (local domains only), @domain. */
export function virtualKeys(n: Node, rules: ExpandRules): string[] {
  const forms = localForms(n.local, rules.delimiters);
  if (n.domain === null) return forms;
  const keys = forms.map((f) => `${f}@${n.domain}`);
  if (rules.isLocal(n.domain)) keys.push(...forms);
  keys.push(`@${n.domain}`);
  return keys;
}

/** aliases(5) via local(8): the local part with the extension, then without. */
export function aliasKeys(n: Node, rules: ExpandRules): string[] {
  return localForms(n.local, rules.delimiters);
}

const usable = (k: string): boolean => k.length <= MAX_KEY_LENGTH && !/[\0-\x1f\x7f]/.test(k);

/** A map value: targets separated by commas or spaces; "double quotes" keep a command with its arguments together. */
export function splitTargets(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of value) {
    if (c === '"') quoted = !quoted;
    if (!quoted && (c === ',' || /\s/.test(c))) {
      if (cur !== '') out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur !== '') out.push(cur);
  return out;
}

function nodeOf(target: string, fromAliases: boolean): Node {
  const t = target.toLowerCase().replace(/^"(.*)"(@|$)/, '$1$2');
  const at = t.lastIndexOf('@');
  return at === -1
    ? { local: t, domain: null, fromAliases }
    : { local: t.slice(0, at), domain: t.slice(at + 1), fromAliases: false };
}

/**
 * Expands one recipient level by level: each level's virtual lookups are one
 * reader call (one postmap run per map), then its alias lookups another. An
 * address met again (an alias naming itself, as `bob: bob, archive`, or a loop)
 * is not expanded again: it is a user, as local(8) delivers an alias that
 * names itself.
 */
export async function expandRecipient(recipient: string, rules: ExpandRules, reader: MapReader): Promise<Expansion> {
  // local(8) sees one name whether it came bare or in a local domain: so does the loop check.
  const idOf = (n: Node): string => (n.domain === null || rules.isLocal(n.domain) ? n.local : `${n.local}@${n.domain}`);
  const top = nodeOf(recipient, false);
  const seen = new Set([idOf(top)]);
  const users = new Set<string>();
  const unchecked: string[] = [];
  let remote = 0;
  let addresses = 0;
  let aliased = false;
  let level: Node[] = [top];
  const terminal = (n: Node): void => {
    if (n.domain !== null && !rules.isLocal(n.domain)) remote++;
    else users.add(stripExtension(n.local, rules.delimiters));
  };
  try {
    for (let depth = 0; level.length > 0; depth++) {
      if (depth === MAX_ALIAS_DEPTH) return { error: `aliases nested deeper than ${MAX_ALIAS_DEPTH} levels` };
      const next: Node[] = [];
      const expand = (value: string, fromAliases: boolean): string | undefined => {
        aliased = true;
        for (const t of splitTargets(value)) {
          if (UNCHECKED.test(t)) {
            unchecked.push(t);
            continue;
          }
          if (++addresses > MAX_ALIAS_FANOUT) return `alias expands to more than ${MAX_ALIAS_FANOUT} addresses`;
          const n = nodeOf(t, fromAliases);
          if (seen.has(idOf(n))) terminal(n);
          else {
            seen.add(idOf(n));
            next.push(n);
          }
        }
        return undefined;
      };
      const resubmitted = level.filter((n) => !n.fromAliases);
      const vkeys = new Map(resubmitted.map((n) => [n, virtualKeys(n, rules).filter(usable)]));
      const vfound = await lookup(reader, 'virtual', [...vkeys.values()].flat());
      const toAliases: Node[] = [];
      for (const n of level) {
        const v = n.fromAliases ? undefined : first(vkeys.get(n)!, vfound);
        if (v !== undefined) {
          const tooMany = expand(v, false);
          if (tooMany !== undefined) return { error: tooMany };
        } else if (n.domain === null || rules.isLocal(n.domain)) toAliases.push(n);
        else terminal(n);
      }
      const akeys = new Map(toAliases.map((n) => [n, aliasKeys(n, rules).filter(usable)]));
      const afound = await lookup(reader, 'alias', [...akeys.values()].flat());
      for (const n of toAliases) {
        const v = first(akeys.get(n)!, afound);
        if (v === undefined) terminal(n);
        else {
          const tooMany = expand(v, true);
          if (tooMany !== undefined) return { error: tooMany };
        }
      }
      level = next;
    }
  } catch (e) {
    return { error: (e as Error).message };
  }
  return aliased ? { alias: true, users: [...users], remote, unchecked } : { alias: false };
}

function lookup(reader: MapReader, kind: MapKind, keys: string[]): Promise<readonly ReadonlyMap<string, string>[]> {
  return keys.length === 0 ? Promise.resolve([]) : reader.lookup(kind, [...new Set(keys)]);
}
