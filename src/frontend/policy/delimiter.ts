// recipient_delimiter: from the config, else from Postfix itself, else "+".
import { execFileSync } from 'node:child_process';

/** postconf answers in milliseconds; a hung one must not stop start-up. */
export const POSTCONF_TIMEOUT_MS = 5000;
export const FALLBACK_DELIMITER = '+';

export function resolveDelimiters(configured: string | null, postconf = 'postconf'): { delimiters: string; source: string } {
  if (configured !== null) return { delimiters: configured, source: 'config' };
  try {
    const out = execFileSync(postconf, ['-h', 'recipient_delimiter'], {
      timeout: POSTCONF_TIMEOUT_MS, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'],
    });
    return { delimiters: out.replace(/\n$/, ''), source: 'postconf' };
  } catch (e) {
    // No Postfix, or one without a main.cf: Postfix's own default does not apply either.
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no postconf' : 'postconf failed';
    return { delimiters: FALLBACK_DELIMITER, source: `default "${FALLBACK_DELIMITER}" (${why})` };
  }
}
