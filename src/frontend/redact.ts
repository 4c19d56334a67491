// Secrets never reach a log, at any level: the store URL's password and the
// report's SMTP credentials are masked wherever the config or a URL is logged.
import type { Config } from '../shared/config/schema.js';

export const MASK = '***';

/** postgresql://user:secret@host/db -> postgresql://user:***@host/db; also ?password=. */
export function redactUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, `$1${MASK}@`)
    .replace(/([?&](?:password|pass|pwd|auth)=)[^&#]*/gi, `$1${MASK}`);
}

/** The config as it may be logged. */
export function redactConfig(config: Config): Config {
  const rl = config.rate_limit;
  return {
    ...config,
    rate_limit: {
      ...rl,
      url: rl.url === null ? null : redactUrl(rl.url),
      smtp_credentials: rl.smtp_credentials === null ? null : [rl.smtp_credentials[0], MASK],
    },
  };
}
