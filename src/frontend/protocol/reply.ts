// Postfix policy protocol, write side: exactly "action=TEXT\n\n". CR and LF in
// the text would end the reply early or inject a second one, so they go.
// Only a dry `quotapolicy query` (policy/query.ts) gets more attributes:
// Postfix never sends the attribute that asks for them, and would take an
// attribute other than action in its reply for an error.

/** A reply with attributes after the action (a dry query's explanation). */
export interface DetailedReply {
  action: string;
  /** Names are fixed by the front; values are escaped to printable ASCII (replyValue). */
  attrs: readonly (readonly [name: string, value: string])[];
}
export type Reply = string | DetailedReply;

/**
 * A value as printable ASCII, one line: "\" as "\\", any other character
 * outside 0x20-0x7e as "\u{HEX}" (so the reply's characters are its bytes,
 * as connection.ts counts them). decodeReplyValue() reverses it.
 */
export function replyValue(v: string): string {
  return v.replace(/[^\x20-\x5b\x5d-\x7e]/gu, (c) => (c === '\\' ? '\\\\' : `\\u{${c.codePointAt(0)!.toString(16)}}`));
}

export function decodeReplyValue(v: string): string {
  return v.replace(/\\(\\|u\{([0-9a-f]{1,6})\})/g, (_m: string, _esc: string, hex: string | undefined) =>
    hex === undefined ? '\\' : String.fromCodePoint(parseInt(hex, 16)),
  );
}

const oneLine = (action: string): string => (/[\r\n]/.test(action) ? action.replace(/[\r\n]+/g, ' ') : action);

/** The last plain action formatted and its reply: most replies repeat the one before (DUNNO). */
let lastAction: string | undefined;
let lastReply = '';

export function formatReply(r: Reply): string {
  if (typeof r === 'string') {
    if (r !== lastAction) {
      lastReply = `action=${oneLine(r)}\n\n`;
      lastAction = r;
    }
    return lastReply;
  }
  return `action=${oneLine(r.action)}\n${r.attrs.map(([k, v]) => `${k}=${replyValue(v)}\n`).join('')}\n`;
}
