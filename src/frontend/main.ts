// The front process as root's `quotapolicy serve` spawns it: unprivileged
// (the service user's uid/gid), the channel on fd 3, the listening sockets on
// fds 4.. (QUOTAPOLICY_LISTEN_FDS). It never runs quota(1) itself.
import net from 'node:net';
import { parseCommandLine, flagOf } from '../shared/options.js';
import { loadConfig } from '../shared/config/load.js';
import type { Config } from '../shared/config/schema.js';
import { makeLogger } from './log.js';
import { runFront } from './front.js';
import { EXIT } from '../shared/errors.js';

/** Channel fd in the front, set by the root's spawn stdio layout. */
export const CHANNEL_FD = 3;

function fail(msg: string): never {
  process.stderr.write(`quotapolicy front: ${msg}\n`);
  process.exit(EXIT.CONFIG);
}

process.title = 'quotapolicy: front';
if (process.getuid?.() === 0 || process.getgid?.() === 0)
  fail('refusing to run as root: start `quotapolicy serve` instead');
const cl = parseCommandLine(process.argv.slice(2));
let config: Config;
try {
  config = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf }).config;
} catch (e) {
  fail((e as Error).message);
}
const raw = process.env.QUOTAPOLICY_LISTEN_FDS ?? '';
const fds = raw
  .split(',')
  .filter((s) => s !== '')
  .map(Number);
if (fds.length === 0 || !fds.every((n) => Number.isInteger(n) && n > CHANNEL_FD))
  fail(`bad QUOTAPOLICY_LISTEN_FDS "${raw}"`);
await runFront({
  cl,
  config,
  log: makeLogger('front', config.log_level),
  channel: new net.Socket({ fd: CHANNEL_FD, readable: true, writable: true }),
  listen: fds.map((fd) => ({ fd })),
});
