// SECURITY: root start-up: the listening sockets handed to the front. Either
// systemd's (LISTEN_FDS/LISTEN_PID, fds 3..) or created here from `listen`, so
// that unix sockets can be given to Postfix's group and privileged ports bound.
//
// A unix socket's directory may be writable by others: by postfix for the
// default /var/spool/postfix/private, by the service user for -H DIR. They can
// swap any name in it at any moment, so root never acts on a path there:
// - the directory is opened once (O_DIRECTORY|O_NOFOLLOW) and every later step
//   names it through /proc/self/fd/N, so renaming the directory changes nothing;
// - the socket is bound inside a staging directory that mkdtemp creates in it,
//   mode 0700 and owned by root, checked through its own fd (type, owner, mode,
//   empty); nobody else can enter it, so its one entry is the socket we bound;
// - the socket gets its mode at bind (umask) and its owner there (chown inside
//   the staging directory: no link to follow, no name to swap);
// - it then appears in the socket directory by link(2), which neither follows
//   a link nor replaces an existing name: a name planted meanwhile fails the
//   start with a clear error instead of being overwritten;
// - a stale socket is removed with unlink(2), which never follows a link and
//   removes only a name that whoever planted it could remove too.
// The only thing root does by name in such a directory that touches another
// object is the stale-socket probe: a connect that sends nothing.
import net from 'node:net';
import {
  closeSync,
  chownSync,
  constants as fsc,
  fstatSync,
  linkSync,
  lstatSync,
  mkdtempSync,
  openSync,
  rmdirSync,
  unlinkSync,
} from 'node:fs';
import { basename, dirname } from 'node:path';
import { socketAddress, type SocketAddress } from '../../shared/config/checks.js';
import { checkTrustedDirectory, TrustError } from './trust.js';
import { QpError } from '../../shared/errors.js';

/** First fd systemd passes (SD_LISTEN_FDS_START). */
export const SD_LISTEN_FDS_START = 3;
/** A live instance answers a connect at once; a stale socket refuses at once. */
const STALE_PROBE_TIMEOUT_MS = 2000;

export interface Listener {
  fd: number;
  name: string;
  server?: net.Server;
  /** After the server is closed: remove the staging directory, close its fd. */
  cleanup?: () => void;
  /** At exit: remove the socket's name, if it still is the socket bound here. */
  removeSocket?: () => void;
}

export class ListenError extends QpError {
  override name = 'ListenError';
  constructor(message: string) {
    super('QP_LISTEN', message);
  }
}

/** systemd socket activation, if these fds are meant for this process. */
export function systemdFds(env: NodeJS.ProcessEnv, pid: number): Listener[] | undefined {
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return undefined;
  const n = Number(env.LISTEN_FDS);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new ListenError(`bad LISTEN_FDS "${env.LISTEN_FDS}"`);
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  return Array.from({ length: n }, (_, i) => ({
    fd: SD_LISTEN_FDS_START + i,
    name: `systemd:${names[i] || `fd${SD_LISTEN_FDS_START + i}`}`,
  }));
}

/** Opens a socket's directory once: every later step goes through this fd. */
function openDir(spec: string, dir: string): number {
  try {
    // O_NOFOLLOW covers the last name only: the directories above must be ones nobody else can swap.
    const owner = process.geteuid?.() ?? 0;
    checkTrustedDirectory(
      dirname(dir),
      `${spec}: directory`,
      owner,
      'a socket directory must sit in directories only root can change',
    );
  } catch (e) {
    if (e instanceof TrustError) throw new ListenError(e.message);
    throw e;
  }
  try {
    return openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ListenError(`${spec}: directory ${dir} does not exist`);
    if (code === 'ELOOP' || code === 'ENOTDIR')
      throw new ListenError(`${spec}: ${dir} is not a directory (a symbolic link is refused)`);
    throw new ListenError(`${spec}: directory ${dir}: ${code}`);
  }
}

const viaFd = (fd: number, name: string): string => `/proc/self/fd/${fd}/${name}`;

/**
 * Is someone listening? "listening" (it connected, or did not answer in
 * time), "stale" (ECONNREFUSED: nobody), or the error code of a failed
 * probe (a name too long to connect to), which is no licence to delete.
 */
function probe(path: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const t = setTimeout(() => {
      s.destroy();
      resolve('listening');
    }, STALE_PROBE_TIMEOUT_MS);
    s.on('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve('listening');
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve(e.code === 'ECONNREFUSED' ? 'stale' : (e.code ?? 'error'));
    });
  });
}

/**
 * Root binds but never serves: start-up does not reach the event loop's poll
 * phase between bind and handing the socket over, and should a connection
 * still be accepted, root closes it unread.
 */
function rootServer(): net.Server {
  return net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => socket.destroy());
}

/** Sudo mode: this process is the front and serves the sockets it bound. */
export function serveHere(server: net.Server): net.Server {
  server.removeAllListeners('connection');
  (server as net.Server & { pauseOnConnect: boolean }).pauseOnConnect = false; // Node's option, kept on the server
  return server;
}

