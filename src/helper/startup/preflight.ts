// SECURITY: one preflight, run by `quotapolicy check-config` and by `serve`
// before anything starts, so that both give the same verdict: the files the
// front reads as the service user, and the directories the daemon writes.
// Errors are what would stop serve (or kill the front at start); warnings are
// what serve would start with but degraded (rate limiting answering
// db_error_action, or quota notices failing). The one thing serve does about it: a missing SQLite
// directory whose parent only root can write is created, owned by the service
// user, mode 0750 (as policyd-rate-limit does) -- through fds, never by a path
// in a directory someone else could change.
import {
  closeSync,
  constants as fsc,
  fchmodSync,
  fchownSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  realpathSync,
  statSync,
  type Stats,
} from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Config } from '../../shared/config/schema.js';
import { checkTrustedPath, TrustError } from './trust.js';

export interface ServiceUser {
  name: string;
  uid: number;
  gid: number;
}
export interface Preflight {
  errors: string[];
  warnings: string[];
  /** Directories serve creates for the service user (a missing SQLite directory). */
  create: string[];
}

/** Can uid/gid (no supplementary groups: the front has none) use these mode bits? */
function permits(st: Stats, who: { uid: number; gid: number }, bits: number): boolean {
  if (st.uid === who.uid) return ((st.mode >> 6) & bits) === bits;
  if (st.gid === who.gid) return ((st.mode >> 3) & bits) === bits;
  return (st.mode & bits) === bits;
}

const mode = (st: Stats): string => (st.mode & 0o7777).toString(8).padStart(4, '0');
const code = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? String(e);
const parents = (path: string): string[] =>
  path
    .split('/')
    .filter(Boolean)
    .slice(0, -1)
    .map((_, i, parts) => `/${parts.slice(0, i + 1).join('/')}`);

/** The first place along `path` (its directories, then itself) that `svc` cannot use, or undefined. */
export function blocked(path: string, svc: { uid: number; gid: number }, bits: number): string | undefined {
  for (const p of ['/', ...parents(path)]) {
    const st = statSync(p);
    if (!permits(st, svc, 1)) return `cannot enter ${p} (mode ${mode(st)}, owner uid ${st.uid})`;
  }
  const st = statSync(path);
  const what = bits === 4 ? 'read' : bits === 1 ? 'enter' : 'write';
  if (!permits(st, svc, bits)) return `cannot ${what} ${path} (mode ${mode(st)}, owner uid ${st.uid})`;
  return undefined;
}

function isDirectory(path: string): boolean | string {
  try {
    return statSync(path).isDirectory();
  } catch (e) {
    return code(e);
  }
}

/** What is wrong with `dir` as a directory to write in, or undefined. */
function notADirectory(dir: string): string | undefined {
  const d = isDirectory(dir);
  if (d === true) return undefined;
  return `directory ${dir} ${d === false ? 'is not a directory' : d === 'ENOENT' ? 'does not exist' : `: ${d}`}`;
}

/** Refused unless only root can change `dir` and the directories above it. */
function rootOnly(dir: string): string | undefined {
  try {
    checkTrustedPath(dir, 'directory', 0, '');
    return undefined;
  } catch (e) {
    if (e instanceof TrustError) return e.message.replace(/; $/, '');
    throw e;
  }
}

export function preflight(
  configPath: string | undefined,
  config: Config,
  svc: ServiceUser,
  opts: { sockets: boolean },
): Preflight {
  const out: Preflight = { errors: [], warnings: [], create: [] };
  const user = svc.name;
  // The front re-reads the config as the service user.
  if (configPath !== undefined && isDirectory(configPath) !== 'ENOENT') {
    for (const path of new Set([configPath, realpathSync(configPath)])) {
      const why = blocked(path, svc, 4);
      if (why)
        out.errors.push(
          `config file ${configPath}: the front runs as ${user} and ${why}: ` +
            `make it readable by ${user} (chgrp ${user} ${configPath} && chmod 0640 ${configPath}; its directories: chmod o+x)`,
        );
    }
  }
  if (config.pid_file !== null) {
    const dir = dirname(config.pid_file);
    const bad = notADirectory(dir);
    if (bad)
      out.errors.push(`pid file ${config.pid_file}: ${bad}: create it (install -d -m 0755 ${dir}), or set pid_file`);
  }
  if (opts.sockets) {
    for (const spec of config.listen.filter((s) => s.startsWith('unix:'))) {
      const dir = dirname(spec.slice(5));
      const bad = notADirectory(dir);
      if (bad)
        out.errors.push(
          `${spec}: ${bad}: create it (Postfix's private directory: install -d -o postfix -g root -m 0700 ${dir}), or change listen`,
        );
    }
  }
  const rl = config.rate_limit;
  if (config.checks.includes('rate_limit') && rl.backend === 'sqlite')
    storeFile(out, svc, `rate_limit.sqlite_path ${rl.sqlite_path}`, rl.sqlite_path, 'set sqlite_path', {
      what: 'rate limiting would answer db_error_action',
      to: `(${rl.db_error_action}) to every request`,
    });
  const qw = config.quota_warnings;
  if (config.checks.includes('quota') && qw.notify)
    storeFile(out, svc, `quota_warnings.state_path ${qw.state_path}`, qw.state_path, 'set state_path', {
      what: 'quota notices would fail',
      to: '(logged) and none be sent',
    });
  return out;
}

