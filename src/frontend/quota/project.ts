// The project of a user's mailbox directory, for project quotas (ext4
// prjquota, XFS). The kernel charges a new file to the project id of the
// directory it is made in (inherited from it with the P flag), so that id --
// not a name in /etc/projects, which may be stale or absent -- is what counts.
// The front reads it itself, as the service user: the home directory from
// getpwnam() through NSS (`getent passwd NAME`: the `userid` binding has no
// home, and /etc/passwd alone misses LDAP users; but when NSS reads
// /etc/passwd first and the user is there, that entry is getpwnam()'s answer,
// read without a process: homeFromFiles), its project id with
// `lsattr -p -d DIR` (the FS_IOC_FSGETXATTR ioctl, which Node cannot make
// without a native addon). No shell, a fixed environment, bounded in time,
// output and processes at once. Root only ever gets the numeric id.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';

/** One getent or lsattr run: NSS may ask LDAP; Postfix waits smtpd_policy_service_timeout (100 s) for the whole answer. */
export const PROJECT_LOOKUP_TIMEOUT_MS = 5000;
/** Processes at once, all recipients together: the front shares its cores with smtpd. */
export const MAX_PROJECT_PROCESSES = 4;
/** Lookups waiting for one of those; beyond this a lookup fails at once (the error action) instead of queueing without end. */
export const MAX_PROJECT_WAITING = 256;
/** Either answers one line: a passwd entry, or "ID FLAGS PATH"; 64 KiB is far above both. */
export const PROJECT_OUTPUT_MAX_BYTES = 64 * 1024;
/** A passwd file larger than this is not read (getent asks NSS): ~80,000 entries of 100 bytes. */
export const PASSWD_FILE_MAX_BYTES = 8 * 1024 * 1024;
/** Project ids are 32-bit (struct fsxattr.fsx_projid). */
const MAX_PROJECT_ID = 0xffff_ffff;
const PATH = '/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Mount options that make the kernel enforce project quotas (ext4 prjquota, prjjquota=; XFS pquota, pqenforce). */
const PROJECT_ENFORCED = /(?:^|,)(?:prjquota|pquota|prjjquota=[^,]*|pqenforce)(?:,|$)/;

/** What the mailbox's project is. */
export type MailboxProject =
  | { id: number; mounts: ReadonlySet<string> }
  /** Its file system does not enforce project quotas: nothing to read. */
  | { none: string }
  | { error: string };

const unescape = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/**
 * Mount points enforcing project quotas, by device ("major:minor"), from a
 * mountinfo table (/proc/self/mountinfo): the per-mount options and the
 * file system's own (after " - ") both count.
 */
export function parseProjectQuotaMounts(table: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of table.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-', 6);
    if (dash < 0 || f.length < dash + 4) continue;
    if (!PROJECT_ENFORCED.test(f[5]!) && !PROJECT_ENFORCED.test(f[dash + 3]!)) continue;
    const dev = f[2]!;
    let set = out.get(dev);
    if (set === undefined) out.set(dev, (set = new Set()));
    set.add(unescape(f[4]!));
  }
  return out;
}

/** Read afresh at each lookup (a cache miss): a file system remounted with prjquota counts at once. */
export function projectQuotaMounts(): Map<string, Set<string>> {
  return parseProjectQuotaMounts(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Linux's dev_t as mountinfo spells it (glibc's major()/minor()). */
export function devName(dev: number): string {
  const hi = Math.floor(dev / 2 ** 32);
  const lo = dev % 2 ** 32;
  const major = ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0);
  const minor = (lo & 0xff) | ((lo >>> 12) & 0xfff00);
  return `${major}:${minor}`;
}

