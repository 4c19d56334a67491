// check-config's share of the start-up warnings (src/frontend/startup): the
// same function the front runs, run the same way, as the service user. It
// comes last in check-config, after every check root must make as root.
import type { Config } from '../shared/config/schema.js';
import { startupFindings } from '../frontend/startup/warnings.js';
import { dropToServiceUser } from './service-user.js';
import { checkStoreTlsFiles } from '../frontend/ratelimit/store-tls.js';

/**
 * The lines check-config prints to stderr: warnings always, notes at
 * log_level debug. Throws ConfigError for a store_tls file the service user
 * cannot use (serve refuses to start then too).
 */
export async function checkStartup(config: Config): Promise<string[]> {
  try {
    dropToServiceUser(config);
  } catch (e) {
    return [
      `quotapolicy: warning: cannot switch to ${config.user} to try the store and postconf as the front would: ${(e as Error).message}\n`,
    ];
  }
  // store_tls's files as the front reads them, as the service user: one it cannot use fails check-config, as serve.
  if (config.checks.includes('rate_limit')) checkStoreTlsFiles(config.rate_limit);
  const f = await startupFindings(config);
  return [
    ...(config.log_level === 'debug' ? f.notes.map((n) => `quotapolicy: debug: ${n}\n`) : []),
    ...f.warnings.map((w) => `quotapolicy: warning: ${w}\n`),
  ];
}
