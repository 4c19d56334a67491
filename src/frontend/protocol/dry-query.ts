// The dry query: how `quotapolicy query` asks the daemon to count nothing and
// explain its answer. Here, not in the service, so that the CLI loads no more.

/**
 * The attribute `quotapolicy query` sends, with the value QUERY_DRY: count
 * nothing, and say which check answered and why. Postfix sends only its own
 * fixed set of attribute names (SMTPD_POLICY_README), whatever an SMTP client
 * does, so only someone who connects to the policy socket directly can send
 * it; such a request is no mail, and not counting it harms nobody. The
 * explanation (users, quota and rate numbers) is given only on unix sockets,
 * which socket_mode keeps to their owner and group (never others); on inet
 * listeners, open to any local user or any host the firewall lets in, it is
 * withheld. Its reply carries attributes Postfix never asks for: only a
 * request that sent this attribute gets them.
 */
export const QUERY_ATTRIBUTE = 'quotapolicy_query';
export const QUERY_DRY = 'dry';
/**
 * Postfix sends it with every policy request (2.2 and later: the message's
 * instance); `quotapolicy query` never does. Defence in depth: a request
 * carrying it came through Postfix, so QUERY_ATTRIBUTE in it (which only a
 * value with a line break in it could have put there) is ignored, and the
 * request counted as the mail it is.
 */
export const POSTFIX_ATTRIBUTE = 'instance';

export interface AttributeSource {
  get(name: string): string | undefined;
}

/**
 * What a request asks as a query: 'no' (mail: decide and count), 'dry',
 * 'forged' (QUERY_ATTRIBUTE in a request from Postfix: treated as mail), or
 * 'unknown' (a value quotapolicy query never sends: refused, nothing counted).
 */
export function queryKind(req: AttributeSource): 'no' | 'dry' | 'forged' | 'unknown' {
  const q = req.get(QUERY_ATTRIBUTE);
  if (q === undefined) return 'no';
  if (req.get(POSTFIX_ATTRIBUTE) !== undefined) return 'forged';
  return q === QUERY_DRY ? 'dry' : 'unknown';
}