/** The home directory field of one `getent passwd NAME` line, or why there is none. */
export function parsePasswdHome(out: string, name: string): string | { error: string } {
  const line = out.split('\n')[0] ?? '';
  const f = line.split(':');
  if (f.length !== 7 || f[0] !== name) return { error: `getent passwd ${name}: not one passwd entry` };
  if (!f[5]!.startsWith('/'))
    return { error: `getent passwd ${name}: home "${f[5]!.slice(0, 64)}" is not an absolute path` };
  return f[5]!;
}

/**
 * The passwd file's first line for each name, when getpwnam() answers from that file first:
 * nsswitch.conf's only passwd line (leading blanks allowed, as glibc reads it) names `files` first
 * with no action after it, and the file has no compat ("+", "-") lines and no line glibc would
 * read differently (leading blanks, comments). Otherwise undefined: `getent passwd NAME` asks NSS.
 * Built once per version of the two files (ProjectLookup keeps it), then a lookup is a Map read.
 */
export function passwdIndex(nsswitch: string, passwd: string): ReadonlyMap<string, string> | undefined {
  const lines = nsswitch.match(/^[ \t]*passwd:.*$/gm) ?? [];
  const m = /^[ \t]*passwd:[ \t]*(\S+)(?:[ \t]+(\S+))?/.exec(lines[0] ?? '');
  if (lines.length !== 1 || m?.[1] !== 'files' || m[2]?.startsWith('[')) return undefined;
  const index = new Map<string, string>();
  for (const line of passwd.split('\n')) {
    if (/^[-+#\s]/.test(line)) return undefined;
    const name = line.slice(0, line.indexOf(':'));
    if (name !== '' && !index.has(name)) index.set(name, line);
  }
  return index;
}

/**
 * NAME's home from the index, or undefined (getent asks NSS, and says why when the entry is
 * malformed). glibc skips a line whose uid or gid is not a number and reads on; rather than
 * guess which line it would take then, such a first line sends the lookup to getent.
 */
export function homeFromIndex(index: ReadonlyMap<string, string> | undefined, name: string): string | undefined {
  const entry = index?.get(name);
  if (entry === undefined) return undefined;
  const f = entry.split(':');
  if (!/^\d+$/.test(f[2] ?? '') || !/^\d+$/.test(f[3] ?? '')) return undefined;
  const home = parsePasswdHome(entry, name);
  return typeof home === 'string' ? home : undefined;
}

/** NAME's home from the passwd file, when getpwnam() would answer with that entry (passwdIndex, homeFromIndex). */
export const homeFromFiles = (name: string, nsswitch: string, passwd: string): string | undefined =>
  homeFromIndex(passwdIndex(nsswitch, passwd), name);

/** The project id from `lsattr -p -d DIR`'s line "ID FLAGS DIR". */
export function parseLsattrProject(out: string, dir: string): number | { error: string } {
  const m = /^\s*(\d{1,10})\s+\S+\s+(.*)$/.exec(out.split('\n')[0] ?? '');
  if (m === null || m[2] !== dir) return { error: `lsattr -p -d ${dir}: output not understood` };
  const id = Number(m[1]);
  return id <= MAX_PROJECT_ID ? id : { error: `lsattr -p -d ${dir}: project id ${m[1]} out of range` };
}

export interface ProjectLookupOptions {
  /** Whom to run as when this process is root (`quotapolicy check`): the service user. */
  runAs?: { uid: number; gid: number } | undefined;
  getent?: string;
  lsattr?: string;
  /** Read before getent (homeFromFiles); default /etc/nsswitch.conf and /etc/passwd. */
  nsswitch?: string;
  passwd?: string;
  timeoutMs?: number;
  /** Devices enforcing project quotas, and their mount points (default: from /proc/self/mountinfo). */
  mounts?: () => ReadonlyMap<string, ReadonlySet<string>>;
}

/** Finds the project of a user's mailbox directory (its home: home_mailbox, as local(8) delivers). */
export class ProjectLookup {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly o: ProjectLookupOptions = {}) {
    if (process.getuid?.() === 0 && o.runAs === undefined) throw new Error('project lookups never run as root');
  }

  /** Never rejects. */
  async mailboxProject(name: string): Promise<MailboxProject> {
    try {
      const enforced = (this.o.mounts ?? projectQuotaMounts)();
      if (enforced.size === 0) return { none: 'no file system enforces project quotas' };
      const home =
        (await this.homeFromFiles(name)) ??
        parsePasswdHome(await this.run(this.o.getent ?? 'getent', ['passwd', '--', name]), name);
      if (typeof home !== 'string') return home;
      const mounts = enforced.get(devName((await stat(home)).dev));
      if (mounts === undefined) return { none: `${home} is on a file system without project quotas` };
      const id = parseLsattrProject(await this.run(this.o.lsattr ?? 'lsattr', ['-p', '-d', '--', home]), home);
      return typeof id === 'number' ? { id, mounts } : id;
    } catch (e) {
      return { error: (e as Error).message.split('\n')[0]! };
    }
  }

  /** The index of this host's files, and which versions of them it was built from. */
  private files: { version: string; index: ReadonlyMap<string, string> | undefined } | undefined;

  /**
   * homeFromIndex() on this host's files; undefined when they cannot be read or the passwd file is
   * too large. The index is rebuilt only when either file changes (inode, size or mtime): a
   * lookup costs two stat calls, not a scan of the file (a Postfix client can make lookups
   * repeat: errors are not cached).
   */
  private async homeFromFiles(name: string): Promise<string | undefined> {
    try {
      const passwd = this.o.passwd ?? '/etc/passwd';
      const nsswitch = this.o.nsswitch ?? '/etc/nsswitch.conf';
      const [ps, ns] = await Promise.all([stat(passwd), stat(nsswitch)]);
      if (!ps.isFile() || !ns.isFile() || ps.size > PASSWD_FILE_MAX_BYTES || ns.size > PASSWD_FILE_MAX_BYTES)
        return undefined;
      const version = [ps.ino, ps.size, ps.mtimeMs, ns.ino, ns.size, ns.mtimeMs].join(':');
      if (this.files?.version !== version) {
        const [nss, pw] = await Promise.all([readFile(nsswitch, 'utf8'), readFile(passwd, 'utf8')]);
        const index = pw.length > PASSWD_FILE_MAX_BYTES ? undefined : passwdIndex(nss, pw);
        this.files = { version, index };
      }
      return homeFromIndex(this.files.index, name);
    } catch {
      return undefined;
    }
  }

  private async run(bin: string, args: string[]): Promise<string> {
    if (this.running >= MAX_PROJECT_PROCESSES) {
      if (this.waiting.length >= MAX_PROJECT_WAITING)
        throw new Error(`${MAX_PROJECT_WAITING} project lookups already waiting: not looked up`);
      await new Promise<void>((r) => this.waiting.push(r));
    }
    this.running++;
    const timeout = this.o.timeoutMs ?? PROJECT_LOOKUP_TIMEOUT_MS;
    try {
      return await new Promise((resolve, reject) => {
        execFile(
          bin,
          args,
          {
            timeout,
            killSignal: 'SIGKILL',
            maxBuffer: PROJECT_OUTPUT_MAX_BYTES,
            encoding: 'utf8',
            env: { PATH, LC_ALL: 'C' },
            ...(this.o.runAs ?? {}),
          },
          (e, out, err) => {
            if (e === null) return resolve(out);
            const x = e as NodeJS.ErrnoException & { killed?: boolean };
            const why =
              x.code === 'ENOENT'
                ? 'not found'
                : bin === (this.o.getent ?? 'getent') && (x.code as unknown) === 2
                  ? 'no such user'
                  : x.killed
                    ? `no answer in ${timeout} ms`
                    : err.trim().split('\n')[0] || `exit status ${String(x.code)}`;
            reject(new Error(`${bin} ${args.join(' ')}: ${why}`));
          },
        );
      });
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}
