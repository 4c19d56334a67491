// Is a user's quota full, or would this message not fit? Pure: the numbers,
// the size and the clock come in as arguments. "Full" follows the kernel's own
// test (fs/quota/dquot.c check_bdq/check_idq): a write is refused when usage
// would pass the hard limit, or pass the soft limit once its grace has expired.
import type { FsQuota } from '../../shared/wire.js';

export type QuotaVerdict = 'pass' | 'grace' | 'over_quota' | 'too_large' | 'does_not_fit';

export interface QuotaDecision {
  verdict: QuotaVerdict;
  reason: string;
}

/** Blocks are 1 KiB units in quota(1) output. */
export const BLOCK_BYTES = 1024;

/** Worst first: a message that can never fit is refused for good (5xx). */
export const SEVERITY: readonly QuotaVerdict[] = ['too_large', 'over_quota', 'does_not_fit', 'grace', 'pass'];

function judgeFs(fs: FsQuota, needKiB: number, nowSec: number): QuotaDecision {
  const expired = (grace: number): boolean => grace > 0 && nowSec >= grace;
  const at = `on ${fs.mount}`;
  if (needKiB > 0 && fs.blockHard > 0 && needKiB > fs.blockHard) {
    return { verdict: 'too_large', reason: `message needs ${needKiB} KiB, hard limit ${at} is ${fs.blockHard} KiB` };
  }
  if (fs.blockHard > 0 && fs.blocks >= fs.blockHard)
    return { verdict: 'over_quota', reason: `blocks at hard limit ${at} (${fs.blocks}/${fs.blockHard} KiB)` };
  if (fs.blockSoft > 0 && fs.blocks > fs.blockSoft && expired(fs.blockGrace))
    return { verdict: 'over_quota', reason: `blocks over soft limit ${at}, grace expired` };
  // A new message is one new file (maildir) or none (mbox): either way, one more must fit.
  if (fs.fileHard > 0 && fs.files >= fs.fileHard)
    return { verdict: 'over_quota', reason: `files at hard limit ${at} (${fs.files}/${fs.fileHard})` };
  if (fs.fileSoft > 0 && fs.files > fs.fileSoft && expired(fs.fileGrace))
    return { verdict: 'over_quota', reason: `files over soft limit ${at}, grace expired` };
  if (needKiB > 0 && fs.blockHard > 0 && fs.blocks + needKiB > fs.blockHard) {
    return {
      verdict: 'does_not_fit',
      reason: `message needs ${needKiB} KiB, ${fs.blockHard - fs.blocks} KiB left ${at}`,
    };
  }
  if ((fs.blockSoft > 0 && fs.blocks > fs.blockSoft) || (fs.fileSoft > 0 && fs.files > fs.fileSoft)) {
    return { verdict: 'grace', reason: `over soft limit ${at}, grace running` };
  }
  return { verdict: 'pass', reason: `within quota ${at}` };
}

/**
 * @param rows      quota rows for the user (every file system quota reported)
 * @param sizeBytes message size if known (0 = unknown)
 * @param nowSec    current time, epoch seconds
 * @param only      mount points to consider; empty = all
 * @returns undefined when no considered file system has any limit set
 */
export function decideQuota(
  rows: readonly FsQuota[],
  sizeBytes: number,
  nowSec: number,
  only: readonly string[],
): QuotaDecision | undefined {
  const needKiB = Math.ceil(sizeBytes / BLOCK_BYTES);
  let worst: QuotaDecision | undefined;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (only.length > 0 && !only.includes(r.mount)) continue;
    if (!(r.blockSoft || r.blockHard || r.fileSoft || r.fileHard)) continue;
    const d = judgeFs(r, needKiB, nowSec);
    // Ties keep the first row reported.
    if (worst === undefined || SEVERITY.indexOf(d.verdict) < SEVERITY.indexOf(worst.verdict)) worst = d;
  }
  return worst;
}
