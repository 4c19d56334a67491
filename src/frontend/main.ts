// The front process: unprivileged, started by root's `quotapolicy serve` with
// the service user's uid/gid, the channel on fd 3 and the listening sockets on
// fds 4.. (QUOTAPOLICY_LISTEN_FDS). Speaks the Postfix policy protocol; asks
// the helper for quota numbers; never runs quota(1) itself.
import net from 'node:net';
import type { Logger } from 'pino';
import { parseCommandLine, flagOf } from './options.js';
import { loadConfig, ConfigError } from './config/load.js';
import type { Config } from './config/schema.js';
import { makeLogger } from './log.js';
import { HelperClient } from './quota/helper-client.js';
import { PolicyService } from './policy/service.js';
import { resolveDelimiters } from './policy/delimiter.js';
import { serveConnection, type Connection } from './server/connection.js';

/** Channel fd in the front, set by the root's spawn stdio layout. */
export const CHANNEL_FD = 3;
/** After SIGTERM, open requests get this long to be answered. */
export const DRAIN_TIMEOUT_MS = 10_000;
/** Connection-limit warnings are logged at most this often. */
const DROP_LOG_INTERVAL_MS = 5000;
/** Settings the running front cannot change: they are the root's. */
const RESTART_ONLY = ['user', 'listen', 'socket_owner', 'socket_group', 'socket_mode', 'quota_path', 'quota_timeout_ms'] as const;

function fail(msg: string): never {
  process.stderr.write(`quotapolicy front: ${msg}\n`);
  process.exit(78);
}

function listenFds(): number[] {
  const raw = process.env.QUOTAPOLICY_LISTEN_FDS ?? '';
  const fds = raw.split(',').filter((s) => s !== '').map(Number);
  if (fds.length === 0 || !fds.every((n) => Number.isInteger(n) && n > CHANNEL_FD)) fail(`bad QUOTAPOLICY_LISTEN_FDS "${raw}"`);
  return fds;
}

async function main(): Promise<void> {
  process.title = 'quotapolicy: front';
  if (process.getuid?.() === 0 || process.getgid?.() === 0) fail('refusing to run as root: start `quotapolicy serve` instead');
  const argv = process.argv.slice(2);
  const cl = parseCommandLine(argv);
  let config: Config;
  try {
    config = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf }).config;
  } catch (e) {
    fail((e as Error).message);
  }
  const log = makeLogger('front', config.log_level);
  const fds = listenFds();
  const helper = new HelperClient(new net.Socket({ fd: CHANNEL_FD, readable: true, writable: true }), config.quota_timeout_ms);
  const helperMinUid = await helper.hello().catch((e: Error) => fail(`helper handshake failed: ${e.message}`));
  const delim = resolveDelimiters(config.recipient_delimiter);
  const service = new PolicyService(config, delim.delimiters, helperMinUid, { queryQuota: (uid) => helper.query(uid) }, log);

  const sockets = new Map<net.Socket, Connection>();
  const servers: net.Server[] = [];
  let dropped = 0;
  setInterval(() => {
    if (dropped > 0) log.warn({ dropped, max_connections: service.config.max_connections }, 'connections refused: max_connections reached');
    dropped = 0;
  }, DROP_LOG_INTERVAL_MS).unref();
  for (const fd of fds) {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('close', () => sockets.delete(socket));
      sockets.set(socket, serveConnection(socket, { idleTimeoutMs: service.config.idle_timeout_ms, answer: (req) => service.answer(req), log }));
    });
    server.maxConnections = config.max_connections;
    server.on('drop', () => dropped++);
    server.on('error', (e) => {
      log.fatal({ err: e.message, fd }, 'listener failed');
      process.exit(1);
    });
    server.listen({ fd });
    servers.push(server);
  }
  log.info({ listen_fds: fds, min_uid: Math.max(config.min_uid, helperMinUid), recipient_delimiter: delim.delimiters, delimiter_source: delim.source, uid: process.getuid?.(), gid: process.getgid?.() }, 'front ready');

  const stop = (code: number, why: string): void => {
    log.info({ open_connections: sockets.size }, why);
    for (const s of servers) s.close();
    // Each connection closes itself once the requests it has begun are answered.
    for (const c of sockets.values()) c.drain();
    const done = (): void => process.exit(code);
    if (sockets.size === 0) done();
    const check = setInterval(() => { if (sockets.size === 0) done(); }, 50);
    setTimeout(() => { clearInterval(check); log.warn({ open_connections: sockets.size }, 'drain deadline passed'); done(); }, DRAIN_TIMEOUT_MS).unref();
  };
  process.on('SIGTERM', () => stop(0, 'SIGTERM: draining'));
  process.on('SIGINT', () => stop(0, 'SIGINT: draining'));
  process.on('SIGHUP', () => reload(service, cl, log, servers));
  helper.on('closed', (reason: string) => {
    log.fatal({ reason }, 'helper channel closed');
    stop(1, 'helper gone: stopping');
  });
}

function reload(service: PolicyService, cl: ReturnType<typeof parseCommandLine>, log: Logger, servers: net.Server[]): void {
  try {
    const { config, source } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
    const old = service.config;
    const ignored = RESTART_ONLY.filter((k) => JSON.stringify(old[k]) !== JSON.stringify(config[k]));
    const delim = resolveDelimiters(config.recipient_delimiter);
    service.reconfigure(config, delim.delimiters);
    for (const s of servers) s.maxConnections = config.max_connections;
    log.level = config.log_level;
    log.info({ source, needs_restart: ignored.length ? ignored : undefined }, 'config reloaded');
  } catch (e) {
    log.error({ reason: e instanceof ConfigError ? e.message : String(e) }, 'config reload failed, keeping the old config');
  }
}

await main();
