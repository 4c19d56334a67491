// SECURITY: the helper's request loop, the root side of the channel. It
// answers exactly two requests, in order: one HELLO, then QUOTA_QUERY for
// validated uids. Everything else -- a bad frame, a version mismatch, a second
// HELLO, a reply type, a uid below min_uid, a duplicate uid, too many queries
// at once -- ends the channel (like OpenSSH's monitor: fatal, no recovery).
import type { Readable, Writable } from 'node:stream';
import {
  WIRE_VERSION, MAX_INFLIGHT, MsgType, FrameReader, decode, encode, type Message,
} from '../shared/wire.js';
import type { QuotaRunner } from './quota-run.js';
import { log } from './log.js';

export interface ChannelOptions { runQuota: QuotaRunner; minUid: number }
/** How the channel ended: the peer closed it, or broke the protocol. */
export type ChannelEnd = { kind: 'closed' } | { kind: 'violation'; reason: string };

export function serveChannel(input: Readable, output: Writable, opts: ChannelOptions): Promise<ChannelEnd> {
  return new Promise((resolve) => {
    const frames = new FrameReader();
    let greeted = false;
    let inflight = 0;
    let ended = false;
    const finish = (end: ChannelEnd): void => {
      if (ended) return;
      ended = true;
      input.removeListener('data', onData);
      if (end.kind === 'violation') log('error', 'channel protocol violation, closing', { reason: end.reason });
      input.destroy();
      output.destroy();
      resolve(end);
    };
    const handle = (msg: Message): string | undefined => {
      if (!greeted) {
        if (msg.type !== MsgType.Hello) return 'expected HELLO';
        if (msg.version !== WIRE_VERSION) return `wire version ${msg.version}, want ${WIRE_VERSION}`;
        greeted = true;
        output.write(encode({ type: MsgType.HelloAck, version: WIRE_VERSION, minUid: opts.minUid }));
        return undefined;
      }
      if (msg.type !== MsgType.QuotaQuery) return `unexpected message type ${msg.type}`;
      // Re-check what the front already checked, in case it got corrupted.
      if (msg.uids.some((uid) => uid < opts.minUid)) return 'uid below min_uid';
      if (new Set(msg.uids).size !== msg.uids.length) return 'duplicate uid';
      if (++inflight > MAX_INFLIGHT) return 'too many queries in flight';
      opts.runQuota(msg.uids).then((users) => {
        inflight--;
        if (!ended) output.write(encode({ type: MsgType.QuotaReply, seq: msg.seq, users }));
      }, (e: unknown) => finish({ kind: 'violation', reason: `quota runner failed: ${String(e)}` }));
      return undefined;
    };
    const onData = (chunk: Buffer): void => {
      try {
        for (const payload of frames.push(chunk)) {
          const bad = handle(decode(payload));
          if (bad !== undefined) return finish({ kind: 'violation', reason: bad });
        }
      } catch (e) {
        finish({ kind: 'violation', reason: e instanceof Error ? e.message : String(e) });
      }
    };
    input.on('data', onData);
    input.on('end', () => finish(frames.pending === 0 ? { kind: 'closed' } : { kind: 'violation', reason: 'truncated frame' }));
    input.on('error', (e) => finish({ kind: 'violation', reason: `channel error: ${e.message}` }));
    output.on('error', () => finish({ kind: 'closed' }));
  });
}
