// Quota notices: a user whose accepted mail takes them over a warning
// threshold gets one mail about it, sent through the local sendmail. Off the
// answer path: observe() only queues (bounded); one worker reads and writes
// the state file (SQLite, so a restart remembers who was told) and runs
// sendmail, one at a time, with a time limit, a fixed environment and no
// shell. Errors are logged, never thrown at the policy answer.
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import type BetterSqlite3 from 'better-sqlite3';
import type { WarningConfig } from '../../shared/config/schema.js';
import { noticeStep, type NoticeState, type QuotaWarning } from './quota-warning.js';

/**
 * Observations waiting for the worker. A burst of mail to many users at a
 * threshold fits; past it (the state file or sendmail is stuck) new ones are
 * dropped, counted and logged: a missed notice is sent on a later crossing.
 */
export const MAX_PENDING_NOTICES = 1000;
/** Users whose level is held in memory, so mail that changes nothing costs no read of the state file. */
export const LEVEL_CACHE_MAX = 10_000;
/** sendmail's complaint kept for the log; the rest is cut. */
const STDERR_KEPT = 2048;
/** After sendmail exits, how long its stderr may still take to arrive (a grandchild may hold it open for good). */
const STDERR_LINGER_MS = 200;
/** What sendmail runs with: nothing of the daemon's own environment. */
const SENDMAIL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
/** Wait this long for another process's write lock on the state file. */
const STATE_BUSY_TIMEOUT_MS = 2000;

export interface Observation {
  user: string;
  /** The address the notice goes to (userAddress()). */
  address: string;
  /** The warning now, or undefined: under every threshold. */
  warning: QuotaWarning | undefined;
  nowSec: number;
}

interface Stmt {
  run(...a: unknown[]): unknown;
  get(...a: unknown[]): unknown;
  all(...a: unknown[]): unknown[];
}

/** The state file: each user's last level, and when each threshold was last notified. */
class NoticeStore {
  private readonly level: Stmt;
  private readonly sent: Stmt;
  private readonly setLevel: Stmt;
  private readonly setSent: Stmt;
  private readonly unsetSent: Stmt;
  constructor(private readonly db: BetterSqlite3.Database) {
    db.pragma('journal_mode = WAL');
    db.exec(`CREATE TABLE IF NOT EXISTS qp_warning_levels (user TEXT PRIMARY KEY, level INTEGER NOT NULL, seen_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS qp_warning_notices (user TEXT NOT NULL, threshold INTEGER NOT NULL, sent_at INTEGER NOT NULL, PRIMARY KEY (user, threshold));`);
    this.level = db.prepare('SELECT level FROM qp_warning_levels WHERE user = ?');
    this.sent = db.prepare('SELECT threshold, sent_at FROM qp_warning_notices WHERE user = ?');
    this.setLevel = db.prepare(
      'INSERT INTO qp_warning_levels (user, level, seen_at) VALUES (?, ?, ?) ON CONFLICT (user) DO UPDATE SET level = excluded.level, seen_at = excluded.seen_at',
    );
    this.setSent = db.prepare(
      'INSERT INTO qp_warning_notices (user, threshold, sent_at) VALUES (?, ?, ?) ON CONFLICT (user, threshold) DO UPDATE SET sent_at = excluded.sent_at',
    );
    this.unsetSent = db.prepare('DELETE FROM qp_warning_notices WHERE user = ? AND threshold = ? AND sent_at = ?');
  }

  state(user: string): NoticeState {
    const row = this.level.get(user) as { level: number } | undefined;
    const sent = this.sent.all(user) as { threshold: number; sent_at: number }[];
    return { level: row?.level ?? 0, sent: new Map(sent.map((r) => [r.threshold, r.sent_at])) };
  }

  record(user: string, level: number, nowSec: number, notified?: number): void {
    this.db.transaction(() => {
      this.setLevel.run(user, level, nowSec);
      if (notified !== undefined) this.setSent.run(user, notified, nowSec);
    })();
  }

  /** A notice that failed: as if the crossing had not been seen, so the next accepted mail tries again. */
  undo(user: string, prevLevel: number, threshold: number, sentAt: number): void {
    this.db.transaction(() => {
      this.setLevel.run(user, prevLevel, sentAt);
      this.unsetSent.run(user, threshold, sentAt);
    })();
  }

  close(): void {
    this.db.close();
  }
}

/** The notice itself: plain ASCII, every part from config or checked values. */
export function noticeMessage(cfg: WarningConfig, o: Observation & { warning: QuotaWarning }): string {
  const w = o.warning;
  return [
    `From: ${cfg.notify_from!}`,
    `To: ${o.address}`,
    `Subject: ${cfg.notify_subject}`,
    'Auto-Submitted: auto-generated',
    'Precedence: bulk',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `Your mailbox ${o.address} is ${w.percent}% full (${w.kind === 'blocks' ? 'space' : 'number of messages'}),`,
    `past the ${w.threshold}% mark. When it is full, mail for you is refused`,
    'until you delete some. Please make room.',
    '',
  ].join('\n');
}

export class Notifier {
  private readonly queue: Observation[] = [];
  private readonly levels = new Map<string, number>();
  private store: NoticeStore | undefined;
  private running = false;
  private closing = false;
  private dropped = 0;
  /** Settles when the worker has nothing left to do (tests, close). */
  private idle: Promise<void> = Promise.resolve();
  private wake: (() => void) | undefined;

