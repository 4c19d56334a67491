// SECURITY: the only place root runs a program. The path comes from root's own
// command line, the flags are fixed here, and the arguments after `--` are
// uids the channel already validated as integers. No shell, no inherited
// environment, no stdin, a hard timeout and an output cap.
import { execa } from 'execa';
import { type UserQuota, QuotaStatus } from '../shared/wire.js';
import { parseQuotaOutput, QuotaOutputError } from './quota-output.js';
import { log } from './log.js';

/** quota prints ~150 bytes per user and file system; 256 KiB is far above any batch. */
export const MAX_QUOTA_OUTPUT_BYTES = 256 * 1024;
/** -w: no wrapping; -p: grace as epoch seconds; -v: rows even without limits. */
export const QUOTA_FLAGS = ['-w', '-p', '-v', '--show-mntpoint', '--hide-device', '-u', '--'] as const;
const QUOTA_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

export interface QuotaRunner { (uids: number[]): Promise<UserQuota[]> }

export function makeQuotaRunner(quotaPath: string, timeoutMs: number): QuotaRunner {
  return async (uids) => {
    const all = (status: QuotaStatus): UserQuota[] => uids.map((uid) => ({ uid, status, fs: [] }));
    const r = await execa(quotaPath, [...QUOTA_FLAGS, ...uids.map(String)], {
      shell: false, env: QUOTA_ENV, extendEnv: false, stdin: 'ignore', reject: false,
      timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_QUOTA_OUTPUT_BYTES, stripFinalNewline: false,
    });
    if (r.timedOut) return log('warn', 'quota timed out', { timeout_ms: timeoutMs, uids }), all(QuotaStatus.Timeout);
    if (r.isMaxBuffer) return log('warn', 'quota output over the cap', { uids }), all(QuotaStatus.OutputTooLarge);
    if (r.exitCode !== 0 && r.exitCode !== 1) {
      log('error', 'quota failed', { exit_code: r.exitCode, signal: r.signal, error: r.code ?? r.shortMessage, uids });
      return all(QuotaStatus.ExecFailed);
    }
    const stderr = String(r.stderr).trim();
    // Exit status 1 means "over a limit" as well as "error": only the text tells.
    if (stderr !== '') return log('warn', 'quota complained', { stderr: stderr.slice(0, 300), uids }), all(QuotaStatus.Complained);
    // Without any quota-enabled file system quota prints nothing and exits 1.
    if (String(r.stdout).trim() === '') return all(QuotaStatus.NoData);
    let parsed: Map<number, UserQuota['fs']>;
    try {
      parsed = parseQuotaOutput(String(r.stdout), uids);
    } catch (e) {
      if (!(e instanceof QuotaOutputError)) throw e;
      log('error', 'quota output not understood', { reason: e.message, uids });
      return all(QuotaStatus.Unparsable);
    }
    return uids.map((uid) => {
      const fs = parsed.get(uid) ?? [];
      return { uid, status: fs.length > 0 ? QuotaStatus.Ok : QuotaStatus.NoData, fs };
    });
  };
}
