// `quotapolicy serve`: root start-up. Everything here runs before the first
// byte from anyone is read: check the config, look up the service user, check
// the quota binary, bind the sockets. Then the process hands over to the
// helper (src/helper/supervise.ts) and from then on runs only helper code.
import { statSync, closeSync, constants as fsc } from 'node:fs';
import { fileURLToPath } from 'node:url';
import userid from 'userid';
import { loadConfig } from '../frontend/config/load.js';
import type { Config } from '../frontend/config/schema.js';
import { flagOf, toArgv, type CommandLine } from '../frontend/options.js';
import { systemdFds, preflight, bind, type Listener } from './listeners.js';
import { superviseFront } from '../helper/supervise.js';
import { makeQuotaRunner } from '../helper/quota-run.js';
import { log as helperLog } from '../helper/log.js';
import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import { claimPidFile } from './pidfile.js';

export class StartError extends Error {
  override name = 'StartError';
}

export const FRONT_MAIN = fileURLToPath(new URL('../frontend/main.js', import.meta.url));
/** The front's whole environment: nothing of root's leaks through. */
export const FRONT_PATH = '/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function lookup(kind: 'user' | 'group', name: string): { uid: number; gid: number } {
  try {
    return kind === 'user' ? userid.ids(name) : { uid: -1, gid: userid.gid(name) };
  } catch {
    throw new StartError(`${kind} ${name} does not exist (create it, or set ${kind === 'user' ? 'user / --user' : 'socket_group'})`);
  }
}

/** root must never run a quota(1) that someone else could have replaced. */
export function checkQuotaBinary(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new StartError(`quota_path ${path}: ${(e as NodeJS.ErrnoException).code} (install the "quota" package, or set quota_path)`);
  }
  if (!st.isFile()) throw new StartError(`quota_path ${path}: not a regular file`);
  if ((st.mode & 0o111) === 0) throw new StartError(`quota_path ${path}: not executable`);
  if (st.uid !== 0) throw new StartError(`quota_path ${path}: not owned by root`);
  if (st.mode & (fsc.S_IWGRP | fsc.S_IWOTH)) throw new StartError(`quota_path ${path}: writable by group or others`);
}

async function listeners(cfg: Config, svc: { uid: number; gid: number }): Promise<{ list: Listener[]; from: string }> {
  const inherited = systemdFds(process.env, process.pid);
  if (inherited) return { list: inherited, from: 'systemd' };
  const owner = cfg.socket_owner === null ? svc.uid : lookup('user', cfg.socket_owner).uid;
  const needGroup = cfg.listen.some((s) => s.startsWith('unix:'));
  const gid = needGroup ? lookup('group', cfg.socket_group).gid : svc.gid;
  await preflight(cfg.listen);
  const list: Listener[] = [];
  try {
    for (const spec of cfg.listen) list.push(await bind(spec, { uid: owner, gid, mode: parseInt(cfg.socket_mode, 8) }));
  } catch (e) {
    for (const l of list) l.server?.close();
    throw e;
  }
  return { list, from: 'config' };
}

export async function serve(cl: CommandLine): Promise<void> {
  const { config, source } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  if (config.privilege_mode === 'sudo') return serveSudo(cl, config);
  if (process.getuid?.() !== 0) {
    throw new StartError('serve must be started as root (it keeps a root helper for quota and runs the front as the service user); or set privilege_mode: sudo');
  }
  const svc = lookup('user', config.user);
  if (svc.uid === 0 || svc.gid === 0) throw new StartError(`user ${config.user} has uid or gid 0: the front must not run as root`);
  checkQuotaBinary(config.quota_path);
  if (config.pid_file !== null) claimPidFile(config.pid_file);
  const { list, from } = await listeners(config, svc);
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDNAMES;
  process.title = 'quotapolicy: helper (root)';
  const frontFds = list.map((_, i) => 4 + i);
  helperLog('info', 'starting front', { config: source, user: config.user, uid: svc.uid, gid: svc.gid, listen: list.map((l) => l.name), sockets_from: from });
  superviseFront({
    execPath: process.execPath,
    args: [FRONT_MAIN, ...toArgv(cl)],
    uid: svc.uid,
    gid: svc.gid,
    env: { PATH: FRONT_PATH, LANG: 'C.UTF-8', QUOTAPOLICY_LISTEN_FDS: frontFds.join(',') },
    listenFds: list.map((l) => l.fd),
    releaseListeners: () => {
      for (const l of list) {
        if (l.server) l.server.close();
        else closeSync(l.fd);
      }
    },
  }, makeQuotaRunner(config.quota_path, config.quota_timeout_ms), config.min_uid);
}

/**
 * privilege_mode sudo: started as the service user (no systemd, or an admin
 * who must not start it as root). This process is the front; the root helper
 * is `sudo -n sudo_helper` with no arguments, talking on its stdin/stdout.
 * Not possible under NoNewPrivileges=yes: sudo refuses to run there.
 */
async function serveSudo(cl: CommandLine, config: Config): Promise<void> {
  if (process.getuid?.() === 0) throw new StartError('privilege_mode sudo: start serve as the service user, not as root');
  if (config.pid_file !== null) claimPidFile(config.pid_file);
  const me = { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  const { list } = await listeners({ ...config, socket_owner: null }, me);
  process.title = 'quotapolicy: front (sudo mode)';
  // The front's code is loaded only here: the root process of serve mode never runs it.
  const [{ makeLogger }, { runFront }] = await Promise.all([import('../frontend/log.js'), import('../frontend/front.js')]);
  const log = makeLogger('front', config.log_level);
  const helper = spawn('sudo', ['-n', config.sudo_helper], { stdio: ['pipe', 'pipe', 'inherit'] });
  helper.on('error', (e) => {
    log.fatal({ err: e.message }, 'cannot run sudo');
    process.exit(1);
  });
  helper.on('exit', (code, signal) => log.warn({ code, signal }, 'sudo helper exited'));
  await runFront({
    cl, config, log,
    channel: Duplex.from({ readable: helper.stdout, writable: helper.stdin }),
    listen: list.map((l) => (l.server ? { server: l.server, name: l.name } : { fd: l.fd })),
  });
}
