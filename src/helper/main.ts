#!/usr/bin/env node
// SECURITY: the stand-alone root helper, for sudo mode and `quotapolicy check`:
//   sudo -n /usr/lib/quotapolicy/quotapolicy-helper      (no arguments: defaults)
// The channel is stdin/stdout. Options come only from its own command line,
// which the sudoers drop-in pins to none at all. Numbers: plain decimal.
import { HELPER_DEFAULTS, MAX_UID } from '../shared/wire.js';
import { serveChannel } from './channel.js';
import { makeQuotaRunner } from './quota-run.js';
import { log } from './log.js';
import { EXIT } from '../shared/errors.js';

export function parseHelperArgs(argv: readonly string[]): typeof HELPER_DEFAULTS | string {
  const opts = { ...HELPER_DEFAULTS };
  const limits = { '--timeout-ms': ['timeoutMs', 100, 600_000], '--min-uid': ['minUid', 1, MAX_UID] } as const;
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, v] = [argv[i]!, argv[i + 1]];
    if (v === undefined) return `${flag} needs a value`;
    if (flag === '--quota-path' && v.startsWith('/') && !v.includes('\0')) opts.quotaPath = v;
    else if (flag === '--quota-path') return '--quota-path must be an absolute path';
    else if (flag !== '--timeout-ms' && flag !== '--min-uid') return `unknown argument ${flag}`;
    else {
      const [key, min, max] = limits[flag];
      if (!/^\d{1,10}$/.test(v) || +v < min || +v > max) return `${flag} must be an integer from ${min} to ${max}`;
      opts[key] = +v;
    }
  }
  return opts;
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const o = parseHelperArgs(process.argv.slice(2));
  if (typeof o === 'string') {
    process.stderr.write(
      `quotapolicy-helper: ${o}\nusage: quotapolicy-helper [--quota-path ABS_PATH] [--timeout-ms N] [--min-uid N]\n`,
    );
    process.exit(EXIT.USAGE);
  }
  process.title = 'quotapolicy: helper (root)';
  log('info', 'helper ready', {
    quota_path: o.quotaPath,
    timeout_ms: o.timeoutMs,
    min_uid: o.minUid,
    euid: process.geteuid?.(),
  });
  const end = await serveChannel(process.stdin, process.stdout, {
    runQuota: makeQuotaRunner(o.quotaPath, o.timeoutMs),
    minUid: o.minUid,
  });
  process.exit(end.kind === 'closed' ? EXIT.OK : EXIT.VIOLATION); // without waiting for quota runs still going
}
