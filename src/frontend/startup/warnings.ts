// What serve would start with, degraded, said once at start-up: by the front
// (a log line each) and by `quotapolicy check-config` (printed), from this one
// function, as the service user in both. Never fatal: serve keeps running.
import type { Config } from '../../shared/config/schema.js';
import { storeWarning } from './store-probe.js';
import { readPostconf } from './postconf.js';
import { stageFindings } from './postfix-stages.js';

export interface StartupFindings {
  /** Logged at warn; check-config prints them as "warning:". */
  warnings: string[];
  /** Checks skipped for want of Postfix here: debug only. */
  notes: string[];
}

export async function startupFindings(config: Config, postconf = 'postconf'): Promise<StartupFindings> {
  const [store, pc] = await Promise.all([storeWarning(config), readPostconf(config.postfix_config_dir, postconf)]);
  const out: StartupFindings = { warnings: store === undefined ? [] : [store], notes: [] };
  if ('skipped' in pc) out.notes.push(pc.skipped);
  else if ('failed' in pc) out.warnings.push(pc.failed);
  else out.warnings.push(...stageFindings(pc.params, { ...config, count_mode: config.rate_limit.count_mode }));
  return out;
}
