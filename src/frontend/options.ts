// Command-line flags shared by `quotapolicy serve` (root), the front process
// and `quotapolicy check`. A flag overrides the config key of the same name.
import { parseArgs } from 'node:util';

export const FLAG_TO_KEY = {
  user: 'user',
  listen: 'listen',
  'quota-path': 'quota_path',
  'min-uid': 'min_uid',
  'log-level': 'log_level',
  'recipient-delimiter': 'recipient_delimiter',
} as const;

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  user: { type: 'string', short: 'u' },
  listen: { type: 'string', short: 'l', multiple: true },
  'quota-path': { type: 'string' },
  'min-uid': { type: 'string' },
  'log-level': { type: 'string' },
  'recipient-delimiter': { type: 'string' },
  size: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

export interface CommandLine {
  positionals: string[];
  configPath: string | undefined;
  overrides: Record<string, unknown>;
  size: string | undefined;
  help: boolean;
  version: boolean;
}

export class UsageError extends Error {
  override name = 'UsageError';
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
  const overrides: Record<string, unknown> = {};
  for (const [flag, key] of Object.entries(FLAG_TO_KEY)) {
    const value = v[flag as keyof typeof v];
    if (value === undefined) continue;
    overrides[key] = key === 'min_uid' ? (/^\d+$/.test(String(value)) ? Number(value) : value) : value;
  }
  return {
    positionals: parsed.positionals,
    configPath: v.config,
    overrides,
    size: v.size,
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
