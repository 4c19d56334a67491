// SECURITY: the root side of the channel. It answers one HELLO, then only
// QUOTA_QUERY for validated ids (uids at or above min_uid; gids and project ids
// in range only: a user's primary group is often below it, e.g. users, 100). Anything else -- a bad frame, a version
// mismatch, a second HELLO, a reply type, a uid below min_uid, a duplicate uid,
// too many queries at once -- ends the channel, as OpenSSH's monitor does.
// A front that does not read its replies is not read either: once a write
// returns false (highWaterMark reached), input pauses and no frame is handled,
// so no quota(1) run starts, until 'drain'. Root then holds at most the
// stream buffers, one read of input and the replies of the runs already out:
// MAX_INFLIGHT x MAX_REPLY_BYTES = 8 x 327,878 bytes (~2.5 MiB), however long
// the front stays deaf.
import type { Readable, Writable } from 'node:stream';
import {
  WIRE_VERSION,
  MAX_INFLIGHT,
  MsgType,
  QuotaKind,
  FrameReader,
  decodeFromFront,
  encodeToFront,
  type ToHelper,
} from '../shared/wire.js';
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
    const backlog: Buffer[] = []; // frames read but not yet handled: output was backed up
    let [greeted, inflight, ended] = [false, 0, false];
    const finish = (end: ChannelEnd): void => {
      if (ended) return;
      ended = true;
      if (end.kind === 'violation') log('error', 'channel protocol violation, closing', { reason: end.reason });
      input.destroy();
      output.destroy();
      resolve(end);
    };
    const handle = (msg: ToHelper): string | undefined => {
      if (!greeted) {
        if (msg.type !== MsgType.Hello || msg.version !== WIRE_VERSION) return `expected HELLO version ${WIRE_VERSION}`;
        greeted = true;
        output.write(encodeToFront({ type: MsgType.HelloAck, version: WIRE_VERSION, minUid: opts.minUid }));
        return undefined;
      }
      if (msg.type !== MsgType.QuotaQuery) return `unexpected message type ${msg.type}`;
      // Re-check what the front already checked, in case it got corrupted. Id 0 is refused for every
      // kind (root's group; project 0 holds every file without one); gids/projects have no other floor.
      if (msg.uids.some((id) => id === 0 || (msg.kind === QuotaKind.User && id < opts.minUid)))
        return 'id 0, or uid below min_uid';
      if (new Set(msg.uids).size !== msg.uids.length) return 'duplicate id';
      if (++inflight > MAX_INFLIGHT) return 'too many queries in flight';
      opts.runQuota(msg.uids, msg.kind).then(
        (users) => {
          inflight--;
          const reply = { type: MsgType.QuotaReply, seq: msg.seq, kind: msg.kind, users } as const;
          if (ended || output.write(encodeToFront(reply))) return;
          input.pause(); // the front is not reading: stop reading it until 'drain'
        },
        (e: unknown) => finish({ kind: 'violation', reason: `quota runner failed: ${String(e)}` }),
      );
      return undefined;
    };
    const pump = (chunk?: Buffer): void => {
      try {
        if (chunk) for (const payload of frames.push(chunk)) backlog.push(payload);
        while (!ended && !output.writableNeedDrain && backlog.length > 0) {
          const bad = handle(decodeFromFront(backlog.shift()!));
          if (bad !== undefined) return finish({ kind: 'violation', reason: bad });
        }
        if (!ended && !output.writableNeedDrain) input.resume();
      } catch (e) {
        finish({ kind: 'violation', reason: e instanceof Error ? e.message : String(e) });
      }
    };
    input.on('data', pump);
    output.on('drain', () => pump());
    input.on('end', () =>
      finish(frames.pending === 0 ? { kind: 'closed' } : { kind: 'violation', reason: 'truncated frame' }),
    );
    input.on('error', (e) => finish({ kind: 'violation', reason: `channel error: ${e.message}` }));
    output.on('error', () => finish({ kind: 'closed' }));
  });
}
