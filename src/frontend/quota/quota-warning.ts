// Warnings before the wall: how full a recipient's mailbox would be with this
// message in, against the configured thresholds (per cent of a hard limit),
// and whether a notice is due. Pure: rows, size and clock come in as arguments.
import type { FsQuota } from '../../shared/wire.js';
import { BLOCK_BYTES } from './quota-decision.js';

export interface QuotaWarning {
  /** The highest threshold crossed, per cent. */
  threshold: number;
  /** How full, per cent of the hard limit, rounded down. */
  percent: number;
  kind: 'blocks' | 'files';
  mount: string;
}

/** Per cent of `hard` that `used` is, rounded down; integers only, so 80% of 1000 is exactly 800. */
const percentOf = (used: number, hard: number): number => Math.floor((used * 100) / hard);

/**
 * The highest threshold that usage with this message in crosses, over every
 * considered file system and both kinds; ties go to the fuller one, then the
 * first row. A kind without a hard limit is never warned about (the
 * thresholds are shares of the hard limit; a soft limit has its own answer,
 * actions.grace).
 * @param rows       the user's quota rows
 * @param sizeBytes  the message size if known (0 = unknown: only the file counts)
 * @param thresholds increasing per cents
 * @param only       mount points to consider; empty = all (as decideQuota)
 */
export function highestWarning(
  rows: readonly FsQuota[],
  sizeBytes: number,
  thresholds: readonly number[],
  only: readonly string[],
): QuotaWarning | undefined {
  if (thresholds.length === 0) return undefined;
  const needKiB = Math.ceil(sizeBytes / BLOCK_BYTES);
  let best: QuotaWarning | undefined;
  for (const r of rows) {
    if (only.length > 0 && !only.includes(r.mount)) continue;
    // A new message is one new file (maildir) or none (mbox): counted as one, as decideQuota does.
    const usage: [QuotaWarning['kind'], number, number][] = [
      ['blocks', r.blocks + needKiB, r.blockHard],
      ['files', r.files + 1, r.fileHard],
    ];
    for (const [kind, used, hard] of usage) {
      if (hard <= 0) continue;
      const percent = percentOf(used, hard);
      let threshold: number | undefined;
      for (const t of thresholds) if (used * 100 >= t * hard) threshold = t;
      if (threshold === undefined) continue;
      if (best === undefined || threshold > best.threshold || (threshold === best.threshold && percent > best.percent))
        best = { threshold, percent, kind, mount: r.mount };
    }
  }
  return best;
}

/** The header's value: whose mailbox, how full, of what. No mount point: the header goes to every recipient of the message. */
export function warningText(address: string, w: QuotaWarning): string {
  return `${address}: mailbox ${w.percent}% full (${w.kind}; warning at ${w.threshold}%)`;
}

const DOMAIN = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/**
 * The address a warning names and a notice goes to: the Unix user at the
 * recipient's domain (extension dropped, lower case), or the bare user name
 * (sendmail adds myorigin) when the recipient has no usable domain. Built from
 * checked parts only, never the raw recipient.
 */
export function userAddress(user: string, recipient: string): string {
  const at = recipient.lastIndexOf('@');
  const domain = at === -1 ? '' : recipient.slice(at + 1).toLowerCase();
  return DOMAIN.test(domain) ? `${user}@${domain}` : user;
}

/** What is remembered of one user: the level last seen, and when each threshold was last notified (epoch s). */
export interface NoticeState {
  level: number;
  sent: ReadonlyMap<number, number>;
}

export interface NoticeStep {
  /** The level to remember now (0: under every threshold). */
  level: number;
  /** The threshold to send a notice for, if one is due. */
  notify?: number;
}

/**
 * One observation of a user's level (the highest threshold crossed, 0 for
 * none) on accepted mail. A notice is due when the level rises above the one
 * last seen (a crossing) and that threshold was not notified in the last
 * `periodSec` (so a mailbox hovering at a threshold, as mail is deleted and
 * arrives, is told at most once a period). A fall is remembered, so the next
 * rise is a crossing again.
 */
export function noticeStep(prev: NoticeState, level: number, nowSec: number, periodSec: number): NoticeStep {
  if (level <= prev.level) return { level };
  const last = prev.sent.get(level);
  if (last !== undefined && nowSec - last < periodSec) return { level };
  return { level, notify: level };
}
