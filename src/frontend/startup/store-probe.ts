// Is the rate-limit store usable? Tried once at start-up by the front and by
// check-config (as the service user), with the same words in both. It only
// reads: check-config creates no file or table, and a running older version's
// tables are left as they are. serve keeps running whatever this finds.
import { accessSync, constants as fsc, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import userid from 'userid';
import type { Config } from '../../shared/config/schema.js';
import { probeStore } from '../ratelimit/open-store.js';
import { MASK, redactUrl } from '../redact.js';

/** An error message with the store's URL and password masked, whatever the driver put in it. */
export function maskSecrets(text: string, url: string | null): string {
  if (url === null) return text;
  let out = text.split(url).join(redactUrl(url));
  let password = '';
  try {
    password = new URL(url).password;
  } catch {
    /* not a URL the WHATWG parser takes: redactUrl() still masked it whole */
  }
  let decoded = password;
  try {
    decoded = decodeURIComponent(password);
  } catch {
    /* a stray % : the raw form is masked */
  }
  // Shorter ones would mask ordinary words of the message: a 1-2 character password is no secret anyway.
  for (const p of new Set([password, decoded])) if (p.length >= 3) out = out.split(p).join(MASK);
  return out;
}

/** Where the store is, as the warning names it (a URL with its password masked). */
export function storeAddress(rl: Config['rate_limit']): string {
  if (rl.backend === 'sqlite') return rl.sqlite_path;
  const url = redactUrl(rl.url ?? '');
  return rl.redis_sentinels === null ? url : `${url} via sentinels ${rl.redis_sentinels.join(', ')}`;
}

function serviceUid(user: string): number | undefined {
  try {
    return userid.uid(user);
  } catch {
    return undefined;
  }
}

function usable(path: string, bits: number): boolean {
  try {
    accessSync(path, bits);
    return true;
  } catch {
    return false;
  }
}

/**
 * The warning, or undefined when the store answers (or rate limiting is off).
 * SQLite: a file not made yet is not opened (the front creates it), nor one
 * by anyone but the service user (check-config run by another user); in root
 * mode the preflight already names a directory or file the service user
 * cannot use, so that is not said twice.
 */
export async function storeWarning(config: Config): Promise<string | undefined> {
  const rl = config.rate_limit;
  if (!config.checks.includes('rate_limit')) return undefined;
  const degraded =
    `serve keeps running, and rate-limited requests are answered db_error_action (${rl.db_error_action}) ` +
    'until the store answers (tried again at most once a second)';
  const head = `rate-limit store ${rl.backend} ${storeAddress(rl)}`;
  if (rl.backend === 'sqlite') {
    const dir = dirname(rl.sqlite_path);
    if (!existsSync(rl.sqlite_path)) return undefined;
    // Opening a WAL file may add its -wal and -shm files: only as the service user, whose they must be.
    if (process.getuid?.() !== serviceUid(config.user)) return undefined;
    const rw = usable(dir, fsc.W_OK | fsc.X_OK) && usable(rl.sqlite_path, fsc.R_OK | fsc.W_OK);
    if (!rw)
      return config.privilege_mode === 'root'
        ? undefined
        : `${head}: ${config.user} cannot read and write it and its directory: ${degraded}: chown ${config.user} ${dir} ${rl.sqlite_path}`;
  }
  const ms = rl.store_timeout_ms;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms (store_timeout_ms)`)), ms);
  });
  try {
    await Promise.race([probeStore({ ...rl, timeout_ms: ms }), deadline]);
    return undefined;
  } catch (e) {
    return `${head} cannot be used: ${maskSecrets((e as Error).message, rl.url)}: ${degraded}`;
  } finally {
    clearTimeout(timer);
  }
}
