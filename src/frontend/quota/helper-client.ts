// The front's end of the channel to the root helper. Lookups asked for in the
// same tick are batched into one QUOTA_QUERY (one quota(1) run), at most
// QUOTA_RUNS_AT_ONCE queries are outstanding (the helper would treat more than
// MAX_INFLIGHT as an attack), lookups asked for meanwhile wait for the next batch,
// and each caller gets an answer by its deadline even if the helper is slow.
// A uid is asked for once at a time: never queued twice, never twice in one
// batch, never sent while a query holding it is out (its callers share that
// answer). The helper ends the channel -- the whole daemon -- on a duplicate
// uid, and a hung NFS server would otherwise pile up runs for the same user.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  WIRE_VERSION,
  MAX_BATCH,
  MAX_REPLY_BYTES,
  MsgType,
  QuotaStatus,
  FrameReader,
  type UserQuota,
} from '../../shared/wire.js';
import { decodeFromHelper, encodeToHelper } from './wire-front.js';

/**
 * quota(1) runs outstanding at once (<= MAX_INFLIGHT). A run costs mostly its
 * exec, whatever the number of users in it: while two runs are out, the
 * lookups asked for meanwhile gather into the next batch instead of each
 * starting a run of its own. Measured in user-mode-linux (bench, scenario b).
 */
export const QUOTA_RUNS_AT_ONCE = 2;

/** The helper kills quota(1) at its timeout; allow it this long on top to reply. */
export const HELPER_REPLY_MARGIN_MS = 1000;
/** The helper answers HELLO at once; no answer in this time means it is broken. */
export const HELLO_TIMEOUT_MS = 10_000;

interface Waiter {
  resolve: (q: UserQuota) => void;
  timer: NodeJS.Timeout;
}

export class HelperClient extends EventEmitter {
  private frames = new FrameReader(MAX_REPLY_BYTES);
  private seq = 0;
  private inflight = new Map<number, number[]>();
  /** uids in a query still out. */
  private sent = new Set<number>();
  /** uids waiting for the next batch, in arrival order; each has a waiter. */
  private queued = new Set<number>();
  private waiters = new Map<number, Waiter[]>();
  private flushScheduled = false;
  private closed = false;
  private helloWaiter: ((minUid: number) => void) | undefined;
  private helloFail: ((e: Error) => void) | undefined;

  constructor(
    private readonly channel: Duplex,
    private readonly replyTimeoutMs: number,
  ) {
    super();
    channel.on('data', (c: Buffer) => this.onData(c));
    channel.on('close', () => this.close('channel closed'));
    channel.on('error', (e) => this.close(`channel error: ${e.message}`));
  }

  /** Sends HELLO; resolves with the helper's min_uid. */
  hello(): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('helper did not answer HELLO')), HELLO_TIMEOUT_MS);
      this.helloWaiter = (minUid) => {
        clearTimeout(timer);
        resolve(minUid);
      };
      this.helloFail = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      this.channel.write(encodeToHelper({ type: MsgType.Hello, version: WIRE_VERSION }));
    });
  }

  /** Quota numbers for one uid. Never rejects: failures come back as a status. */
  query(uid: number): Promise<UserQuota> {
    if (this.closed) return Promise.resolve({ uid, status: QuotaStatus.ExecFailed, fs: [] });
    return new Promise((resolve) => {
      const w: Waiter = {
        resolve,
        timer: setTimeout(() => this.giveUp(uid, w), this.replyTimeoutMs + HELPER_REPLY_MARGIN_MS),
      };
      const list = this.waiters.get(uid);
      if (list) list.push(w);
      else this.waiters.set(uid, [w]);
      if (!this.queued.has(uid) && !this.sent.has(uid)) {
        this.queued.add(uid);
        this.scheduleFlush();
      }
    });
  }

  /** One caller's deadline passed: it alone gets a timeout. A uid nobody waits for leaves the queue. */
  private giveUp(uid: number, w: Waiter): void {
    const list = this.waiters.get(uid);
    if (!list?.includes(w)) return;
    list.splice(list.indexOf(w), 1);
    w.resolve({ uid, status: QuotaStatus.Timeout, fs: [] });
    if (list.length > 0) return;
    this.waiters.delete(uid);
    this.queued.delete(uid); // still in a query that is out: its answer finds no one, and that is fine
  }

  private settle(uid: number, q: UserQuota): void {
    const list = this.waiters.get(uid);
    if (!list) return;
    this.waiters.delete(uid);
    for (const w of list) {
      clearTimeout(w.timer);
      w.resolve(q);
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (!this.closed && this.queued.size > 0 && this.inflight.size < QUOTA_RUNS_AT_ONCE) {
      const uids: number[] = [];
      for (const uid of this.queued) {
        if (uids.length === MAX_BATCH) break;
        uids.push(uid);
      }
      for (const uid of uids) {
        this.queued.delete(uid);
        this.sent.add(uid);
      }
      const seq = (this.seq = (this.seq + 1) >>> 0);
      this.inflight.set(seq, uids);
      this.channel.write(encodeToHelper({ type: MsgType.QuotaQuery, seq, uids }));
    }
  }

  private onData(chunk: Buffer): void {
    try {
      for (const payload of this.frames.push(chunk)) {
        const msg = decodeFromHelper(payload);
        if (msg.type === MsgType.HelloAck && this.helloWaiter) {
          if (msg.version !== WIRE_VERSION) throw new Error(`helper speaks wire version ${msg.version}`);
          this.helloWaiter(msg.minUid);
          this.helloWaiter = this.helloFail = undefined;
        } else if (msg.type === MsgType.QuotaReply && this.inflight.has(msg.seq)) {
          const asked = this.inflight.get(msg.seq)!;
          this.inflight.delete(msg.seq);
          for (const uid of asked) this.sent.delete(uid);
          for (const u of msg.users) if (asked.includes(u.uid)) this.settle(u.uid, u);
          for (const uid of asked) this.settle(uid, { uid, status: QuotaStatus.Unparsable, fs: [] });
          this.flush();
        } else {
          throw new Error(`unexpected message type ${msg.type} from helper`);
        }
      }
    } catch (e) {
      this.close(`bad data from helper: ${(e as Error).message}`);
    }
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.destroy();
    this.helloFail?.(new Error(reason));
    this.queued.clear();
    for (const uid of [...this.waiters.keys()]) this.settle(uid, { uid, status: QuotaStatus.ExecFailed, fs: [] });
    this.emit('closed', reason);
  }
}