/**
 * A SQLite file the front writes (`what` names its key): its directory must
 * exist (or be one serve may create) and be the service user's to write in.
 */
function storeFile(
  out: Preflight,
  svc: ServiceUser,
  what: string,
  path: string,
  setIt: string,
  degraded: { what: string; to: string },
): void {
  const user = svc.name;
  const dir = dirname(path);
  // SECURITY: root only looks here (lstat: no symlink is followed), and never tells the admin to
  // chown or create by path where someone else could plant a name: root-only parents only.
  const choose = `choose a ${setIt.replace(/^set /, '')} whose directory's parent only root can write`;
  const d = isDirectory(dir);
  if (d === 'ENOENT') {
    const parent = dirname(dir);
    const p = isDirectory(parent);
    const notRoot = p === true ? rootOnly(parent) : undefined;
    if (p === true && notRoot === undefined) {
      if (!out.create.includes(dir)) out.create.push(dir);
    } else
      out.errors.push(
        `${what}: directory ${dir} does not exist, and serve creates it only in a directory only root can write ` +
          `(${p === true ? notRoot : `${parent}: ${p === false ? 'not a directory' : p}`}): ${choose} (serve then creates it)`,
      );
  } else if (d !== true) {
    out.errors.push(`${what}: ${dir} ${d === false ? 'is not a directory' : `: ${d}`}: ${setIt}`);
  } else {
    // Serve would start, degraded. A name in the directory is the directory owner's to plant: look, never follow.
    const file = lstatOrCode(path);
    const planted =
      typeof file !== 'string' && (file.isSymbolicLink() || !file.isFile() || (file.uid !== svc.uid && file.uid !== 0));
    const why = blocked(dir, svc, 3) ?? (typeof file === 'string' || planted ? undefined : blocked(path, svc, 6));
    const rootParent = rootOnly(dirname(dir)) === undefined && !lstatSync(dir).isSymbolicLink();
    if (planted)
      out.warnings.push(
        `${what}: ${path} is ${file.isSymbolicLink() ? 'a symbolic link' : file.isFile() ? `owned by uid ${file.uid}` : 'not a regular file'}: ` +
          `${degraded.what} ${degraded.to}: remove it (the front creates it)`,
      );
    else if (why)
      out.warnings.push(
        `${what}: the front runs as ${user} and ${why}: ${degraded.what} ${degraded.to}: ` +
          (rootParent
            ? `chown ${user} ${dir} && chmod 0750 ${dir}${why.includes(path) ? `, and remove ${path} (the front creates it)` : ''}`
            : choose),
      );
  }
}

function lstatOrCode(path: string): Stats | string {
  try {
    return lstatSync(path);
  } catch (e) {
    return code(e);
  }
}

/**
 * Creates `dir` for the service user, 0750. Its parent must be a directory
 * only root can change (checked along its real path, then opened O_NOFOLLOW
 * and compared): nobody else can plant or swap a name in it, and every step
 * after the check goes through fds.
 */
export function createStoreDir(dir: string, svc: ServiceUser): void {
  const parent = realpathSync(dirname(dir));
  const notRoot = rootOnly(parent);
  if (notRoot) throw new TrustError(`directory ${dir} for a SQLite file: ${notRoot}`);
  const pfd = openSync(parent, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW);
  try {
    const st = fstatSync(pfd);
    const now = lstatSync(parent);
    if (st.dev !== now.dev || st.ino !== now.ino) throw new TrustError(`${parent}: replaced while starting`);
    const at = `/proc/self/fd/${pfd}/${basename(dir)}`;
    mkdirSync(at, 0o700);
    const fd = openSync(at, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW);
    try {
      const made = fstatSync(fd);
      if (made.uid !== 0 || !made.isDirectory()) throw new TrustError(`${dir}: not the directory just created`);
      fchownSync(fd, svc.uid, svc.gid);
      fchmodSync(fd, 0o750);
    } finally {
      closeSync(fd);
    }
  } finally {
    closeSync(pfd);
  }
}
