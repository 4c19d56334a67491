// SECURITY: the root side of the channel. It answers one HELLO, then only
// QUOTA_QUERY for validated uids. Anything else -- a bad frame, a version
// mismatch, a second HELLO, a reply type, a uid below min_uid, a duplicate uid,
// too many queries at once -- ends the channel, as OpenSSH's monitor does.
import type { Readable, Writable } from 'node:stream';
import { WIRE_VERSION, MAX_INFLIGHT, MsgType, FrameReader, decode, encode, type Message } from '../shared/wire.js';
import type { QuotaRunner } from './quota-run.js';
import { log } from './log.js';

export interface ChannelOptions {
  runQuota: QuotaRunner;
  minUid: number;
}
/** The peer closed the channel, or broke the protocol. */
export type ChannelEnd = { kind: 'closed' } | { kind: 'violation'; reason: string };

export function serveChannel(input: Readable, output: Writable, opts: ChannelOptions): Promise<ChannelEnd> {
  return new Promise((resolve) => {
    const frames = new FrameReader();
    let [greeted, inflight, ended] = [false, 0, false];
    const finish = (end: ChannelEnd): void => {
      if (ended) return;
      ended = true;
      if (end.kind === 'violation') log('error', 'channel protocol violation, closing', { reason: end.reason });
      input.destroy();
      output.destroy();
      resolve(end);
    };
    const handle = (msg: Message): string | undefined => {
      if (!greeted) {
        if (msg.type !== MsgType.Hello || msg.version !== WIRE_VERSION) return `expected HELLO version ${WIRE_VERSION}`;
        greeted = true;
        output.write(encode({ type: MsgType.HelloAck, version: WIRE_VERSION, minUid: opts.minUid }));
        return undefined;
      }
      if (msg.type !== MsgType.QuotaQuery) return `unexpected message type ${msg.type}`;
      // Re-check what the front already checked, in case it got corrupted.
      if (msg.uids.some((uid) => uid < opts.minUid)) return 'uid below min_uid';
      if (new Set(msg.uids).size !== msg.uids.length) return 'duplicate uid';
      if (++inflight > MAX_INFLIGHT) return 'too many queries in flight';
      opts.runQuota(msg.uids).then(
        (users) => {
          inflight--;
          if (!ended) output.write(encode({ type: MsgType.QuotaReply, seq: msg.seq, users }));
        },
        (e: unknown) => finish({ kind: 'violation', reason: `quota runner failed: ${String(e)}` }),
      );
      return undefined;
    };
    input.on('data', (chunk: Buffer) => {
      try {
        for (const payload of frames.push(chunk)) {
          const bad = ended ? undefined : handle(decode(payload));
          if (bad !== undefined) return finish({ kind: 'violation', reason: bad });
        }
      } catch (e) {
        finish({ kind: 'violation', reason: e instanceof Error ? e.message : String(e) });
      }
    });
    input.on('end', () =>
      finish(frames.pending === 0 ? { kind: 'closed' } : { kind: 'violation', reason: 'truncated frame' }),
    );
    input.on('error', (e) => finish({ kind: 'violation', reason: `channel error: ${e.message}` }));
    output.on('error', () => finish({ kind: 'closed' }));
  });
}
