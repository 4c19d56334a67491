// Differential test: the same request sequences go to the real
// policyd-rate-limit (Debian package) and to quotapolicy configured by
// `quotapolicy migrate` from the very same file. The actions must be equal.
// (Debian's 1.0.1.1 counts at RCPT only: the DATA count modes are ours and
// are tested in ratelimit-check.test.ts. Deliberate differences: README.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, chmodSync, writeFileSync, chownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import userid from 'userid';
import { BIN, startDaemon, fakeQuota, freePort, type Daemon } from './support/daemon.js';
import { request } from './support/policy-client.js';

type Step = Record<string, string> | { sleepMs: number };

function ask(port: number, attrs: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let b = '';
    s.on('data', (d) => {
      b += d.toString();
      if (b.endsWith('\n\n')) {
        s.destroy();
        resolve(b.replace(/^action=/, '').trimEnd());
      }
    });
    s.on('error', reject);
    s.write(request({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient: 'r@example.test', ...attrs }));
  });
}

async function startPrl(dir: string, port: number, yaml: string): Promise<ChildProcess> {
  const p = spawn('policyd-rate-limit', ['--file', join(dir, 'prl.yaml')], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (
      await new Promise((r) => {
        const s = net.connect(port, '127.0.0.1', () => {
          s.destroy();
          r(true);
        });
        s.on('error', () => r(false));
      })
    )
      return p;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`policyd-rate-limit did not start (scripts/setup.sh --test installs it)\n${yaml}`);
}

async function compare(name: string, settings: string, steps: Step[]): Promise<void> {
  // Root-owned, as root's config must be; policyd-rate-limit writes in a directory of its own.
  const dir = mkdtempSync(join(tmpdir(), 'qp-diff-'));
  chmodSync(dir, 0o755);
  const prlDir = join(dir, 'prl');
  spawnSync('mkdir', ['-p', prlDir]);
  const prlUser = userid.ids('policyd-rate-limit'); // scripts/setup.sh --test installs it
  chownSync(prlDir, prlUser.uid, prlUser.gid);
  const [prlPort, ourPort] = [await freePort(), await freePort()];
  const prlYaml =
    `debug: False\nuser: "policyd-rate-limit"\ngroup: "policyd-rate-limit"\npidfile: "${prlDir}/prl.pid"\n` +
    `sqlite_config:\n    database: "${prlDir}/prl.sqlite3"\nbackend: 0\nSOCKET: ["127.0.0.1", ${prlPort}]\n` +
    `success_action: "dunno"\nfail_action: "defer_if_permit Rate limit reach, retry later"\ndb_error_action: "dunno"\n${settings}`;
  writeFileSync(join(dir, 'prl.yaml'), prlYaml);
  const mig = spawnSync(process.execPath, [BIN, 'migrate', '--from', 'policyd-rate-limit', join(dir, 'prl.yaml')], {
    encoding: 'utf8',
  });
  assert.equal(mig.status, 0, mig.stderr);
  const ours = join(dir, 'ours');
  spawnSync('mkdir', ['-p', ours]);
  const svc = userid.ids('quotapolicy');
  chownSync(ours, svc.uid, svc.gid);
  // Same file, migrated; then only where it runs: our own socket, store and quota stand-in. IPv6 per address, as policyd-rate-limit.
  const ourYaml =
    mig.stdout
      .replace(/^pid_file: .*$/m, '')
      .replace(/^user: .*$/m, '')
      .replace(/^listen:\n( {2}- .*\n)+/m, '')
      .replace(/^ {2}sqlite_path: .*$/m, `  sqlite_path: ${ours}/rl.sqlite3\n  ipv6_prefix: 128`) +
    `listen: ["inet:127.0.0.1:${ourPort}"]\nquota_path: ${fakeQuota().path}\n`;
  writeFileSync(join(dir, 'ours.yaml'), ourYaml);
  chmodSync(join(dir, 'ours.yaml'), 0o644);
  const prl = await startPrl(dir, prlPort, prlYaml);
  const d: Daemon = startDaemon(['--config', join(dir, 'ours.yaml')]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    const theirs: string[] = [];
    const mine: string[] = [];
    for (const step of steps) {
      if ('sleepMs' in step) {
        await new Promise((r) => setTimeout(r, Number(step.sleepMs)));
        continue;
      }
      // Both count whole seconds: never ask across a second boundary.
      while (Date.now() % 1000 > 600) await new Promise((r) => setTimeout(r, 20));
      const [a, b] = await Promise.all([ask(prlPort, step), ask(ourPort, step)]);
      theirs.push(a);
      mine.push(b);
    }
    assert.deepEqual(mine, theirs, `${name}: quotapolicy vs policyd-rate-limit`);
    assert.ok(
      theirs.some((x) => x.startsWith('defer_if_permit')) && theirs.includes('dunno'),
      `${name}: the sequence exercises both answers`,
    );
  } finally {
    prl.kill('SIGUSR1');
    await d.stop();
  }
}

const times = (n: number, s: Record<string, string>): Step[] => Array.from({ length: n }, () => s);

test('differential: several sliding windows over time', async () => {
  await compare('windows', 'limits:\n  - [3, 2]\n  - [5, 6]\nlimit_by_sasl: True\n', [
    ...times(4, { sasl_username: 'alice' }),
    { sleepMs: 2300 },
    ...times(3, { sasl_username: 'alice' }),
    { sleepMs: 2500 },
    ...times(3, { sasl_username: 'alice' }),
    ...times(2, { sasl_username: 'bob' }),
  ]);
});

test('differential: identities (SASL, then sender, then IP) and limited networks, IPv4 and IPv6', async () => {
  await compare(
    'ids',
    'limits:\n  - [2, 60]\nlimit_by_sasl: True\nlimit_by_sender: True\nlimit_by_ip: True\nlimited_networks: ["192.0.2.0/24", "2001:db8::/32"]\n',
    [
      ...times(3, { sasl_username: 'carol', sender: 's@example.org', client_address: '192.0.2.5' }),
      ...times(3, { sender: 's@example.org', client_address: '192.0.2.5' }),
      ...times(3, { client_address: '192.0.2.5' }),
      ...times(3, { client_address: '198.51.100.7' }),
      ...times(3, { client_address: '2001:db8::1' }),
      ...times(2, { client_address: '2001:db8::2' }),
      ...times(2, { protocol_state: 'DATA', client_address: '192.0.2.6' }),
    ],
  );
});

test('differential: limits_by_id overrides and unlimited ids', async () => {
  await compare(
    'limits_by_id',
    'limits:\n  - [1, 60]\nlimits_by_id:\n  foo: []\n  bar:\n    - [3, 60]\n  192.0.2.9:\n    - [2, 60]\nlimit_by_sasl: True\nlimit_by_ip: True\nlimited_networks: ["0.0.0.0/0"]\n',
    [
      ...times(4, { sasl_username: 'foo' }),
      ...times(4, { sasl_username: 'bar' }),
      ...times(2, { sasl_username: 'baz' }),
      ...times(3, { client_address: '192.0.2.9' }),
      ...times(2, { client_address: '192.0.2.10' }),
    ],
  );
});

test('differential: sender limiting without SASL limiting', async () => {
  await compare('sender', 'limits:\n  - [2, 60]\nlimit_by_sasl: False\nlimit_by_sender: True\n', [
    ...times(3, { sasl_username: 'dave', sender: 'x@example.org' }),
    ...times(2, { sender: 'y@example.org' }),
    ...times(2, { sasl_username: 'dave' }),
  ]);
});
