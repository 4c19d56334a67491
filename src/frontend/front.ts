// The front's run loop, whichever way it was started: spawned by root's
// `quotapolicy serve` (channel on fd 3, sockets on fds 4..), or as the service
// user in sudo mode (channel = the sudo'd helper's stdin/stdout, sockets bound
// here). Speaks the Postfix policy protocol; asks the helper for numbers.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { flagOf, type CommandLine } from '../shared/options.js';
import { loadConfig, ConfigError } from '../shared/config/load.js';
import type { Config } from '../shared/config/schema.js';
import { HelperClient } from './quota/helper-client.js';
import { PolicyService } from './policy/service.js';
import { delimitersFor } from './quota/delimiter.js';
import { aliasSetupFor } from './quota/postfix-maps.js';
import { ProjectLookup } from './quota/project.js';
import { serveConnection, type Connection } from './server/connection.js';
import { admit, type Idle } from './server/admission.js';
import { Metrics } from './metrics.js';
import { redactConfig } from './redact.js';
import { startupFindings } from './startup/warnings.js';
import { checkStoreTlsFiles } from './ratelimit/store-tls.js';
import { EXIT, type ExitStatus } from '../shared/errors.js';

/** After SIGTERM, open requests get this long to be answered. */
export const DRAIN_TIMEOUT_MS = 10_000;
/** Connection-limit warnings (refused, or idle ones closed) are logged at most this often. */
const DROP_LOG_INTERVAL_MS = 5000;
/** Settings the running front cannot change: they are the root's. */
const RESTART_ONLY = [
  'user',
  'listen',
  'socket_owner',
  'socket_group',
  'socket_mode',
  'quota_path',
  'quota_timeout_ms',
  'privilege_mode',
  'sudo_helper',
] as const;

export type Listen = { fd: number } | { server: net.Server; name: string };

export interface FrontOptions {
  cl: CommandLine;
  config: Config;
  log: Logger;
  channel: Duplex;
  listen: Listen[];
}

