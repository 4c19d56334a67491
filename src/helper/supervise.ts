// SECURITY: serve mode, after root's start-up checks. Spawns the front with the
// service user's uid/gid (libuv drops supplementary groups: setgroups(0)), a
// fixed environment, the listening sockets (fds 4..) and one end of a
// socketpair (fd 3), closes its own copies of the sockets, then only answers
// the channel and relays signals. If the front dies the daemon exits non-zero
// and systemd (Restart=on-failure) starts both again with the same sockets.
import { spawn } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { serveChannel } from './channel.js';
import type { QuotaRunner } from './quota-run.js';
import { log } from './log.js';

export interface FrontSpec {
  execPath: string;
  args: string[];
  uid: number;
  gid: number;
  env: Record<string, string>;
  listenFds: number[];
  /** Closes root's own copies once the front has them. */
  releaseListeners(): void;
}
/** After SIGTERM the front drains by its own deadline; this is the backstop. */
export const FRONT_STOP_GRACE_MS = 60_000;

export function superviseFront(spec: FrontSpec, runQuota: QuotaRunner, minUid: number): void {
  if (spec.uid === 0 || spec.gid === 0) throw new Error('refusing to run the front as root');
  const child = spawn(spec.execPath, spec.args, {
    uid: spec.uid,
    gid: spec.gid,
    env: spec.env,
    cwd: '/',
    stdio: ['ignore', 'inherit', 'inherit', 'pipe', ...spec.listenFds],
  });
  spec.releaseListeners();
  let stopping = false;
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (sig !== 'SIGHUP' && !stopping) setTimeout(() => child.kill('SIGKILL'), FRONT_STOP_GRACE_MS).unref();
      stopping ||= sig !== 'SIGHUP';
      child.kill(sig);
    });
  }
  child.on('error', (e) => (log('fatal', 'cannot start the front process', { error: e.message }), process.exit(1)));
  child.on('exit', (code, signal) => {
    const clean = stopping && code === 0;
    log(clean ? 'info' : 'error', clean ? 'front stopped, exiting' : 'front exited unexpectedly, exiting', {
      code,
      signal,
    });
    process.exit(clean ? 0 : 1);
  });
  const channel = child.stdio[3] as Duplex; // channel gone or abused: the front goes, then the helper (non-zero)
  void serveChannel(channel, channel, { runQuota, minUid }).then((end) =>
    child.kill(end.kind === 'violation' ? 'SIGKILL' : 'SIGTERM'),
  );
}
