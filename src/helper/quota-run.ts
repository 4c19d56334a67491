// SECURITY: the only program root runs. Its path comes from root's command
// line, its flags are fixed here (-u, -g or -P by the query's kind, which the
// channel validated as 0..2), and after `--` come only ids the channel
// validated as integers. No shell, no inherited environment, no stdin, a hard
// timeout and an output cap. Exit status 1 means "over a limit" as well as
// "error", so the status alone decides nothing: stderr and stdout do.
import { type UserQuota, type QuotaKind, QuotaStatus, MAX_BATCH, MAX_FS, MAX_MOUNT_BYTES } from '../shared/wire.js';
import { parseQuotaOutput, QuotaOutputError } from './quota-output.js';
import { log } from './log.js';

/**
 * The longest output quota(1) prints for a batch the parser accepts. Per user: a header (login name at most
 * 256 bytes, LOGIN_NAME_MAX) and the column titles, under 400 bytes together; then up to MAX_FS rows
 * "%15s %7s%c %6s %7s %7s %7s%c %6s %7s %7s\n" with a MAX_MOUNT_BYTES mount point and numbers of at most 15
 * digits (the parser's limit), 255 + 8 x 16 + 3 = 386 bytes. 32 x (400 + 32 x 386) = 408,064 bytes (~400 KiB).
 */
export const MAX_QUOTA_OUTPUT_BYTES = MAX_BATCH * (400 + MAX_FS * (MAX_MOUNT_BYTES + 8 * 16 + 3));
/** -w: no wrapping; -p: grace as epoch seconds; -v: rows even without limits. */
export const QUOTA_FLAGS = ['-w', '-p', '-v', '--show-mntpoint', '--hide-device'] as const;
/** By QuotaKind: users, groups, projects (quota-tools 4.x; numeric ids are taken as ids). */
export const KIND_FLAGS = ['-u', '-g', '-P'] as const;

export type QuotaRunner = (uids: number[], kind: QuotaKind) => Promise<UserQuota[]>;

export function makeQuotaRunner(quotaPath: string, timeoutMs: number): QuotaRunner {
  const execaModule = import('execa'); // ~90 ms to load: loaded while the front starts, not before
  return async (uids, kind) => {
    const all = (status: QuotaStatus, why?: string, extra?: object): UserQuota[] => {
      if (why) log(status === QuotaStatus.Timeout ? 'warn' : 'error', why, { kind, ids: uids, ...extra });
      return uids.map((uid) => ({ uid, status, fs: [] }));
    };
    const r = await (
      await execaModule
    ).execa(quotaPath, [...QUOTA_FLAGS, KIND_FLAGS[kind], '--', ...uids.map(String)], {
      shell: false,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
      extendEnv: false,
      stdin: 'ignore',
      reject: false,
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: MAX_QUOTA_OUTPUT_BYTES,
      stripFinalNewline: false,
    });
    const [stdout, stderr] = [String(r.stdout), String(r.stderr).trim()];
    if (r.timedOut) return all(QuotaStatus.Timeout, 'quota timed out', { timeout_ms: timeoutMs });
    if (r.isMaxBuffer) return all(QuotaStatus.OutputTooLarge, 'quota output over the cap');
    if (r.exitCode !== 0 && r.exitCode !== 1)
      return all(QuotaStatus.ExecFailed, 'quota failed', { exit_code: r.exitCode, signal: r.signal, error: r.code });
    if (stderr !== '') return all(QuotaStatus.Complained, 'quota complained', { stderr: stderr.slice(0, 300) });
    if (stdout.trim() === '') return all(QuotaStatus.NoData); // no quota-enabled file system at all
    try {
      const parsed = parseQuotaOutput(stdout, uids, kind);
      return uids.map((uid) => ({
        uid,
        status: parsed.get(uid)!.length > 0 ? QuotaStatus.Ok : QuotaStatus.NoData,
        fs: parsed.get(uid)!,
      }));
    } catch (e) {
      if (!(e instanceof QuotaOutputError)) throw e;
      return all(QuotaStatus.Unparsable, 'quota output not understood', { reason: e.message });
    }
  };
}
