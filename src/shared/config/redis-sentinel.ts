// Redis Sentinel settings as the config check and the Redis store read them:
// one parser each for a sentinel's "host:port" and for the url that names
// the master, so what check-config passes is exactly what the store uses.
import { isIP } from 'node:net';

/** A sentinel's address: host name, IPv4, or [IPv6], and its port. */
export interface SentinelAddress {
  host: string;
  port: number;
}

/** The master as the sentinels know it (`sentinel monitor NAME ...`), and how to log in to it. */
export interface SentinelMaster {
  name: string;
  username: string | undefined;
  password: string | undefined;
  db: number;
}

/** Redis' default has 16 databases (0-15); a server can be given more, so only a sane bound. */
const MAX_DB = 1_000_000;

/** "host:port", "[v6]:port"; undefined when it is not one. */
export function parseSentinelAddress(v: string): SentinelAddress | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)):([0-9]{1,5})$/.exec(v);
  if (!m || (m[1] !== undefined && isIP(m[1]) !== 6)) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

function decode(s: string | undefined): string | undefined {
  if (s === undefined || s === '') return undefined;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * redis://[[user]:password@]NAME[/db]: the master's name where a host would
 * be. The problem with the url (never quoting it: it may hold a password),
 * or the master.
 */
export function parseSentinelUrl(url: string): { bad: string } | SentinelMaster {
  const form =
    'with redis_sentinels the url names the master as the sentinels know it: redis://[[user]:password@]NAME[/db]';
  const m = /^redis:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^:@/?#]+)(:[^/?#]*)?(?:\/([^?#]*))?([?#].*)?$/.exec(url);
  if (!m) return { bad: form };
  const [, user, password, name, port, db, rest] = m;
  if (port !== undefined)
    return { bad: `${form}: no port (the sentinels say where the master is; list them in redis_sentinels)` };
  if (rest !== undefined) return { bad: `${form}: no query or fragment` };
  if (!/^[A-Za-z0-9._-]+$/.test(name!)) return { bad: `${form}: NAME may hold letters, digits, ".", "_" and "-"` };
  if (db !== undefined && db !== '' && !(/^[0-9]{1,7}$/.test(db) && Number(db) <= MAX_DB))
    return { bad: `${form}: db must be a number from 0 to ${MAX_DB}` };
  return { name: name!, username: decode(user), password: decode(password), db: db ? Number(db) : 0 };
}
