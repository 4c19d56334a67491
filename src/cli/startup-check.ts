// check-config's share of the start-up warnings (src/frontend/startup): the
// same function the front runs, run the same way, as the service user. It
// comes last in check-config, after every check root must make as root.
import type { Config } from '../shared/config/schema.js';
import { startupFindings } from '../frontend/startup/warnings.js';
import { dropToServiceUser } from './service-user.js';

/** The lines check-config prints to stderr: warnings always, notes at log_level debug. */
export async function checkStartup(config: Config): Promise<string[]> {
  try {
    dropToServiceUser(config);
  } catch (e) {
    return [
      `quotapolicy: warning: cannot switch to ${config.user} to try the store and postconf as the front would: ${(e as Error).message}\n`,
    ];
  }
  const f = await startupFindings(config);
  return [
    ...(config.log_level === 'debug' ? f.notes.map((n) => `quotapolicy: debug: ${n}\n`) : []),
    ...f.warnings.map((w) => `quotapolicy: warning: ${w}\n`),
  ];
}
