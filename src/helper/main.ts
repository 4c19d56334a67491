#!/usr/bin/env node
// SECURITY: the stand-alone root helper, for sudo mode and `quotapolicy check`:
//   sudo -n /usr/lib/quotapolicy/quotapolicy-helper      (no arguments: defaults)
// The channel is stdin/stdout. Its options can only come from its own command
// line, which in sudo mode the sudoers drop-in pins to none at all.
import { HELPER_DEFAULTS } from '../shared/wire.js';
import { serveChannel } from './channel.js';
import { makeQuotaRunner } from './quota-run.js';
import { log } from './log.js';
import { parseHelperArgs } from './args.js';

const parsed = parseHelperArgs(process.argv.slice(2), HELPER_DEFAULTS);
if (typeof parsed === 'string') {
  process.stderr.write(`quotapolicy-helper: ${parsed}\nusage: quotapolicy-helper [--quota-path ABS_PATH] [--timeout-ms N] [--min-uid N]\n`);
  process.exit(64);
}
log('info', 'helper ready', { quota_path: parsed.quotaPath, timeout_ms: parsed.timeoutMs, min_uid: parsed.minUid, euid: process.geteuid?.() });
const end = await serveChannel(process.stdin, process.stdout, {
  runQuota: makeQuotaRunner(parsed.quotaPath, parsed.timeoutMs),
  minUid: parsed.minUid,
});
process.exitCode = end.kind === 'closed' ? 0 : 2;
