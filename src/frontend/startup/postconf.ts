// Runs postconf(1) for the Postfix stage check (./postfix-stages.ts): as the
// service user (the front; check-config after dropping to it), no shell, a
// fixed environment (no MAIL_CONFIG: serve's front never has one, so
// check-config must not either), bounded in time and output.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { POSTCONF_TIMEOUT_MS } from '../quota/delimiter.js';
import { CLASS_NAME, MAX_CLASSES, POSTCONF_PARAMS, parsePostconf } from './postfix-stages.js';

/** Postfix's own configuration directory, where postconf looks without -c. */
export const POSTFIX_CONFIG_DIR = '/etc/postfix';
/** A few dozen parameters of one line each; a main.cf with huge lists still fits. */
export const POSTCONF_MAX_BYTES = 1024 * 1024;
const PATH = '/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export type Postconf = { params: Map<string, string> } | { skipped: string } | { failed: string };

/** `postconf [-c DIR] -x NAMES...`: its output, or why not (`absent` set when there is no postconf). */
export function runPostconf(postconf: string, dir: string | null, names: string[]): Promise<string> {
  const args = [...(dir === null ? [] : ['-c', dir]), '-x', ...names];
  return new Promise((resolve, reject) => {
    execFile(
      postconf,
      args,
      { timeout: POSTCONF_TIMEOUT_MS, maxBuffer: POSTCONF_MAX_BYTES, encoding: 'utf8', env: { PATH } },
      (e, out, err) => {
        if (e === null) return resolve(out);
        const x = e as NodeJS.ErrnoException & { killed?: boolean };
        if (x.code === 'ENOENT') return reject(Object.assign(new Error('no postconf'), { absent: true }));
        const first = err.split('\n').find((l) => /fatal|error/.test(l)) ?? err.split('\n')[0] ?? '';
        reject(
          new Error(
            x.killed
              ? `no answer in ${POSTCONF_TIMEOUT_MS} ms`
              : `exited ${String(x.code)}${first ? `: ${first}` : ''}`,
          ),
        );
      },
    );
  });
}

/**
 * The stage parameters and restriction classes from `postconf [-c DIR] -x`.
 * Skipped (not a warning) without postconf or without main.cf: no Postfix to
 * check here (postconf's fatal path would sleep a second, too).
 */
export async function readPostconf(dir: string | null, postconf = 'postconf'): Promise<Postconf> {
  const mainCf = join(dir ?? POSTFIX_CONFIG_DIR, 'main.cf');
  if (!existsSync(mainCf)) return { skipped: `no ${mainCf}: the Postfix stage check is skipped` };
  try {
    const params = parsePostconf(await runPostconf(postconf, dir, POSTCONF_PARAMS));
    const classes = (params.get('smtpd_restriction_classes') ?? '')
      .split(/[\s,]+/)
      .filter((n) => CLASS_NAME.test(n) && !params.has(n))
      .slice(0, MAX_CLASSES);
    if (classes.length > 0)
      for (const [k, v] of parsePostconf(await runPostconf(postconf, dir, classes))) params.set(k, v);
    return { params };
  } catch (e) {
    if ((e as { absent?: boolean }).absent) return { skipped: 'no postconf: the Postfix stage check is skipped' };
    return {
      failed: `cannot check the Postfix stages: ${postconf}${dir === null ? '' : ` -c ${dir}`}: ${(e as Error).message}`,
    };
  }
}
