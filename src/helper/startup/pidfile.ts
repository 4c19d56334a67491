// SECURITY: a pid file for setups without systemd, written by root (or by the
// service user in sudo mode). Its directory must be writable only by that
// owner (root: nobody else can plant, swap or remove it), and what is there
// is opened O_NOFOLLOW|O_NONBLOCK (a link or a FIFO cannot make root follow
// or hang) and read only if it is a small regular file holding a pid. A
// second start while the first runs is refused; a pid file whose pid is dead,
// or belongs to a process that is not quotapolicy (a pid reused after a
// reboot), is replaced.
import {
  closeSync,
  constants as fsc,
  fstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { checkTrustedPath, TrustError } from './trust.js';
import { QpError } from '../../shared/errors.js';

export class PidFileError extends QpError {
  override name = 'PidFileError';
  constructor(message: string) {
    super('QP_PID_FILE', message);
  }
}

/** "4194304\n" is 8 bytes; anything much larger is not our pid file. */
export const MAX_PID_FILE_BYTES = 32;
const READ_FLAGS = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
const CREATE_FLAGS = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;

function code(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

/** The pid in the file, undefined if there is no file; refuses anything odd. */
export function readPidFile(path: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(path, READ_FLAGS);
  } catch (e) {
    if (code(e) === 'ENOENT') return undefined;
    if (code(e) === 'ELOOP') throw new PidFileError(`pid file ${path} is a symbolic link: remove it`);
    throw new PidFileError(`pid file ${path}: ${code(e)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new PidFileError(`pid file ${path} is not a regular file: remove it`);
    if (st.size > MAX_PID_FILE_BYTES)
      throw new PidFileError(`pid file ${path} is ${st.size} bytes, not a pid: remove it`);
    const buf = Buffer.alloc(MAX_PID_FILE_BYTES + 1);
    const text = buf.toString('latin1', 0, readSync(fd, buf, 0, buf.length, 0));
    if (!/^[1-9]\d{0,9}\n?$/.test(text)) throw new PidFileError(`pid file ${path} does not hold a pid: remove it`);
    return Number(text.trim());
  } finally {
    closeSync(fd);
  }
}

/**
 * A live quotapolicy of this owner: the same node binary, running as the
 * owner, with quotapolicy on its command line. Any other process holds no
 * claim (a pid reused after a crash, `vim quotapolicy.yaml`, or anyone's
 * `sleep 30 quotapolicy` planted to block a restart).
 */
function isLiveQuotapolicy(pid: number, owner: number): boolean {
  try {
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1];
    return (
      Number(uid) === owner &&
      readlinkSync(`/proc/${pid}/exe`) === realpathSync(process.execPath) &&
      readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('quotapolicy')
    );
  } catch {
    return false;
  }
}

/** Claims the pid file for this process (owner: root, or the sudo-mode user); removed at exit. */
export function claimPidFile(path: string, owner: number): void {
  try {
    const who = owner === 0 ? 'root' : 'the service user';
    checkTrustedPath(
      dirname(path),
      'pid file directory',
      owner,
      `use a directory only ${who} can write, such as /run/quotapolicy`,
    );
  } catch (e) {
    throw e instanceof TrustError ? new PidFileError(e.message) : e;
  }
  const old = readPidFile(path);
  if (old !== undefined) {
    if (old !== process.pid && isLiveQuotapolicy(old, owner))
      throw new PidFileError(`already running: pid ${old} (from ${path})`);
    unlinkSync(path); // stale
  }
  let fd: number;
  try {
    // O_EXCL: if another instance won the race since the check, we lose.
    fd = openSync(path, CREATE_FLAGS, 0o644);
  } catch (e) {
    throw new PidFileError(`pid file ${path}: ${code(e)}`);
  }
  writeSync(fd, `${process.pid}\n`);
  closeSync(fd);
  process.on('exit', () => {
    try {
      if (readPidFile(path) === process.pid) unlinkSync(path);
    } catch {
      /* gone or replaced: not ours to remove */
    }
  });
}
