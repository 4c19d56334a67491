// Text a client chose (rate-limit keys), made safe for one line of a mail.

/**
 * A key, or a line naming keys, on one line of a report or an alert. Keys
 * hold whatever a client sent (a long one arrives hashed: readable head,
 * SHA-256, length); control characters, line separators and backslash are
 * escaped, so none can break the table or put a line of its own (a lone "."
 * or a bare CR) into the mail.
 */
export function shownKey(key: string): string {
  return key.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\\]/gu, (c) =>
    c === '\\'
      ? '\\\\'
      : c.charCodeAt(0) <= 0xff
        ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`
        : `\\u${c.charCodeAt(0).toString(16)}`,
  );
}
