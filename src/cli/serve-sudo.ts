// `quotapolicy serve` started as the service user: privilege_mode sudo (no
// systemd, or an admin who must not start it as root). This process is the
// front; the root helper is `sudo -n sudo_helper` with no arguments, talking
// on its stdin/stdout. Not possible under NoNewPrivileges=yes: sudo refuses to
// run there. (As root, bin/quotapolicy.js runs src/helper/startup/serve.ts.)
import { spawn } from 'node:child_process';
import userid from 'userid';
import { Duplex } from 'node:stream';
import { loadConfig } from '../shared/config/load.js';
import { flagOf, type CommandLine } from '../shared/options.js';
import { preflight, bind, serveHere, type Listener } from '../helper/startup/listeners.js';
import { claimPidFile } from '../helper/startup/pidfile.js';

export class StartError extends Error {
  override name = 'StartError';
}

export async function serveSudo(cl: CommandLine): Promise<void> {
  const { config } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  if (config.privilege_mode !== 'sudo') {
    throw new StartError(
      'serve must be started as root (it keeps a root helper for quota and runs the front as the service user); or set privilege_mode: sudo',
    );
  }
  const me = { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  if (config.pid_file !== null) claimPidFile(config.pid_file, me.uid);
  await preflight(config.listen);
  let gid = me.gid;
  if (config.listen.some((s) => s.startsWith('unix:'))) {
    try {
      gid = userid.gid(config.socket_group);
    } catch {
      throw new StartError(`group ${config.socket_group} does not exist (create it, or set socket_group)`);
    }
  }
  const list: Listener[] = [];
  for (const spec of config.listen)
    list.push(await bind(spec, { uid: me.uid, gid, mode: parseInt(config.socket_mode, 8) }));
  process.on('exit', () => list.forEach((l) => l.removeSocket?.()));
  process.title = 'quotapolicy: front (sudo mode)';
  const [{ makeLogger }, { runFront }] = await Promise.all([
    import('../frontend/log.js'),
    import('../frontend/front.js'),
  ]);
  const log = makeLogger('front', config.log_level);
  const helper = spawn('sudo', ['-n', config.sudo_helper], { stdio: ['pipe', 'pipe', 'inherit'] });
  helper.on('error', (e) => {
    log.fatal({ err: e.message }, 'cannot run sudo');
    process.exit(1);
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
