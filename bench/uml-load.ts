// Inside user-mode-linux (bench/uml-guest.sh): scenario (b), the quota decision
// on a cache miss. quotapolicy runs with its cache off, so every request asks
// the root helper, which runs the real quota(1) on real kernel quotas; lookups
// in flight together are batched into one run (a fair means, says the issue).
// Dovecot quota-status reads the same quotas with its fs backend. Each request
// names a different user than the ones before it (USERS users in turn).
// usage: node uml-load.js OUTDIR USERS SECONDS WARMUP   (writes OUTDIR/results.json)
import { appendFileSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { quotapolicy, dovecotQuotaStatus, ask } from './systems.js';
import { encode, postfixRequest } from './loadgen.js';
import { measurer } from './measure.js';
import { B_DEFAULT_KINDS, B_LIKE_FOR_LIKE, type Measured } from './report.js';

const [outDir, usersArg, secondsArg, warmupArg] = process.argv.slice(2);
const users = Number(usersArg);
const measure = measurer(Number(secondsArg), Number(warmupArg));
const request = (i: number): Record<string, string> => ({
  ...postfixRequest(i),
  recipient: `u${i % users}@example.test`,
});

/** Over the hard limit from the start: users 0..OVER-1. */
const OVER = 5;
const elapsed = (): string => `${(performance.now() / 1000).toFixed(1)} s`;

function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: status ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Users uN (uid 3000+N) in the guest's own /etc (an overlay), each with a Maildir (Dovecot's fs
 * backend finds the quota through it), 1000 KiB soft and 2000 KiB hard; users 0..OVER-1 over it. */
function makeUsers(): void {
  let passwd = '';
  let group = '';
  let quotas = '';
  for (let i = 0; i < users; i++) {
    const uid = 3000 + i;
    passwd += `u${i}:x:${uid}:${uid}::/home/u${i}:/bin/sh\n`;
    group += `u${i}:x:${uid}:\n`;
    quotas += `u${i} 1000 2000 0 0\n`;
    const home = `/home/u${i}`;
    for (const d of ['cur', 'new', 'tmp']) mkdirSync(`${home}/Maildir/${d}`, { recursive: true });
    for (const p of [home, `${home}/Maildir`, `${home}/Maildir/cur`, `${home}/Maildir/new`, `${home}/Maildir/tmp`])
      chownSync(p, uid, uid);
  }
  appendFileSync('/etc/passwd', passwd);
  appendFileSync('/etc/group', group);
  run('setquota', ['-u', '-b', '/home'], quotas);
  for (let i = 0; i < OVER; i++) {
    // As the user (root ignores quotas): dd stops at the hard limit.
    spawnSync('setpriv', [
      `--reuid=${3000 + i}`,
      `--regid=${3000 + i}`,
      '--clear-groups',
      'dd',
      'if=/dev/zero',
      `of=/home/u${i}/fill`,
      'bs=1024',
      'count=2100',
    ]);
  }
  writeFileSync(
    join(outDir!, 'repquota.txt'),
    run('repquota', ['-u', '/home']).split('\n').slice(0, 12).join('\n') + '\n',
  );
}

/** Both systems must refuse a user over quota and accept one under it, or their figures are not of real work. */
async function sane(name: string, to: string): Promise<string> {
  const path = to.replace(/^unix:/, '');
  const over = await ask(path, encode({ ...request(0), recipient: 'u0@example.test' }), 10_000);
  const under = await ask(path, encode({ ...request(0), recipient: `u${users - 1}@example.test` }), 10_000);
  if (!/^action=(552|452|450|DEFER|REJECT)/i.test(over) || !/^action=(DUNNO|OK)/i.test(under)) {
    throw new Error(`${name}: over quota answered ${JSON.stringify(over)}, under quota ${JSON.stringify(under)}`);
  }
  return `${name}: over quota -> ${over.trim()}; under quota -> ${under.trim()}`;
}

const measured: Measured[] = [];
const checks: string[] = [];
mkdirSync(outDir!, { recursive: true });
process.stderr.write(`uml-load: started\n`);
makeUsers();
process.stderr.write(`uml-load: ${users} users with quotas after ${elapsed()}\n`);
const qpConfig = 'quota_path: /usr/bin/quota\nmin_uid: 1000\nrecipient_delimiter: "+"\ncache_ttl_ms: 0\n';
// Dovecot's fs backend below reads the user's quota only: so does the first row. The second keeps the
// default quota_kinds (user, group, project), which also reads each user's primary group's quota.
for (const [name, dir, extra] of [
  [B_LIKE_FOR_LIKE, '/run/qp-b-user', 'quota_kinds: [user]\n'],
  [B_DEFAULT_KINDS, '/run/qp-b', ''],
] as const)
  measured.push(
    await measure(
      'b',
      async () => {
        const s = await quotapolicy(name, dir, qpConfig + extra);
        checks.push(await sane(s.name, s.to));
        return s;
      },
      request,
    ),
  );
measured.push(
  await measure(
    'b',
    async () => {
      const s = await dovecotQuotaStatus('/run/dovecot-fs', 'fs', '  driver = passwd');
      checks.push(await sane(s.name, s.to));
      return s;
    },
    request,
  ),
);
writeFileSync(join(outDir!, 'results.json'), JSON.stringify({ measured, checks }, null, 1));
process.stderr.write(`uml-load: done after ${elapsed()}\n`);
