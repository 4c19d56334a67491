// `quotapolicy serve` started as the service user: privilege_mode sudo (no
// systemd, or an admin who must not start it as root). This process is the
// front; the root helper is `sudo -n sudo_helper` with no arguments, talking
// on its stdin/stdout. Not possible under NoNewPrivileges=yes: sudo refuses to
// run there. (As root, bin/quotapolicy.js runs src/helper/startup/serve.ts.)
import { spawn, spawnSync } from 'node:child_process';
import { constants as fsc, statSync } from 'node:fs';
import userid from 'userid';
import { Duplex } from 'node:stream';
import { loadConfig } from '../shared/config/load.js';
import { flagOf, type CommandLine } from '../shared/options.js';
import { preflight, bind, serveHere, type Listener } from '../helper/startup/listeners.js';
import { claimPidFile } from '../helper/startup/pidfile.js';
import { HELPER_DEFAULTS } from '../shared/wire.js';
import { EXIT, QpError } from '../shared/errors.js';

/** Where `make install SUDOERS=yes` puts the drop-in (named in the error when sudo refuses). */
export const SUDOERS_DROP_IN = '/etc/sudoers.d/quotapolicy';
/** `sudo -n -l` answers at once; a hang (a broken NSS or LDAP) must not hang start-up. */
const SUDO_CHECK_TIMEOUT_MS = 10_000;

export async function serveSudo(cl: CommandLine): Promise<void> {
  const { config } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  // The original's flags, started unprivileged (its init script's --chuid): it ran sudo, so sudo mode.
  if (config.privilege_mode !== 'sudo' && !cl.legacy) {
    throw new QpError(
      'QP_START',
      'serve must be started as root (it keeps a root helper for quota and runs the front as the service user); or set privilege_mode: sudo',
    );
  }
  // The drop-in pins the helper to no arguments: it runs its built-in quota(1), nothing else.
  if (config.quota_path !== HELPER_DEFAULTS.quotaPath) {
    throw new QpError(
      'QP_START',
      `sudo mode runs ${HELPER_DEFAULTS.quotaPath}, the helper's built-in (the sudoers drop-in allows it no arguments): ${flagOf('quota_path')} ${config.quota_path} needs root mode (start serve as root)`,
    );
  }
  const sudo = cl.sudoPath === undefined ? 'sudo' : checkSudoPath(cl.sudoPath);
  checkSudoAllowed(sudo, config.sudo_helper);
  const me = { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  if (config.pid_file !== null) claimPidFile(config.pid_file, me.uid);
  await preflight(config.listen);
  let gid = me.gid;
  if (config.listen.some((s) => s.startsWith('unix:'))) {
    try {
      gid = userid.gid(config.socket_group);
    } catch {
      throw new QpError('QP_START', `group ${config.socket_group} does not exist (create it, or set socket_group)`);
    }
    // Giving the socket to a group needs membership; the kernel's EPERM alone would not say so.
    if (gid !== me.gid && !(process.getgroups?.() ?? []).includes(gid))
      throw new QpError(
        'QP_START',
        `sudo mode: the socket goes to group ${config.socket_group} (socket_group) and ${whoami()} is not in it: adduser ${whoami()} ${config.socket_group}, or set socket_group`,
      );
  }
  const list: Listener[] = [];
  for (const spec of config.listen)
    list.push(await bind(spec, { uid: me.uid, gid, mode: parseInt(config.socket_mode, 8) }));
  // The socket, and the staging directory it was bound in (empty by now).
  process.on('exit', () => list.forEach((l) => (l.removeSocket?.(), l.cleanup?.())));
  process.title = 'quotapolicy: front (sudo mode)';
  const [{ makeLogger }, { runFront }] = await Promise.all([
    import('../frontend/log.js'),
    import('../frontend/front.js'),
  ]);
  const log = makeLogger('front', config.log_level);
  const helper = spawn(sudo, ['-n', config.sudo_helper], { stdio: ['pipe', 'pipe', 'inherit'] });
  helper.on('error', (e) => {
    log.fatal({ err: e.message }, 'cannot run sudo');
    process.exit(EXIT.FAILURE);
  });
  helper.on('exit', (code, signal) => log.warn({ code, signal }, 'sudo helper exited'));
  await runFront({
    cl,
    config,
    log,
    channel: Duplex.from({ readable: helper.stdout, writable: helper.stdin }),
    listen: list.map((l) => (l.server ? { server: serveHere(l.server), name: l.name } : { fd: l.fd })),
  });
}

/** --sudopath (the original's flag): the front runs it, so it must be root's, not anyone's. */
export function checkSudoPath(path: string): string {
  if (!path.startsWith('/')) throw new QpError('QP_START', `--sudopath ${path}: not an absolute path`);
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new QpError('QP_START', `--sudopath ${path}: ${(e as NodeJS.ErrnoException).code}`);
  }
  if (!st.isFile()) throw new QpError('QP_START', `--sudopath ${path}: not a regular file`);
  if (st.uid !== 0) throw new QpError('QP_START', `--sudopath ${path}: not owned by root`);
  if (st.mode & (fsc.S_IWGRP | fsc.S_IWOTH))
    throw new QpError('QP_START', `--sudopath ${path}: writable by group or others`);
  return path;
}

/** Refuses to start (one line, naming the drop-in) unless sudo lets this user run the helper without a password. */
function checkSudoAllowed(sudo: string, helper: string): void {
  const r = spawnSync(sudo, ['-n', '-l', helper], { stdio: 'ignore', timeout: SUDO_CHECK_TIMEOUT_MS });
  if (r.error)
    throw new QpError('QP_START', `sudo mode: cannot run ${sudo}: ${(r.error as NodeJS.ErrnoException).code}`);
  if (r.status !== 0) {
    throw new QpError(
      'QP_START',
      `sudo mode: sudo -n does not let ${whoami()} run ${helper}: install the drop-in as ${SUDOERS_DROP_IN} (make install SUDOERS=yes, or install -m 0440 sudoers.d/quotapolicy ${SUDOERS_DROP_IN})`,
    );
  }
}

function whoami(): string {
  const uid = process.getuid?.() ?? -1;
  try {
    return userid.username(uid);
  } catch {
    return `uid ${uid}`;
  }
}
