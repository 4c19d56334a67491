// Tests speak both directions of the channel: one encode and one decode over
// root's half (src/shared/wire.ts) and the front's (src/frontend/quota/wire-front.ts).
import { decodeFromFront, encodeToFront, MsgType, type Message, type ToHelper } from '../../src/shared/wire.js';
import { decodeFromHelper, encodeToHelper } from '../../src/frontend/quota/wire-front.js';

const toHelper = (m: Message): m is ToHelper => m.type === MsgType.Hello || m.type === MsgType.QuotaQuery;

export function encode(msg: Message): Buffer {
  return toHelper(msg) ? encodeToHelper(msg) : encodeToFront(msg);
}

/** By the type byte: HELLO and QUOTA_QUERY as root reads them, the rest as the front does. */
export function decode(p: Buffer): Message {
  const t = p.length > 0 ? p.readUInt8(0) : -1;
  return t === MsgType.Hello || t === MsgType.QuotaQuery ? decodeFromFront(p) : decodeFromHelper(p);
}
