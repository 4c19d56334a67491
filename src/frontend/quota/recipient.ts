// Recipient address -> local Unix user name, the way Postfix local(8) does it:
// the local part, the extension cut at the first recipient_delimiter character,
// case folded. Pure: no lookups here.
import { isUnixName } from '../../shared/unix-name.js';

export interface RecipientRules {
  /** Each character starts an extension ("" = none). */
  delimiters: string;
  /** Local domains, lower case; empty = every domain. */
  domains: ReadonlySet<string>;
}

export type RecipientResult = { ok: true; user: string } | { ok: false; reason: string };

/** Postfix split_addr(): never split these; with "-" as a delimiter, not owner-foo or foo-request either. */
const NEVER_SPLIT = new Set(['postmaster', 'mailer-daemon', 'double-bounce']);

export function stripExtension(local: string, delimiters: string): string {
  if (delimiters === '' || NEVER_SPLIT.has(local)) return local;
  if (delimiters.includes('-') && (local.startsWith('owner-') || (local.length > 8 && local.endsWith('-request'))))
    return local;
  let cut = local.length;
  for (const ch of delimiters) {
    const at = local.indexOf(ch);
    if (at !== -1 && at < cut) cut = at;
  }
  // A delimiter in first place does not split ("+foo" stays "+foo").
  return cut === 0 ? local : local.slice(0, cut);
}

export function recipientToUser(recipient: string, rules: RecipientRules): RecipientResult {
  const at = recipient.lastIndexOf('@');
  const domain = at === -1 ? '' : recipient.slice(at + 1).toLowerCase();
  if (rules.domains.size > 0 && !rules.domains.has(domain)) return { ok: false, reason: 'domain is not local' };
  const local = stripExtension((at === -1 ? recipient : recipient.slice(0, at)).toLowerCase(), rules.delimiters);
  if (!isUnixName(local)) return { ok: false, reason: 'local part is not a Unix user name' };
  return { ok: true, user: local };
}