  constructor(
    private readonly cfg: WarningConfig,
    private readonly log: Logger,
  ) {}

  /** Queues an observation; returns at once. */
  observe(o: Observation): void {
    const level = o.warning?.threshold ?? 0;
    if (this.closing || this.levels.get(o.user) === level) return;
    if (this.queue.length >= MAX_PENDING_NOTICES) {
      if (this.dropped++ === 0)
        this.log.warn({ max: MAX_PENDING_NOTICES }, 'quota notices: queue full, observations dropped');
      return;
    }
    this.queue.push(o);
    if (!this.running) {
      this.running = true;
      this.idle = new Promise((r) => (this.wake = r));
      setImmediate(() => void this.drain());
    }
  }

  /** Settles once every queued observation is handled. */
  settled(): Promise<void> {
    return this.idle;
  }

  /**
   * Lets the notice in flight finish (sendmail is bounded by its time limit),
   * drops the rest (nothing was recorded for them: the next accepted mail sees
   * the crossing again), then closes the state file.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.queue.length = 0;
    await this.idle;
    this.store?.close();
    this.store = undefined;
  }

  private async open(): Promise<NoticeStore> {
    if (this.store) return this.store;
    const { default: Database } = await import('better-sqlite3');
    this.store = new NoticeStore(new Database(this.cfg.state_path, { timeout: STATE_BUSY_TIMEOUT_MS }));
    return this.store;
  }

  private async drain(): Promise<void> {
    try {
      for (let o = this.queue.shift(); o !== undefined; o = this.queue.shift()) {
        try {
          await this.handle(o);
        } catch (e) {
          this.log.warn({ user: o.user, err: (e as Error).message }, 'quota notice: state file failed');
        }
      }
      if (this.dropped > 1) this.log.warn({ dropped: this.dropped }, 'quota notices: observations dropped');
      this.dropped = 0;
    } finally {
      this.running = false;
      this.wake?.();
    }
  }

  private remember(user: string, level: number): void {
    this.levels.delete(user);
    if (this.levels.size >= LEVEL_CACHE_MAX) this.levels.delete(this.levels.keys().next().value!);
    this.levels.set(user, level);
  }

  private async handle(o: Observation): Promise<void> {
    const store = await this.open();
    const prev = store.state(o.user);
    const step = noticeStep(prev, o.warning?.threshold ?? 0, o.nowSec, this.cfg.notify_period_s);
    if (step.level !== prev.level || step.notify !== undefined) store.record(o.user, step.level, o.nowSec, step.notify);
    this.remember(o.user, step.level);
    if (step.notify === undefined || o.warning === undefined) return;
    const why = await this.send(noticeMessage(this.cfg, { ...o, warning: o.warning }), o.address);
    const at = { user: o.user, to: o.address, threshold: step.notify, percent: o.warning.percent };
    if (why === undefined) {
      this.log.info(at, 'quota notice sent');
      return;
    }
    store.undo(o.user, prev.level, step.notify, o.nowSec);
    this.levels.delete(o.user);
    this.log.warn({ ...at, reason: why }, 'quota notice not sent: tried again with the next accepted mail');
  }

  /**
   * Runs sendmail; undefined on success, else why not. In a session and
   * process group of its own, so that past the time limit the whole group goes
   * (Postfix's sendmail runs postdrop, which would hold the pipes open).
   */
  private send(message: string, to: string): Promise<string | undefined> {
    const cfg = this.cfg;
    return new Promise((resolve) => {
      let stderr = '';
      let killed = false;
      const child = spawn(cfg.notify_sendmail, ['-i', '-f', cfg.notify_from!, '--', to], {
        env: SENDMAIL_ENV,
        stdio: ['pipe', 'ignore', 'pipe'],
        detached: true,
      });
      const timer = setTimeout(() => {
        killed = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }, cfg.notify_timeout_ms);
      child.stderr.on('data', (d: Buffer) => {
        if (stderr.length < STDERR_KEPT) stderr = (stderr + d.toString('utf8')).slice(0, STDERR_KEPT);
      });
      // sendmail may exit before reading all of it (a bad option): its status says why, not EPIPE.
      child.stdin.on('error', () => {});
      child.stdin.end(message);
      child.on('error', (e) => {
        clearTimeout(timer);
        resolve(`${cfg.notify_sendmail}: ${e.message}`);
      });
      // 'exit', then stderr's end or a short wait: a grandchild left holding stderr must not hold the notice up.
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        const done = (): void => {
          child.stderr.destroy();
          if (code === 0) return resolve(undefined);
          const how = killed
            ? `killed after notify_timeout_ms (${cfg.notify_timeout_ms} ms)`
            : `exit ${code ?? signal}`;
          const said = stderr.trim();
          resolve(`${cfg.notify_sendmail} ${how}${said === '' ? '' : `: ${said}`}`);
        };
        if (child.stderr.readableEnded) return done();
        const wait = setTimeout(done, STDERR_LINGER_MS);
        child.stderr.once('end', () => {
          clearTimeout(wait);
          done();
        });
      });
    });
  }
}
