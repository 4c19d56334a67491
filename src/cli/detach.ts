// The original quotapolicy's way of starting: its Debian init script runs
//   start-stop-daemon --pidfile HOMEDIR/quotapolicy.pid --user quotapolicy \
//     --chuid quotapolicy --startas /usr/local/bin/quotapolicy --start -- \
//     --homedir HOMEDIR --pidfile quotapolicy.pid --socketfile quotapolicy.socket \
//     --quotapath /usr/bin/quota --sudopath /usr/bin/sudo --recipient-delimiter +
// with no command and no --background, and waits for it to return; the
// original (python-daemon) forked, the child took its own session and wrote
// the pid file, and --debug kept it in the foreground. This does the same
// without forking a running Node process (it cannot): it starts itself again
// as `serve` with the same flags, in a new session, with stdin on /dev/null
// and stdout and stderr on HOMEDIR's log file, and returns 0 only once the
// pid file names that child and its socket accepts a connection. If the child
// ends first, its own one-line error is repeated here with its status. Run
// by whoever starts it (root or the service user) before any daemon work:
// the child is an ordinary `serve`, with every check that implies.
import { spawn } from 'node:child_process';
import { closeSync, constants as fsc, fstatSync, openSync, readSync } from 'node:fs';
import { constants as osc } from 'node:os';
import { connect } from 'node:net';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError, type CommandLine } from '../shared/options.js';
import { readPidFile } from '../helper/startup/pidfile.js';
import { checkTrustedPath } from '../helper/startup/trust.js';
import { EXIT } from '../shared/errors.js';

/** Long enough for start-up checks, the front's start and sudo; a daemon not up by then is stopped, not left behind. */
export const READY_TIMEOUT_MS = 30_000;
/** How often the pid file and the socket are looked at while waiting. */
const POLL_MS = 100;
/** The detached daemon's stdout and stderr, next to its pid file (the original's homedir). */
export const LOG_NAME = 'quotapolicy.log';
/** A failed start's own error is at the end of the log; more than this is not it. */
const MAX_RELAY_BYTES = 64 * 1024;
const BIN = fileURLToPath(new URL('../../../bin/quotapolicy.js', import.meta.url));
/** A child killed by a signal is reported as the shell reports it: 128 + the signal's number. */
const SIGNALLED_BASE = 128;

function canConnect(path: string): Promise<boolean> {
  return new Promise((done) => {
    const s = connect(path);
    s.on('connect', () => (s.destroy(), done(true)));
    s.on('error', () => done(false));
  });
}

/** The log, appended to; as root only in a directory nobody else can write (the pid file's rule too). */
function openLog(path: string): number {
  const uid = process.getuid?.() ?? -1;
  if (uid === 0)
    checkTrustedPath(
      dirname(path),
      'log directory',
      0,
      "as root (root mode) the homedir must be writable only by root; the original's init script starts it as the service user (--chuid): sudo mode",
    );
  const flags = fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
  let fd: number;
  try {
    fd = openSync(path, flags, 0o640);
  } catch (e) {
    throw new UsageError(`log ${path}: ${(e as NodeJS.ErrnoException).code}`);
  }
  const st = fstatSync(fd);
  if (!st.isFile() || st.uid !== uid || st.nlink !== 1) {
    closeSync(fd);
    throw new UsageError(`log ${path}: not a regular file of this user's with one link: remove it`);
  }
  return fd;
}

/** What the child said after `from` that is not a JSON log line: its own "quotapolicy: ..." error. */
function relay(path: string, from: number): string {
  const fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(from, size - MAX_RELAY_BYTES);
    const buf = Buffer.alloc(size - start);
    const text = buf.toString('utf8', 0, readSync(fd, buf, 0, buf.length, start));
    return text
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('{'))
      .map((l) => `${l}\n`)
      .join('');
  } finally {
    closeSync(fd);
  }
}

export async function detach(
  argv: string[],
  cl: CommandLine,
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  const pidFile = cl.overrides.pid_file as string | undefined;
  const socket = (cl.overrides.listen as string[] | undefined)?.find((s) => s.startsWith('unix:'))?.slice(5);
  if (pidFile === undefined || !isAbsolute(pidFile) || socket === undefined || !isAbsolute(socket)) {
    throw new UsageError(
      "started the original's way (no command, so it detaches): give -H/--homedir as an absolute path, as the original required; or run quotapolicy serve (foreground)",
    );
  }
  const log = join(dirname(pidFile), LOG_NAME);
  const fd = openLog(log);
  const from = fstatSync(fd).size;
  const child = spawn(process.execPath, [BIN, 'serve', ...argv], {
    detached: true, // setsid(): its own session, as python-daemon did
    stdio: ['ignore', fd, fd],
    cwd: '/',
  });
  closeSync(fd);
  let ended: number | undefined;
  child.on('exit', (code, signal) => (ended = code ?? SIGNALLED_BASE + (signal ? osc.signals[signal] : 0)));
  child.on('error', (e) => err(`quotapolicy: cannot start ${process.execPath}: ${e.message}\n`));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    if (ended !== undefined) {
      err(relay(log, from) || `quotapolicy: the daemon exited with status ${ended} while starting: see ${log}\n`);
      return ended === 0 ? EXIT.SOFTWARE : ended;
    }
    let pid: number | undefined;
    try {
      pid = readPidFile(pidFile);
    } catch {
      pid = undefined; // being written, or odd: the child will say so
    }
    if (pid === child.pid && (await canConnect(socket))) {
      child.unref();
      out(`quotapolicy: running, pid ${pid}; log: ${log}\n`);
      return EXIT.OK;
    }
    if (Date.now() > deadline) {
      child.kill('SIGTERM');
      err(`quotapolicy: not ready within ${READY_TIMEOUT_MS / 1000} s (pid file and socket): stopped it; see ${log}\n`);
      return EXIT.SOFTWARE;
    }
  }
}
