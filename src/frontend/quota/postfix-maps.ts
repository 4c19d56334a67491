// Reads Postfix's alias tables for ./aliases.ts: which maps (postconf -x -h
// alias_maps virtual_alias_maps), and their values (`postalias -q - MAP`,
// `postmap -q - MAP`, the keys on stdin). As the service user, never as root;
// read-only (-q); no shell, a fixed environment, bounded in time, output and
// processes at once, so a flood of alias recipients cannot fork-bomb the front.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { MapKind, MapReader } from './aliases.js';
import { POSTFIX_CONFIG_DIR, runPostconf } from '../startup/postconf.js';
import { parsePostconf, tokens } from '../startup/postfix-stages.js';

/**
 * One postmap run. A local hash: map answers in milliseconds; ldap:, mysql: or a hung NFS
 * mount may not, and Postfix waits smtpd_policy_service_timeout (100 s) for the whole answer.
 */
export const MAP_LOOKUP_TIMEOUT_MS = 5000;
/** postmap processes at once, all recipients together: the front shares its cores with smtpd. */
export const MAX_MAP_PROCESSES = 4;
/** Runs waiting for one of those; beyond this a lookup fails at once (the error action) instead of queueing without end. */
export const MAX_MAP_WAITING = 256;
/** One run answers at most a level of keys (MAX_ALIAS_FANOUT addresses x 5 keys); 1 MiB is far above that. */
export const MAP_OUTPUT_MAX_BYTES = 1024 * 1024;
const PATH = '/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface AliasMaps {
  alias: string[];
  virtual: string[];
}

/** The maps Postfix expands recipients through; empty lists when there is no Postfix here. */
export async function readAliasMaps(
  dir: string | null,
  postconf = 'postconf',
): Promise<{ maps: AliasMaps } | { skipped: string } | { failed: string }> {
  const mainCf = join(dir ?? POSTFIX_CONFIG_DIR, 'main.cf');
  if (!existsSync(mainCf)) return { skipped: `no ${mainCf}: aliases are not expanded` };
  try {
    const p = parsePostconf(await runPostconf(postconf, dir, ['alias_maps', 'virtual_alias_maps']));
    return { maps: { alias: tokens(p.get('alias_maps') ?? ''), virtual: tokens(p.get('virtual_alias_maps') ?? '') } };
  } catch (e) {
    if ((e as { absent?: boolean }).absent) return { skipped: 'no postconf: aliases are not expanded' };
    return { failed: `cannot read alias_maps and virtual_alias_maps: ${(e as Error).message}` };
  }
}

export interface MapReaderOptions {
  /** postfix_config_dir: passed as -c. */
  configDir: string | null;
  /** Whom to run as when this process is root (`quotapolicy check`): the service user. */
  runAs?: { uid: number; gid: number } | undefined;
  postmap?: string;
  postalias?: string;
  timeoutMs?: number;
}

export class PostfixMapReader implements MapReader {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly maps: AliasMaps,
    private readonly o: MapReaderOptions,
  ) {
    if (process.getuid?.() === 0 && o.runAs === undefined) throw new Error('alias lookups never run as root');
  }

  lookup(kind: MapKind, keys: readonly string[]): Promise<ReadonlyMap<string, string>[]> {
    const list = kind === 'alias' ? this.maps.alias : this.maps.virtual;
    return Promise.all(list.map((m) => this.slot(() => this.run(kind, m, keys))));
  }

  private async slot<T>(job: () => Promise<T>): Promise<T> {
    if (this.running >= MAX_MAP_PROCESSES) {
      if (this.waiting.length >= MAX_MAP_WAITING)
        throw new Error(`${MAX_MAP_WAITING} alias lookups already waiting: not looked up`);
      await new Promise<void>((r) => this.waiting.push(r));
    }
    this.running++;
    try {
      return await job();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  private run(kind: MapKind, map: string, keys: readonly string[]): Promise<ReadonlyMap<string, string>> {
    const bin = kind === 'alias' ? (this.o.postalias ?? 'postalias') : (this.o.postmap ?? 'postmap');
    const timeout = this.o.timeoutMs ?? MAP_LOOKUP_TIMEOUT_MS;
    const args = [...(this.o.configDir === null ? [] : ['-c', this.o.configDir]), '-q', '-', map];
    return new Promise((resolve, reject) => {
      const child = execFile(
        bin,
        args,
        {
          timeout,
          maxBuffer: MAP_OUTPUT_MAX_BYTES,
          encoding: 'utf8',
          env: { PATH },
          ...(this.o.runAs ?? {}),
        },
        (e, out, err) => {
          const fatal = err.split('\n').find((l) => /fatal:/.test(l));
          // postmap exits 1 both when no key is found and on a fatal error; only the latter says "fatal:".
          if (e === null || (e.code === 1 && fatal === undefined)) return resolve(parseAnswer(kind, out, keys));
          const x = e as NodeJS.ErrnoException & { killed?: boolean };
          reject(
            new Error(
              `${bin} -q - ${map}: ${
                x.code === 'ENOENT'
                  ? 'not found'
                  : x.killed
                    ? `no answer in ${timeout} ms`
                    : (fatal ?? `${x.message.split('\n')[0]!}`)
              }`,
            ),
          );
        },
      );
      // A run that died early must not take the front with it through EPIPE.
      child.stdin?.on('error', () => {});
      child.stdin?.end(keys.map((k) => `${k}\n`).join(''));
    });
  }
}

/** postalias prints `key:<TAB>value`, postmap `key<TAB>value`, one line per key found. */
export function parseAnswer(kind: MapKind, out: string, keys: readonly string[]): Map<string, string> {
  const asked = new Set(keys);
  const found = new Map<string, string>();
  const sep = kind === 'alias' ? ':\t' : '\t';
  for (const line of out.split('\n')) {
    const at = line.indexOf(sep);
    if (at <= 0) continue;
    const key = line.slice(0, at);
    if (asked.has(key) && !found.has(key)) found.set(key, line.slice(at + sep.length));
  }
  return found;
}

export interface AliasSetup {
  reader?: PostfixMapReader;
  /** What the start-up line says: the maps, or why there are none. */
  note: string;
  /** Postfix is here but its maps could not be read: aliases go unchecked. */
  warning?: string;
}

/** The reader a config asks for (expand_aliases), on the maps of the Postfix at postfix_config_dir. */
export async function aliasSetupFor(
  c: { expand_aliases: boolean; postfix_config_dir: string | null },
  runAs?: { uid: number; gid: number },
): Promise<AliasSetup> {
  if (!c.expand_aliases) return { note: 'expand_aliases is off' };
  const r = await readAliasMaps(c.postfix_config_dir);
  if ('skipped' in r) return { note: r.skipped };
  if ('failed' in r) return { note: r.failed, warning: `${r.failed}: aliases are not expanded` };
  if (r.maps.alias.length + r.maps.virtual.length === 0) return { note: 'alias_maps and virtual_alias_maps are empty' };
  return {
    reader: new PostfixMapReader(r.maps, { configDir: c.postfix_config_dir, runAs }),
    note: `alias_maps: ${r.maps.alias.join(' ') || '(none)'}; virtual_alias_maps: ${r.maps.virtual.join(' ') || '(none)'}`,
  };
}
