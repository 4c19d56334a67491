// SECURITY: parses what quota(1) printed, as root, into numbers. Strict: any
// line that does not fit the grammar rejects the whole output, so the front
// never sees a guess. Grammar of `LC_ALL=C quota -w -p -v --show-mntpoint
// --hide-device -u UID...` (quota-tools 4.x), one block per user:
//   Disk quotas for user NAME (uid N): [none]
//        Filesystem  blocks   quota   limit   grace   files   quota   limit   grace
//   MOUNT BLOCKS[*] SOFT HARD GRACE FILES[*] SOFT HARD GRACE       (0 or more)
import { type FsQuota, MAX_FS, MAX_MOUNT_BYTES } from '../shared/wire.js';

export class QuotaOutputError extends Error {
  override name = 'QuotaOutputError';
}

const HEADER = /^Disk quotas for user (?:\S+) \(uid (\d+)\): ?(none)?$/;
const COLUMNS = /^ *Filesystem +blocks +quota +limit +grace +files +quota +limit +grace *$/;
const USAGE = /^(\d{1,15})\*?$/;
const PLAIN = /^(\d{1,15})$/;

function num(field: string | undefined, re: RegExp): number {
  const m = field === undefined ? null : re.exec(field);
  if (!m) throw new QuotaOutputError(`bad number field`);
  return Number(m[1]);
}

function parseRow(line: string): FsQuota {
  const f = line.trim().split(/ +/);
  if (f.length < 9) throw new QuotaOutputError('short row');
  const n = f.splice(f.length - 8, 8);
  const mount = f.join(' ');
  if (!mount.startsWith('/') || Buffer.byteLength(mount) > MAX_MOUNT_BYTES || /[\0-\x1f]/.test(mount)) {
    throw new QuotaOutputError('bad mount point');
  }
  return {
    mount,
    blocks: num(n[0], USAGE), blockSoft: num(n[1], PLAIN), blockHard: num(n[2], PLAIN), blockGrace: num(n[3], PLAIN),
    files: num(n[4], USAGE), fileSoft: num(n[5], PLAIN), fileHard: num(n[6], PLAIN), fileGrace: num(n[7], PLAIN),
  };
}

/** Returns one entry per uid asked for, or throws QuotaOutputError. */
export function parseQuotaOutput(stdout: string, uids: readonly number[]): Map<number, FsQuota[]> {
  const out = new Map<number, FsQuota[]>();
  let rows: FsQuota[] | undefined;
  let expectColumns = false;
  for (const line of stdout.split('\n')) {
    if (line === '') continue;
    const h = HEADER.exec(line);
    if (h) {
      const uid = Number(h[1]);
      if (!uids.includes(uid) || out.has(uid)) throw new QuotaOutputError('unexpected user block');
      rows = [];
      out.set(uid, rows);
      expectColumns = h[2] === undefined;
    } else if (expectColumns) {
      if (!COLUMNS.test(line)) throw new QuotaOutputError('bad column header');
      expectColumns = false;
    } else if (rows !== undefined && rows.length < MAX_FS) {
      rows.push(parseRow(line));
    } else {
      throw new QuotaOutputError('unexpected line');
    }
  }
  if (expectColumns || out.size !== uids.length) throw new QuotaOutputError('missing user block');
  return out;
}
