// Root start-up: the listening sockets handed to the front. Either systemd's
// (LISTEN_FDS/LISTEN_PID, fds 3..) or created here from `listen`, so that unix
// sockets can be given to Postfix's group and privileged ports bound.
import net from 'node:net';
import { chmodSync, chownSync, lstatSync, unlinkSync, existsSync, linkSync } from 'node:fs';
import { dirname } from 'node:path';
import { socketAddress, type SocketAddress } from '../frontend/config/schema.js';

/** First fd systemd passes (SD_LISTEN_FDS_START). */
export const SD_LISTEN_FDS_START = 3;
/** A live instance answers a connect at once; a stale socket refuses at once. */
const STALE_PROBE_TIMEOUT_MS = 2000;

export interface Listener { fd: number; name: string; server?: net.Server }

export class ListenError extends Error {
  override name = 'ListenError';
}

/** systemd socket activation, if these fds are meant for this process. */
export function systemdFds(env: NodeJS.ProcessEnv, pid: number): Listener[] | undefined {
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return undefined;
  const n = Number(env.LISTEN_FDS);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new ListenError(`bad LISTEN_FDS "${env.LISTEN_FDS}"`);
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  return Array.from({ length: n }, (_, i) => ({ fd: SD_LISTEN_FDS_START + i, name: `systemd:${names[i] || `fd${SD_LISTEN_FDS_START + i}`}` }));
}

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const t = setTimeout(() => { s.destroy(); resolve(true); }, STALE_PROBE_TIMEOUT_MS);
    s.on('connect', () => { clearTimeout(t); s.destroy(); resolve(true); });
    s.on('error', () => { clearTimeout(t); resolve(false); });
  });
}

function fdOf(server: net.Server): number {
  // Node keeps the listening fd on the handle; it is the only way to pass a socket we bound to a child's stdio.
  const fd = (server as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new ListenError('cannot get the listening socket fd');
  return fd;
}

function listen(server: net.Server, opts: net.ListenOptions, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new ListenError(`${what}: ${e.code ?? e.message}`)));
    server.listen(opts, resolve);
  });
}

export interface UnixSocketOwner { uid: number; gid: number; mode: number }

/**
 * Checks the specs before anything is bound: a unix path must be in an
 * existing directory, and a socket already there must be stale (nobody
 * answers), in which case it is removed. A live one is never touched.
 */
export async function preflight(specs: readonly string[]): Promise<void> {
  for (const spec of specs.filter((s) => s.startsWith('unix:'))) {
    const path = spec.slice(5);
    if (!existsSync(dirname(path))) throw new ListenError(`${spec}: directory ${dirname(path)} does not exist`);
    let st;
    try { st = lstatSync(path); } catch { continue; }
    if (!st.isSocket()) throw new ListenError(`${spec}: ${path} exists and is not a socket`);
    // The original quotapolicy deleted a running instance's socket on a second start.
    if (await probe(path)) throw new ListenError(`${spec}: another process is listening on ${path}`);
    unlinkSync(path);
  }
}

/**
 * Binds one listener. Call for all specs, then spawn the front and release,
 * without yielding to the event loop in between: root never accepts.
 * A unix socket is bound under a temporary name, given its owner and mode, and
 * then linked into place, so it never exists with the wrong permissions and
 * never replaces a socket that appeared meanwhile (link() refuses to).
 */
export async function bind(spec: string, owner: UnixSocketOwner): Promise<Listener> {
  const server = net.createServer({ allowHalfOpen: true });
  if (spec.startsWith('unix:')) {
    const path = spec.slice(5);
    const tmp = `${path}.${process.pid}.tmp`;
    const oldMask = process.umask(0o177);
    try {
      await listen(server, { path: tmp }, spec);
    } finally {
      process.umask(oldMask);
    }
    try {
      chownSync(tmp, owner.uid, owner.gid);
      chmodSync(tmp, owner.mode);
      linkSync(tmp, path);
    } catch (e) {
      server.close();
      throw new ListenError(`${spec}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    // Closing the server later unlinks only the temporary name.
    unlinkSync(tmp);
  } else {
    const a = socketAddress(spec) as Extract<SocketAddress, { host: string }>;
    await listen(server, { host: a.host, port: a.port, ipv6Only: a.ipv6 }, spec);
  }
  return { fd: fdOf(server), name: spec, server };
}
