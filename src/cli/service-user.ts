// Commands that act as the front would (open its store, run postconf) drop
// from root to the service user first, so that what they create stays the
// front's and what they find is what the front would find.
import userid from 'userid';
import type { Config } from '../shared/config/schema.js';
import { ConfigError } from '../shared/config/load.js';

/** Run as the service user (no supplementary groups, as the front); a no-op unless root. */
export function dropToServiceUser(cfg: Config): void {
  if (process.getuid?.() !== 0) return;
  const { uid, gid } = userid.ids(cfg.user);
  process.setgroups?.([]);
  process.setgid?.(gid);
  process.setuid?.(uid);
}

/** The service user's ids for a child process to run as, when this one is root (else undefined). */
export function serviceUserIds(cfg: Config): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    return userid.ids(cfg.user);
  } catch {
    throw new ConfigError(
      `user: ${cfg.user} is not a user on this host (postalias, postmap, getent and lsattr run as it)`,
    );
  }
}
