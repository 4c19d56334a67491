// SECURITY: `quotapolicy serve` as root, from bin/quotapolicy.js. Everything
// here runs before the first byte from anyone is read: close inherited fds,
// check the config file, look up the service user, check the quota binary,
// claim the pid file, bind the sockets. Then the process hands over to the
// helper (../supervise.ts) and from then on runs only helper code. Only
// src/helper and src/shared (and the packages they name: yaml, userid, execa)
// are ever loaded by the root process: test/root-surface.test.ts traces it.
import { closeSync, constants as fsc, existsSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import userid from 'userid';
import { loadConfig, DEFAULT_CONFIG_PATH, MAX_CONFIG_BYTES } from '../../shared/config/load.js';
import type { Config } from '../../shared/config/schema.js';
import { exitFor, KEEPS_RUNNING, QpError } from '../../shared/errors.js';
import { flagOf, toArgv, type CommandLine } from '../../shared/options.js';
import { systemdFds, preflight, bind, type Listener } from './listeners.js';
import { superviseFront } from '../supervise.js';
import { makeQuotaRunner } from '../quota-run.js';
import { log as helperLog } from '../log.js';
import { claimPidFile, PidFileError } from './pidfile.js';
import { closeInheritedFds, systemdFdRange } from './fds.js';
import { checkTrustedPath, TrustError } from './trust.js';
import { blocked, createStoreDir, preflight as pathPreflight, type Preflight, type ServiceUser } from './preflight.js';

export const FRONT_MAIN = fileURLToPath(new URL('../../frontend/main.js', import.meta.url));
/**
 * Node's options for the front. Each semi-space of V8's young generation (new objects) grows
 * under load to 16 MiB by default (64-bit), two of them: the front's garbage is a request's
 * strings and objects, dead within the request, and 4 MiB each hold it as well. Measured with
 * the PostgreSQL store at 128 connections (docs/BENCHMARKS.md, "The front on a cache hit"):
 * peak RSS ~20 MB lower, throughput within the noise.
 */
export const FRONT_NODE_OPTIONS = ['--max-semi-space-size=4'] as const;
/** The installed tree (or checkout) the front loads its code and packages from. */
const CODE_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

/**
 * The front runs as the service user and loads its own code: from a checkout
 * in a directory only root can enter (a 0700 home, /root) it would die with a
 * stack trace after start-up. Refuse before anything starts, saying what to do.
 */
export function checkFrontReadable(svc: { uid: number; gid: number }, user: string): void {
  for (const [path, bits] of [
    [FRONT_MAIN, 4],
    [`${CODE_ROOT}node_modules`, 1],
  ] as const) {
    let why: string | undefined;
    try {
      why = blocked(path, svc, bits);
    } catch (e) {
      throw new QpError('QP_START', `${path}: ${(e as NodeJS.ErrnoException).code} (run npm ci and npm run build)`);
    }
    if (why) {
      throw new QpError(
        'QP_START',
        `the front runs as ${user} and ${why}: ` +
          'install a copy it can read (sudo make install, then sudo /usr/sbin/quotapolicy serve), or clone into a directory others can enter',
      );
    }
  }
}
/** The front's whole environment: nothing of root's leaks through. */
export const FRONT_PATH = '/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function lookup(kind: 'user' | 'group', name: string): { uid: number; gid: number } {
  try {
    return kind === 'user' ? userid.ids(name) : { uid: -1, gid: userid.gid(name) };
  } catch {
    throw new QpError(
      'QP_START',
      `${kind} ${name} does not exist (create it, or set ${kind === 'user' ? 'user / --user' : 'socket_group'})`,
    );
  }
}

/** root must never run a quota(1) that someone else could have replaced. */
export function checkQuotaBinary(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new QpError('QP_START', `quota_path ${path}: ${code} (install the "quota" package, or set quota_path)`);
  }
  if (!st.isFile()) throw new QpError('QP_START', `quota_path ${path}: not a regular file`);
  if ((st.mode & 0o111) === 0) throw new QpError('QP_START', `quota_path ${path}: not executable`);
  if (st.uid !== 0) throw new QpError('QP_START', `quota_path ${path}: not owned by root`);
  if (st.mode & (fsc.S_IWGRP | fsc.S_IWOTH))
    throw new QpError('QP_START', `quota_path ${path}: writable by group or others`);
  checkTrustedPath(path, 'quota_path', 0, 'root runs it: keep it and its directories writable only by root');
}

/**
 * Root reads its config through one fd: opened without blocking (a FIFO
 * cannot hang start-up), checked to be a small regular file, the path then
 * checked to be writable only by root, and the fd checked to be the file at
 * that path; the text comes from that fd, so nothing can be swapped between
 * the check and the read.
 */
