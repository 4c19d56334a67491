// Command-line flags shared by `quotapolicy serve` (root), the front process
// and `quotapolicy check`. A flag overrides the config key of the same name.
import { parseArgs } from 'node:util';
import { QpError } from './errors.js';

export const FLAG_TO_KEY = {
  user: 'user',
  listen: 'listen',
  'quota-path': 'quota_path',
  'min-uid': 'min_uid',
  'log-level': 'log_level',
  'recipient-delimiter': 'recipient_delimiter',
  'pid-file': 'pid_file',
} as const;

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  user: { type: 'string', short: 'u' },
  listen: { type: 'string', short: 'l', multiple: true },
  'quota-path': { type: 'string' },
  'min-uid': { type: 'string' },
  'log-level': { type: 'string' },
  'recipient-delimiter': { type: 'string' },
  'pid-file': { type: 'string' },
  size: { type: 'string' },
  to: { type: 'string' },
  state: { type: 'string' },
  attr: { type: 'string', multiple: true },
  from: { type: 'string' },
  count: { type: 'boolean' },
  // The original quotapolicy's flags, same meaning (see README "Coming from quotapolicy").
  homedir: { type: 'string', short: 'H' },
  socketfile: { type: 'string', short: 's' },
  pidfile: { type: 'string', short: 'p' },
  quotapath: { type: 'string', short: 'q' },
  'recipient-delimiter-compat': { type: 'string', short: 'd' },
  debug: { type: 'boolean' },
  sudopath: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

/** The original quotapolicy's flags (its init script passes all but --debug). */
const LEGACY_FLAGS = [
  'homedir',
  'socketfile',
  'pidfile',
  'quotapath',
  'recipient-delimiter-compat',
  'debug',
  'sudopath',
] as const;

export interface CommandLine {
  positionals: string[];
  configPath: string | undefined;
  overrides: Record<string, unknown>;
  size: string | undefined;
  to: string | undefined;
  state: string | undefined;
  attrs: string[];
  from: string | undefined;
  /** query: send the request as smtpd would, counted (default: a dry query). */
  count: boolean;
  /** One of the original quotapolicy's flags was given: started by its init script or by hand. */
  legacy: boolean;
  /** The original's way: no command, its flags, no --debug: detach like it did (src/cli/detach.ts). */
  detach: boolean;
  /** --sudopath: the sudo binary in sudo mode; ignored, with a note, as root. */
  sudoPath: string | undefined;
  help: boolean;
  version: boolean;
}

export class UsageError extends QpError {
  override name = 'UsageError';
  constructor(message: string) {
    super('QP_USAGE', message);
  }
}

export function flagOf(key: string): string {
  const flag = Object.entries(FLAG_TO_KEY).find(([, k]) => k === key)?.[0];
  return flag === undefined ? key : `--${flag}`;
}

export function parseCommandLine(argv: string[]): CommandLine {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  const legacy = LEGACY_FLAGS.some((f) => v[f] !== undefined);
  // The original had no commands: its command line alone means serve.
  const positionals = legacy && parsed.positionals.length === 0 ? ['serve'] : parsed.positionals;
  const overrides: Record<string, unknown> = {};
  // Original quotapolicy: -s and -p are relative to -H (default quotapolicy.socket / quotapolicy.pid).
  const inHome = (f: string): string =>
    f.startsWith('/') || v.homedir === undefined ? f : `${v.homedir.replace(/\/$/, '')}/${f}`;
  if (v.socketfile !== undefined || v.homedir !== undefined)
    overrides.listen = [`unix:${inHome(v.socketfile ?? 'quotapolicy.socket')}`];
  if (v.pidfile !== undefined || v.homedir !== undefined) overrides.pid_file = inHome(v.pidfile ?? 'quotapolicy.pid');
  if (v.quotapath !== undefined) overrides.quota_path = v.quotapath;
  if (v['recipient-delimiter-compat'] !== undefined) overrides.recipient_delimiter = v['recipient-delimiter-compat'];
  if (v.debug) overrides.log_level = 'debug';
  for (const [flag, key] of Object.entries(FLAG_TO_KEY)) {
    const value = v[flag as keyof typeof v];
    if (value === undefined) continue;
    if (key in overrides && key !== 'listen') throw new UsageError(`--${flag} and its old-style twin given together`);
    overrides[key] =
      key === 'listen' && key in overrides
        ? [...(overrides.listen as string[]), ...(value as string[])]
        : key === 'min_uid'
          ? /^\d+$/.test(String(value))
            ? Number(value)
            : value
          : value;
  }
  return {
    positionals,
    configPath: v.config,
    overrides,
    size: v.size,
    to: v.to,
    state: v.state,
    attrs: v.attr ?? [],
    from: v.from,
    count: v.count ?? false,
    legacy,
    detach: legacy && parsed.positionals.length === 0 && !v.debug && !v.help && !v.version,
    sudoPath: v.sudopath,
    help: v.help ?? false,
    version: v.version ?? false,
  };
}

/** Turns parsed flags back into argv, for handing to the front process. */
export function toArgv(cl: CommandLine): string[] {
  const out: string[] = [];
  if (cl.configPath !== undefined) out.push('--config', cl.configPath);
  for (const [flag, key] of Object.entries(FLAG_TO_KEY)) {
    const value = cl.overrides[key];
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) out.push(`--${flag}`, String(item));
  }
  return out;
}
