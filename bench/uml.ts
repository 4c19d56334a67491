// Scenario (b) from the host: boots user-mode-linux (test/uml/boot.sh) with
// bench/uml-guest.sh and reads what bench/uml-load.ts measured inside.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './systems.js';
import type { Measured } from './report.js';

/** Distinct users with quotas in the guest; more than the 128 requests in flight at most. */
export const UML_USERS = 300;
/** The guest runs quotapolicy, Dovecot and the load generator at once. */
const UML_MEM = '1024M';
/**
 * The guest's second quota file system (/home/prj, project quotas: test/uml/prelude.sh) is for the
 * acceptance tests. The scenario's mailboxes are all on /home and Dovecot's fs backend reads that one
 * only, so it is left out (BENCH_PRJ_FS=1 mounts it, to measure what it costs: docs/BENCHMARKS.md).
 */
const PRJ_FS = process.env.BENCH_PRJ_FS === '1' ? '1' : '0';
/** Boot, set-up and 2 x 5 points; past this the guest is killed (boot.sh), so a hung guest fails the bench. */
const UML_TIMEOUT_S = { full: 900, short: 300 };

export async function runUml(out: string, seconds: number, warmup: number, short: boolean): Promise<Measured[]> {
  const limit = short ? UML_TIMEOUT_S.short : UML_TIMEOUT_S.full;
  const started = Date.now();
  const r = spawnSync(
    join(REPO, 'test/uml/boot.sh'),
    [
      out,
      join(REPO, 'bench/uml-guest.sh'),
      `REPO=${REPO}`,
      `USERS=${UML_USERS}`,
      `SECONDS=${seconds}`,
      `WARMUP=${warmup}`,
      `PRJ_FS=${PRJ_FS}`,
    ],
    { encoding: 'utf8', timeout: (limit + 30) * 1000, env: { ...process.env, UML_MEM, UML_TIMEOUT: String(limit) } },
  );
  const log = (f: string): string => (existsSync(join(out, f)) ? readFileSync(join(out, f), 'utf8').slice(-3000) : '');
  if (r.status !== 0 || !existsSync(join(out, 'results.json'))) {
    throw new Error(
      `user-mode-linux bench failed after ${((Date.now() - started) / 1000).toFixed(0)} s (status ${r.status}${r.status === 124 ? `: ran over ${limit} s` : ''}${r.error ? `, ${r.error.message}` : ''})\n` +
        `load.log:\n${log('load.log')}\nconsole.log:\n${log('console.log')}\nkernel.log:\n${log('kernel.log')}`,
    );
  }
  const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { measured: Measured[]; checks: string[] };
  process.stderr.write(log('load.log') + res.checks.join('\n') + '\n');
  return res.measured;
}
