// SECURITY: quota(1)'s output -> numbers, as root. Strict: a line that does not
// fit the grammar rejects the whole output, so the front never gets a guess.
// `LC_ALL=C quota -w -p -v --show-mntpoint --hide-device -u|-g|-P -- ID...`
// prints, per id (quota-tools 4.x; captured in test/fixtures/quota):
//   Disk quotas for user|group|project NAME (uid|gid|pid N): [none]
//        Filesystem  blocks   quota   limit   grace   files   quota   limit   grace
//   MOUNT BLOCKS[*] SOFT HARD GRACE FILES[*] SOFT HARD GRACE        (0 or more)
import { type FsQuota, type QuotaKind, FS_QUOTA_NUMBERS, MAX_FS, MAX_MOUNT_BYTES } from '../shared/wire.js';

export class QuotaOutputError extends Error {
  override name = 'QuotaOutputError';
}

const HEADER = /^Disk quotas for (user \S+ \(u|group \S+ \(g|project \S+ \(p)id (\d+)\): ?(none)?$/;
const COLUMNS = /^ *Filesystem +blocks +quota +limit +grace +files +quota +limit +grace *$/;
/** Usage may carry a "*" (over a limit); the other six never do. */
const FIELD = [/^(\d{1,15})\*?$/, /^(\d{1,15})$/, /^(\d{1,15})$/, /^(\d{1,15})$/];

function parseRow(line: string): FsQuota {
  const f = line.trim().split(/ +/);
  const n = f.splice(-8, 8);
  const row = { mount: f.join(' ') } as FsQuota;
  const mountOk = row.mount.startsWith('/') && Buffer.byteLength(row.mount) <= MAX_MOUNT_BYTES;
  if (n.length !== 8 || !mountOk || /[\0-\x1f]/.test(row.mount)) throw new QuotaOutputError('bad row or mount point');
  FS_QUOTA_NUMBERS.forEach((k, i) => {
    const m = FIELD[i % 4]!.exec(n[i]!);
    if (!m) throw new QuotaOutputError(`bad ${k} field`);
    row[k] = Number(m[1]);
  });
  return row;
}

/** One entry per id asked for, or QuotaOutputError. */
export function parseQuotaOutput(stdout: string, uids: readonly number[], kind: QuotaKind): Map<number, FsQuota[]> {
  const out = new Map<number, FsQuota[]>();
  let rows: FsQuota[] | undefined;
  let expectColumns = false;
  for (const line of stdout.split('\n').filter((l) => l !== '')) {
    const h = HEADER.exec(line);
    if (h) {
      const id = Number(h[2]);
      if ('ugp'.indexOf(h[1]!.at(-1)!) !== kind || !uids.includes(id) || out.has(id))
        throw new QuotaOutputError('unexpected block');
      out.set(id, (rows = []));
      expectColumns = h[3] === undefined;
    } else if (expectColumns && COLUMNS.test(line)) expectColumns = false;
    else if (!expectColumns && rows !== undefined && rows.length < MAX_FS) rows.push(parseRow(line));
    else throw new QuotaOutputError('unexpected line');
  }
  if (expectColumns || out.size !== uids.length) throw new QuotaOutputError('missing block');
  return out;
}
