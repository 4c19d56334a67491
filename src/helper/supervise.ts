// SECURITY: serve mode, after root's start-up checks. Spawns the front with the
// service user's uid/gid (libuv drops supplementary groups: setgroups(0)), a
// fixed environment, the listening sockets (fds 4..) and one end of a
// socketpair (fd 3), closes its own copies of the sockets, then only answers
// the channel and relays signals. If the front dies the daemon exits non-zero
// and systemd (Restart=on-failure) starts both again with the same sockets.
// The front gets a session of its own (setsid: no controlling terminal) and
// nothing of root's on any fd: a front holding root's tty could push input
// into root's shell (TIOCSTI), one holding root's stdout could shut down
// root's journald stream (root's next log line would fail) or truncate and
// rewrite root's log file. Its stdout and stderr are pipes that root copies
// to its own, with pipe()'s backpressure; control characters (terminal
// escapes; the front's JSON lines never hold any) arrive escaped as text.
import { spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { Transform, type Duplex, type Readable, type Writable } from 'node:stream';
import { serveChannel } from './channel.js';
import type { QuotaRunner } from './quota-run.js';
import { log } from './log.js';
import { PROCESS_EXIT } from '../shared/exit.js';

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
/** Once the front has exited, its last log lines get this long to be copied. */
export const LOG_FLUSH_GRACE_MS = 2000;

/** C0 and C1 controls but tab and newline, and DEL: what a terminal would act on. */
const CONTROL = /[\0-\x08\x0b-\x1f\x7f-\x9f]/g;
const escape = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

export function relay(from: Readable | null, to: Writable): void {
  if (from === null) return;
  const text = new StringDecoder('utf8');
  const clean = new Transform({
    transform: (chunk: Buffer, _, done) => done(null, text.write(chunk).replace(CONTROL, escape)),
  });
  to.on('error', () => clean.resume()); // root's output closed: drop the lines, never block or crash
  from.pipe(clean).pipe(to, { end: false });
}

export function superviseFront(spec: FrontSpec, runQuota: QuotaRunner, minUid: number): void {
  if (spec.uid === 0 || spec.gid === 0) throw new Error('refusing to run the front as root');
  const child = spawn(spec.execPath, spec.args, {
    uid: spec.uid,
    gid: spec.gid,
    env: spec.env,
    cwd: '/',
    detached: true, // setsid(): a session of its own, no controlling terminal
    stdio: ['ignore', 'pipe', 'pipe', 'pipe', ...spec.listenFds],
  });
  spec.releaseListeners();
  relay(child.stdout, process.stdout);
  relay(child.stderr, process.stderr);
  let stopping = false;
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (sig !== 'SIGHUP' && !stopping) setTimeout(() => child.kill('SIGKILL'), FRONT_STOP_GRACE_MS).unref();
      stopping ||= sig !== 'SIGHUP';
      child.kill(sig);
    });
  }
  child.on('error', (e) => {
    // Without a pid it never started; with one, a signal could not be sent (no CAP_KILL).
    log('fatal', child.pid === undefined ? 'cannot start the front process' : 'cannot signal the front', {
      error: e.message,
    });
    process.exit(PROCESS_EXIT.FAILURE); // the front sees the channel close and stops by itself
  });
  const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
    const clean = stopping && code === 0;
    log(clean ? 'info' : 'error', clean ? 'front stopped, exiting' : 'front exited unexpectedly, exiting', {
      code,
      signal,
    });
    process.exit(clean ? PROCESS_EXIT.OK : PROCESS_EXIT.FAILURE);
  };
  // 'close' comes once the front's log pipes are drained too.
  child.on('exit', (code, signal) => setTimeout(() => finish(code, signal), LOG_FLUSH_GRACE_MS));
  child.on('close', finish);
  const channel = child.stdio[3] as Duplex; // channel gone or abused: the front goes, then the helper (non-zero)
  void serveChannel(channel, channel, { runQuota, minUid }).then((end) =>
    child.kill(end.kind === 'violation' ? 'SIGKILL' : 'SIGTERM'),
  );
}
