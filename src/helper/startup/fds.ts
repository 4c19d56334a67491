// SECURITY: the first thing root's `serve` does. A file descriptor that root
// inherited without close-on-exec (a root-only file opened by whoever started
// it, a terminal, a socket) would be inherited by the front, which runs as
// the service user and could read or write through it (OpenSSH's closefrom()
// before running less trusted code). Node and libuv open all of their own
// descriptors with O_CLOEXEC, so one without it was inherited: it is closed.
// Kept: 0-2 (replaced by /dev/null and pipes for the front) and the
// listening sockets systemd passed (LISTEN_FDS, only if meant for this pid).
import { closeSync, readdirSync, readFileSync } from 'node:fs';

/** O_CLOEXEC as /proc/PID/fdinfo prints it (octal "flags:" field). */
const O_CLOEXEC = 0o2000000;

/** The fds systemd passed to this process, to keep: 3 .. 3+LISTEN_FDS-1. */
export function systemdFdRange(env: NodeJS.ProcessEnv, pid: number): number[] {
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return [];
  const n = Number(env.LISTEN_FDS);
  return Number.isInteger(n) && n >= 1 && n <= 64 ? Array.from({ length: n }, (_, i) => 3 + i) : [];
}

/** Closes every inherited fd above 2 except `keep`; returns the ones closed. */
export function closeInheritedFds(keep: readonly number[]): number[] {
  const closed: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (fd <= 2 || keep.includes(fd)) continue;
    let flags: number;
    try {
      const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1');
      flags = parseInt(/^flags:\s*([0-7]+)$/m.exec(info)?.[1] ?? '0', 8);
    } catch {
      continue; // the directory's own fd, gone once listed
    }
    if ((flags & O_CLOEXEC) !== 0) continue;
    closeSync(fd);
    closed.push(fd);
  }
  return closed;
}