export async function runFront(o: FrontOptions): Promise<void> {
  const { config, log } = o;
  const exit = (code: ExitStatus): never => process.exit(code);
  // Signals are caught from the start: before the front serves there is nothing to drain, so a
  // stop then exits at once, through the 'exit' handlers that remove the sockets.
  let onStop = (code: ExitStatus, _why: string): void => void exit(code);
  process.on('SIGTERM', () => onStop(EXIT.OK, 'SIGTERM: draining'));
  process.on('SIGINT', () => onStop(EXIT.OK, 'SIGINT: draining'));
  // store_tls's files, read as they will be whenever the store connects: one that fails is a config error, now.
  try {
    if (config.checks.includes('rate_limit')) checkStoreTlsFiles(config.rate_limit);
  } catch (e) {
    log.fatal({ err: (e as Error).message }, 'cannot start');
    return exit(EXIT.CONFIG);
  }
  const helper = new HelperClient(o.channel, config.quota_timeout_ms);
  // Postfix's recipient_delimiter is read while the helper answers the handshake.
  const delimiters = delimitersFor(config);
  const aliasSetup = aliasSetupFor(config);
  let helperMinUid: number;
  try {
    helperMinUid = await helper.hello();
  } catch (e) {
    log.fatal({ err: (e as Error).message }, 'helper handshake failed');
    return exit(EXIT.FAILURE);
  }
  const delim = await delimiters;
  const aliases = await aliasSetup;
  if (aliases.warning !== undefined) log.warn(aliases.warning);
  log.debug({ config: redactConfig(config) }, 'effective config');
  const metrics = new Metrics();
  // getent and lsattr run as this process: the service user.
  const projects = new ProjectLookup();
  const service = new PolicyService(
    config,
    delim.delimiters,
    helperMinUid,
    {
      queryQuota: (id, kind) => helper.query(id, kind),
      metrics,
      aliases: aliases.reader,
      mailboxProject: (name) => projects.mailboxProject(name),
    },
    log,
  );

  const sockets = new Map<net.Socket, Connection>();
  const servers: net.Server[] = [];
  let refused = 0;
  let closedIdle = 0;
  setInterval(() => {
    const max = service.config.max_connections;
    if (closedIdle > 0)
      log.warn(
        { closed: closedIdle, max_connections: max },
        'idle connections closed to admit new ones: max_connections reached',
      );
    if (refused > 0)
      log.warn({ dropped: refused, max_connections: max }, 'connections refused: max_connections reached');
    refused = closedIdle = 0;
  }, DROP_LOG_INTERVAL_MS).unref();
  metrics.openConnections = () => sockets.size;
  const idleness = function* (): Iterable<readonly [net.Socket, Idle | undefined]> {
    for (const [s, c] of sockets) yield [s, c.idle()];
  };
  // One count of connections across all listeners: max_connections is the front's, not a socket's.
  const onConnection = (socket: net.Socket, unix: boolean): void => {
    const a = admit(sockets.size, service.config.max_connections, idleness);
    if (!a.admit) {
      refused++;
      metrics.error('connection_limit');
      socket.destroy();
      return;
    }
    if (a.close !== undefined) {
      closedIdle++;
      metrics.error('connection_limit_idle_closed');
      sockets.get(a.close)!.close();
      // Now, not on its 'close' event: a burst of arrivals must not pick it again.
      sockets.delete(a.close);
    }
    socket.on('close', () => sockets.delete(socket));
    sockets.set(
      socket,
      serveConnection(socket, {
        idleTimeoutMs: service.config.idle_timeout_ms,
        requestTimeoutMs: service.config.request_timeout_ms,
        answer: (req) => service.answer(req, unix),
        log,
        onProtocolError: () => metrics.error('protocol'),
      }),
    );
  };
  for (const l of o.listen) {
    const server = 'server' in l ? l.server : net.createServer({ allowHalfOpen: true });
    // A dry query's explanation only on a unix socket: socket_mode keeps those to their owner and group (service.ts
    // QUERY_ATTRIBUTE). A TCP listener always has an address object; a unix one a path, or null when inherited as an fd.
    let unix: boolean | undefined;
    server.on('connection', (socket: net.Socket) => {
      if (unix === undefined) {
        const a = server.address();
        unix = a === null || typeof a === 'string';
      }
      onConnection(socket, unix);
    });
    server.on('error', (e) => {
      log.fatal({ err: e.message, listener: 'fd' in l ? l.fd : l.name }, 'listener failed');
      exit(EXIT.FAILURE);
    });
    if ('fd' in l) server.listen({ fd: l.fd });
    servers.push(server);
  }
  log.info(
    {
      listeners: o.listen.map((l) => ('fd' in l ? `fd ${l.fd}` : l.name)),
      min_uid: Math.max(config.min_uid, helperMinUid),
      recipient_delimiter: delim.delimiters,
      delimiter_source: delim.source,
      aliases: aliases.note,
      uid: process.getuid?.(),
      gid: process.getgid?.(),
    },
    'front ready',
  );
  // Said once, while already answering: a store that is down or a Postfix stage that never asks (startup/warnings.ts).
  void startupFindings(config).then(
    (f) => {
      for (const n of f.notes) log.debug(n);
      for (const w of f.warnings) log.warn(w);
    },
    (e: unknown) => log.warn({ err: String(e) }, 'start-up checks failed'),
  );

  if (config.metrics) {
    try {
      const ms = await metrics.serve(config.metrics_listen);
      servers.push(ms);
      log.info({ metrics_listen: config.metrics_listen }, 'metrics at /metrics');
    } catch (e) {
      log.fatal({ err: (e as Error).message, metrics_listen: config.metrics_listen }, 'cannot listen for metrics');
      return exit(EXIT.FAILURE);
    }
  }

  let stopping = false;
  const stop = (code: ExitStatus, why: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ open_connections: sockets.size }, why);
    for (const s of servers) s.close();
    // Each connection closes itself once the requests it has begun are answered.
    for (const c of sockets.values()) c.drain();
    // The rate-limit store is closed last, so requests still draining can count; a quota notice in flight finishes.
    const done = (): void =>
      void Promise.all(
        [service.rateLimit?.close(), service.notifier?.close()].map((p) => (p ?? Promise.resolve()).catch(() => {})),
      ).finally(() => exit(code));
    const check = setInterval(() => {
      if (sockets.size === 0) {
        clearInterval(check);
        done();
      }
    }, 50);
    setTimeout(() => {
      clearInterval(check);
      log.warn({ open_connections: sockets.size }, 'drain deadline passed');
      exit(code);
    }, DRAIN_TIMEOUT_MS).unref();
  };
  onStop = stop;
  // Reloads run one after another, in the order the signals came.
  let reloading = Promise.resolve();
  process.on('SIGHUP', () => {
    reloading = reloading.then(() => reload(service, o.cl, log));
  });
  helper.on('closed', (reason: string) => {
    log.fatal({ reason }, 'helper channel closed');
    stop(EXIT.FAILURE, 'helper gone: stopping');
  });
}

async function reload(service: PolicyService, cl: CommandLine, log: Logger): Promise<void> {
  try {
    const { config, source } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
    const old = service.config;
    const ignored = RESTART_ONLY.filter((k) => JSON.stringify(old[k]) !== JSON.stringify(config[k]));
    if (config.checks.includes('rate_limit')) checkStoreTlsFiles(config.rate_limit);
    const [delim, aliases] = await Promise.all([delimitersFor(config), aliasSetupFor(config)]);
    if (aliases.warning !== undefined) log.warn(aliases.warning);
    service.reconfigure(config, delim.delimiters, aliases.reader);
    log.level = config.log_level;
    log.info({ source, needs_restart: ignored.length ? ignored : undefined }, 'config reloaded');
  } catch (e) {
    log.error(
      { reason: e instanceof ConfigError ? e.message : String(e) },
      'config reload failed, keeping the old config',
    );
  }
}
