// recipient_delimiter: from the config, else from Postfix itself, else "+".
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** postconf answers in milliseconds; a hung one must not stop start-up. */
export const POSTCONF_TIMEOUT_MS = 5000;
export const FALLBACK_DELIMITER = '+';
/** What postconf reads without postfix_config_dir (the front's environment has no MAIL_CONFIG). */
export const POSTFIX_MAIN_CF = '/etc/postfix/main.cf';

export interface Delimiters {
  delimiters: string;
  source: string;
}

/**
 * Asynchronous so start-up asks the helper and Postfix at the same time. Without
 * main.cf postconf is not run at all: it would only fail, and Postfix's fatal
 * path sleeps a second before exiting.
 */
export function resolveDelimiters(
  configured: string | null,
  postconf = 'postconf',
  mainCf = POSTFIX_MAIN_CF,
  postfixDir: string | null = null,
): Promise<Delimiters> {
  if (configured !== null) return Promise.resolve({ delimiters: configured, source: 'config' });
  const fallback = (why: string): Delimiters => ({
    delimiters: FALLBACK_DELIMITER,
    source: `default "${FALLBACK_DELIMITER}" (${why})`,
  });
  // No Postfix, or one without a main.cf: Postfix's own default does not apply either.
  if (!existsSync(mainCf)) return Promise.resolve(fallback(`no ${mainCf}`));
  return new Promise((resolve) => {
    execFile(
      postconf,
      [...(postfixDir === null ? [] : ['-c', postfixDir]), '-h', 'recipient_delimiter'],
      { timeout: POSTCONF_TIMEOUT_MS, encoding: 'utf8' },
      (e, out) => {
        if (e) resolve(fallback((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no postconf' : 'postconf failed'));
        else resolve({ delimiters: out.replace(/\n$/, ''), source: 'postconf' });
      },
    );
  });
}

/** The delimiters for a config: its own, else those of the Postfix at postfix_config_dir. */
export function delimitersFor(c: { recipient_delimiter: string | null; postfix_config_dir: string | null }) {
  const dir = c.postfix_config_dir;
  return resolveDelimiters(
    c.recipient_delimiter,
    'postconf',
    dir === null ? POSTFIX_MAIN_CF : join(dir, 'main.cf'),
    dir,
  );
}
