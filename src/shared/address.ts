// How a rate-limit id that is a mail address is compared: as Postfix
// compares addresses in its lookup tables. Pure; used by the config loader
// (limits_by_id and exempt_ids keys) and by the rate-limit decision (counter
// keys, and the id sql_limits_by_id is asked for), so both sides agree.

/**
 * The form an id is compared and counted under. An id with an @ is a mail
 * address (a sender, or a SASL name like user@example.org): its domain is
 * folded to lower case, as DNS names compare, and its local part too when
 * `foldLocalPart` (Postfix folds lookup keys to lower case, so to Postfix
 * Big@Example.org and big@example.org are one sender). The split is at the
 * last @, as Postfix splits a quoted local part that contains one. An id
 * without an @ (a SASL name, an IP address or network) is left as it is.
 * Idempotent: addressKey(addressKey(x)) === addressKey(x).
 */
export function addressKey(id: string, foldLocalPart: boolean): string {
  const at = id.lastIndexOf('@');
  if (at === -1) return id;
  const local = id.slice(0, at);
  return `${foldLocalPart ? local.toLowerCase() : local}@${id.slice(at + 1).toLowerCase()}`;
}