function fdOf(server: net.Server): number {
  // Node keeps the listening fd on the handle; it is the only way to pass a socket we bound to a child's stdio.
  // Undocumented, so typed as unknown and checked before use.
  const fd = (server as net.Server & { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new ListenError('cannot get the listening socket fd');
  return fd;
}

function listen(server: net.Server, opts: net.ListenOptions, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new ListenError(`${what}: ${e.code ?? e.message}`)));
    server.listen(opts, resolve);
  });
}

export interface UnixSocketOwner {
  uid: number;
  gid: number;
  mode: number;
}

/**
 * Checks the specs before anything is bound: a unix path must be in an
 * existing directory, and a socket already there must be stale (nobody
 * answers), in which case it is removed. A live one is never touched.
 */
export async function preflight(specs: readonly string[]): Promise<void> {
  for (const spec of specs.filter((s) => s.startsWith('unix:'))) {
    const path = spec.slice(5);
    const dirFd = openDir(spec, dirname(path));
    try {
      const at = viaFd(dirFd, basename(path));
      let st;
      try {
        st = lstatSync(at);
      } catch {
        continue;
      }
      if (!st.isSocket()) throw new ListenError(`${spec}: ${path} exists and is not a socket`);
      // The original quotapolicy deleted a running instance's socket on a second start.
      const state = await probe(at);
      if (state === 'listening') throw new ListenError(`${spec}: another process is listening on ${path}`);
      if (state !== 'stale')
        throw new ListenError(`${spec}: ${path} exists and cannot be probed (${state}); remove it if it is stale`);
      try {
        unlinkSync(at);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
          throw new ListenError(`${spec}: cannot remove the stale socket: ${(e as NodeJS.ErrnoException).code}`);
      }
    } finally {
      closeSync(dirFd);
    }
  }
}

/** Staging directories are named like this; a crash may leave an empty one behind. */
export const STAGING_PREFIX = '.quotapolicy-';

/** Binds a unix socket as the SECURITY note above says; returns the server and its cleanup. */
async function bindUnix(spec: string, path: string, owner: UnixSocketOwner): Promise<Listener> {
  const dirFd = openDir(spec, dirname(path));
  const fds: number[] = [];
  let stage: string | undefined;
  let server: net.Server | undefined;
  const cleanup = (): void => {
    // rmdir never follows a link and removes only an empty directory.
    if (stage !== undefined) {
      try {
        rmdirSync(viaFd(dirFd, stage));
      } catch {
        /* renamed or replaced by someone who can write the directory: theirs now */
      }
    }
    for (const fd of fds.splice(0).reverse()) closeSync(fd);
  };
  try {
    const mask = process.umask(0o077); // mkdtemp asks for 0700; an odd umask must not take bits away
    try {
      stage = basename(mkdtempSync(viaFd(dirFd, STAGING_PREFIX)));
    } finally {
      process.umask(mask);
    }
    const interfered = `${spec}: the staging directory ${stage} in ${dirname(path)} was moved or replaced while starting (someone who can write ${dirname(path)} is interfering); nothing was changed`;
    let stageFd: number;
    try {
      stageFd = openSync(viaFd(dirFd, stage), fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    } catch {
      throw new ListenError(interfered);
    }
    fds.push(stageFd);
    const st = fstatSync(stageFd);
    if (st.uid !== process.geteuid?.() || (st.mode & 0o7777) !== 0o700 || st.nlink !== 2) {
      throw new ListenError(interfered);
    }
    const staged = viaFd(stageFd, 's');
    server = rootServer();
    const oldMask = process.umask(~owner.mode & 0o777);
    try {
      await listen(server, { path: staged }, spec);
    } finally {
      process.umask(oldMask);
    }
    chownSync(staged, owner.uid, owner.gid);
    const bound = lstatSync(staged); // inside the staging directory: nobody else's name
    try {
      linkSync(staged, viaFd(dirFd, basename(path)));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST')
        throw new ListenError(
          `${spec}: ${path} appeared while starting (someone who can write ${dirname(path)} created it); not replaced`,
        );
      throw e;
    }
    // Closing the server later unlinks only this staged name (libuv does), while stageFd is still open.
    unlinkSync(staged);
    const name = viaFd(dirFd, basename(path));
    const removeSocket = (): void => {
      // unlink(2) never follows a link; a name swapped in meanwhile is its owner's to lose.
      try {
        const st = lstatSync(name);
        if (st.isSocket() && st.dev === bound.dev && st.ino === bound.ino) unlinkSync(name);
      } catch {
        /* already gone */
      }
    };
    return { fd: fdOf(server), name: spec, server, cleanup, removeSocket };
  } catch (e) {
    server?.close();
    cleanup();
    closeSync(dirFd);
    if (e instanceof ListenError) throw e;
    throw new ListenError(`${spec}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/**
 * Binds one listener. Call for all specs, then spawn the front and release,
 * without yielding to the event loop in between: root never accepts.
 */
export async function bind(spec: string, owner: UnixSocketOwner): Promise<Listener> {
  if (spec.startsWith('unix:')) return bindUnix(spec, spec.slice(5), owner);
  const server = rootServer();
  const a = socketAddress(spec) as Extract<SocketAddress, { host: string }>;
  await listen(server, { host: a.host, port: a.port, ipv6Only: a.ipv6 }, spec);
  return { fd: fdOf(server), name: spec, server };
}
