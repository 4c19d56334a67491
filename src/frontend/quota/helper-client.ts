// The front's end of the channel to the root helper. Lookups asked for in the
// same tick are batched into one QUOTA_QUERY (one quota(1) run), at most
// QUOTA_RUNS_AT_ONCE queries are outstanding (the helper would treat more than
// MAX_INFLIGHT as an attack), lookups asked for meanwhile wait for the next batch,
// and each caller gets an answer by its deadline even if the helper is slow.
// A query holds one kind (user, group or project); lookups of different kinds
// go in different batches. An id of a kind is asked for once at a time: never
// queued twice, never twice in one batch, never sent while a query holding it
// is out (its callers share that answer). The helper ends the channel -- the whole daemon -- on a duplicate
// uid, and a hung NFS server would otherwise pile up runs for the same user.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  WIRE_VERSION,
  MAX_BATCH,
  MAX_REPLY_BYTES,
  MsgType,
  QuotaKind,
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

/** One number per (kind, id): ids are below 2^32, so kind x 2^32 + id is exact. */
const keyOf = (kind: QuotaKind, id: number): number => kind * 2 ** 32 + id;
const kindOf = (key: number): QuotaKind => Math.floor(key / 2 ** 32);
const idOf = (key: number): number => key % 2 ** 32;

interface Waiter {
  resolve: (q: UserQuota) => void;
  timer: NodeJS.Timeout;
}

export class HelperClient extends EventEmitter {
  private frames = new FrameReader(MAX_REPLY_BYTES);
  private seq = 0;
  /** seq -> the keys (keyOf) it asked for. */
  private inflight = new Map<number, number[]>();
  /** Keys in a query still out. */
  private sent = new Set<number>();
  /** Keys waiting for a batch, in arrival order; each has a waiter. */
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

  /** Quota numbers for one id of a kind (a uid by default). Never rejects: failures come back as a status. */
  query(uid: number, kind: QuotaKind = QuotaKind.User): Promise<UserQuota> {
    if (this.closed) return Promise.resolve({ uid, status: QuotaStatus.ExecFailed, fs: [] });
    const key = keyOf(kind, uid);
    return new Promise((resolve) => {
      const w: Waiter = {
        resolve,
        timer: setTimeout(() => this.giveUp(key, w), this.replyTimeoutMs + HELPER_REPLY_MARGIN_MS),
      };
      const list = this.waiters.get(key);
      if (list) list.push(w);
      else this.waiters.set(key, [w]);
      if (!this.queued.has(key) && !this.sent.has(key)) {
        this.queued.add(key);
        this.scheduleFlush();
      }
    });
  }

  /** One caller's deadline passed: it alone gets a timeout. A key nobody waits for leaves the queue. */
  private giveUp(key: number, w: Waiter): void {
    const list = this.waiters.get(key);
    if (!list?.includes(w)) return;
    list.splice(list.indexOf(w), 1);
    w.resolve({ uid: idOf(key), status: QuotaStatus.Timeout, fs: [] });
    if (list.length > 0) return;
    this.waiters.delete(key);
    this.queued.delete(key); // still in a query that is out: its answer finds no one, and that is fine
  }

  private settle(key: number, q: UserQuota): void {
    const list = this.waiters.get(key);
    if (!list) return;
    this.waiters.delete(key);
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
      const keys: number[] = [];
      const kind = kindOf(this.queued.values().next().value!); // the oldest lookup's kind goes first
      for (const key of this.queued) {
        if (keys.length === MAX_BATCH) break;
        if (kindOf(key) === kind) keys.push(key);
      }
      for (const key of keys) {
        this.queued.delete(key);
        this.sent.add(key);
      }
      const seq = (this.seq = (this.seq + 1) >>> 0);
      this.inflight.set(seq, keys);
      this.channel.write(encodeToHelper({ type: MsgType.QuotaQuery, seq, kind, uids: keys.map(idOf) }));
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
          for (const key of asked) this.sent.delete(key);
          if (msg.kind !== kindOf(asked[0]!)) throw new Error(`reply of another quota kind (${msg.kind})`);
          for (const u of msg.users) {
            if (asked.includes(keyOf(msg.kind, u.uid))) this.settle(keyOf(msg.kind, u.uid), u);
          }
          for (const key of asked) this.settle(key, { uid: idOf(key), status: QuotaStatus.Unparsable, fs: [] });
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
    for (const key of [...this.waiters.keys()]) {
      this.settle(key, { uid: idOf(key), status: QuotaStatus.ExecFailed, fs: [] });
    }
    this.emit('closed', reason);
  }
}
