// A pid file for setups without systemd. A second start while the first runs
// is refused; a pid file left by a dead process is replaced.
import { readFileSync, writeFileSync, unlinkSync, openSync, closeSync } from 'node:fs';

export class PidFileError extends Error {
  override name = 'PidFileError';
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Claims the pid file for this process; removes it when the process exits. */
export function claimPidFile(path: string): void {
  let old: string | undefined;
  try {
    old = readFileSync(path, 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new PidFileError(`pid file ${path}: ${(e as NodeJS.ErrnoException).code}`);
  }
  if (old !== undefined) {
    const pid = /^\d{1,10}$/.test(old) ? Number(old) : NaN;
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new PidFileError(`already running: pid ${pid} (from ${path})`);
    }
    unlinkSync(path); // stale
  }
  try {
    // O_EXCL: if another instance won the race since the check, we lose.
    const fd = openSync(path, 'wx', 0o644);
    writeFileSync(fd, `${process.pid}\n`);
    closeSync(fd);
  } catch (e) {
    throw new PidFileError(`pid file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  process.on('exit', () => {
    try {
      if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
    } catch { /* already gone */ }
  });
}