export function readTrustedConfig(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch (e) {
    // Absent: its directory must be one only root can write, or the file could appear later.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') checkTrustedPath(path, 'config file', 0, CONFIG_FIX);
    throw e; // then loadConfig decides: built-in defaults, or an error
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new TrustError(`config file ${path}: not a regular file`);
    if (st.size > MAX_CONFIG_BYTES) throw new TrustError(`config file ${path}: larger than ${MAX_CONFIG_BYTES} bytes`);
    checkTrustedPath(path, 'config file', 0, CONFIG_FIX);
    const now = statSync(path);
    if (now.dev !== st.dev || now.ino !== st.ino) throw new TrustError(`config file ${path}: replaced while starting`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * What root trusts by path, as serve checks it: the config file, quota(1)
 * and the pid file's directory, each writable only by root along its whole
 * path; the front's code, readable by the service user; and the preflight
 * (./preflight.ts). `quotapolicy check-config` runs the same checks, so its
 * "OK" holds; it returns the preflight's warnings, and serve's degradations.
 */
export function checkRootPaths(configPath: string, config: Config): string[] {
  checkTrustedPath(resolve(configPath), 'config file', 0, CONFIG_FIX);
  const { preflight } = startChecks(resolve(configPath), config, true);
  if (config.pid_file !== null) {
    try {
      checkTrustedPath(dirname(config.pid_file), 'pid file directory', 0, PID_DIR_FIX);
    } catch (e) {
      throw e instanceof TrustError ? new PidFileError(e.message) : e;
    }
  }
  return preflight.warnings;
}

/**
 * Everything serve checks once the config is read, in serve's order: the
 * service user, quota(1), the front's code, the preflight (its errors as one
 * QP_START error, one "quotapolicy: " line each, as main prints them).
 */
function startChecks(configPath: string, config: Config, sockets: boolean): { svc: ServiceUser; preflight: Preflight } {
  const svc = { name: config.user, ...lookup('user', config.user) };
  if (svc.uid === 0 || svc.gid === 0) {
    throw new QpError('QP_START', `user ${config.user} has uid or gid 0: the front must not run as root`);
  }
  checkQuotaBinary(config.quota_path);
  checkFrontReadable(svc, config.user);
  const preflight = pathPreflight(existsSync(configPath) ? configPath : undefined, config, svc, { sockets });
  if (preflight.errors.length > 0) throw new QpError('QP_START', preflight.errors.join('\nquotapolicy: '));
  return { svc, preflight };
}
/** What a root helper trusts: the config it was started from and the quota(1) it runs (`quotapolicy check` too). */
export function checkHelperPaths(configPath: string, config: Config): void {
  checkTrustedPath(resolve(configPath), 'config file', 0, CONFIG_FIX);
  checkQuotaBinary(config.quota_path);
}
const CONFIG_FIX = 'root reads it: make it and its directories writable only by root';
const PID_DIR_FIX = 'use a directory only root can write, such as /run/quotapolicy';

async function listeners(cfg: Config, svc: { uid: number; gid: number }): Promise<{ list: Listener[]; from: string }> {
  const inherited = systemdFds(process.env, process.pid);
  if (inherited) return { list: inherited, from: 'systemd' };
  const owner = cfg.socket_owner === null ? svc.uid : lookup('user', cfg.socket_owner).uid;
  const needGroup = cfg.listen.some((s) => s.startsWith('unix:'));
  const gid = needGroup ? lookup('group', cfg.socket_group).gid : svc.gid;
  await preflight(cfg.listen);
  const list: Listener[] = [];
  try {
    for (const spec of cfg.listen) {
      list.push(await bind(spec, { uid: owner, gid, mode: parseInt(cfg.socket_mode, 8) }));
    }
  } catch (e) {
    for (const l of list) {
      l.server?.close();
      l.cleanup?.();
      l.removeSocket?.();
    }
    throw e;
  }
  return { list, from: 'config' };
}

export async function serve(cl: CommandLine): Promise<void> {
  // Before anything else: nothing root inherited may reach the front.
  closeInheritedFds(systemdFdRange(process.env, process.pid));
  if (process.getuid?.() !== 0) throw new QpError('QP_START', 'serve must be started as root here');
  // The front runs with cwd /: it gets the config's absolute path.
  if (cl.configPath !== undefined) cl.configPath = resolve(cl.configPath);
  const configPath = cl.configPath ?? DEFAULT_CONFIG_PATH;
  const { config, source } = loadConfig({
    path: cl.configPath,
    overrides: cl.overrides,
    flagOf,
    read: readTrustedConfig,
  });
  if (config.privilege_mode === 'sudo') {
    throw new QpError('QP_START', 'privilege_mode sudo: start serve as the service user, not as root');
  }
  // systemd's sockets need no directory here.
  const { svc, preflight: pre } = startChecks(configPath, config, systemdFds(process.env, process.pid) === undefined);
  for (const w of pre.warnings) helperLog('warn', w);
  if (config.pid_file !== null) claimPidFile(config.pid_file, 0);
  for (const dir of pre.create) {
    createStoreDir(dir, svc);
    helperLog('info', 'created the directory for a SQLite file', { dir, owner: config.user, mode: '0750' });
  }
  const { list, from } = await listeners(config, svc);
  // A clean exit (or any other) leaves no socket behind that a later start or test could mistake for a live one.
  process.on('exit', () => list.forEach((l) => l.removeSocket?.()));
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDNAMES;
  process.title = 'quotapolicy: helper (root)';
  const frontFds = list.map((_, i) => 4 + i);
  helperLog('info', 'starting front', {
    config: source,
    user: config.user,
    uid: svc.uid,
    gid: svc.gid,
    listen: list.map((l) => l.name),
    sockets_from: from,
  });
  superviseFront(
    {
      execPath: process.execPath,
      args: [...FRONT_NODE_OPTIONS, FRONT_MAIN, ...toArgv(cl)],
      uid: svc.uid,
      gid: svc.gid,
      env: { PATH: FRONT_PATH, LANG: 'C.UTF-8', QUOTAPOLICY_LISTEN_FDS: frontFds.join(',') },
      listenFds: list.map((l) => l.fd),
      releaseListeners: () => {
        for (const l of list) {
          if (l.server) l.server.close();
          else closeSync(l.fd);
          l.cleanup?.();
        }
      },
    },
    makeQuotaRunner(config.quota_path, config.quota_timeout_ms),
    config.min_uid,
  );
}

/** The root process's whole command: one line on stderr and a sysexits status on failure. */
export async function main(cl: CommandLine, err: (s: string) => void): Promise<number> {
  try {
    await serve(cl);
    return KEEPS_RUNNING;
  } catch (e) {
    return exitFor(e, err);
  }
}
