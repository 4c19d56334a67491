// `quotapolicy ratelimit show|reset KIND:ID` beside a running daemon, on every
// backend: the CLI opens the configured store itself (as the service user),
// shows the key the daemon counts under, and a reset holds for the daemon's
// very next request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, chownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { BIN, startDaemon, fakeQuota, writeConfig } from './support/daemon.js';
import { exchange, rcpt } from './support/policy-client.js';
import { BACKENDS, SERVICE_STORE_URLS, uniq } from './support/stores.js';

const FAIL = 'DEFER_IF_PERMIT Rate limit reach, retry later';
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

function config(
  backend: (typeof BACKENDS)[number],
  extra = '',
  url: string = backend === 'sqlite' ? '' : SERVICE_STORE_URLS[backend],
): { cfg: string; sock: string } {
  const dir = mkdtempSync(join(tmpdir(), 'qp-rladmin-'));
  chmodSync(dir, 0o755);
  const db = mkdtempSync(join(tmpdir(), 'qp-rladmin-db-'));
  const { uid, gid } = userid.ids('quotapolicy');
  chownSync(db, uid, gid);
  const sock = join(dir, 'p.sock');
  const store = backend === 'sqlite' ? `  sqlite_path: ${db}/rl.sqlite3\n` : `  url: "${url}"\n`;
  const cfg = writeConfig(
    dir,
    `checks: [rate_limit]\nquota_path: ${fakeQuota().path}\nsocket_group: quotapolicy\nlisten: ["unix:${sock}"]\n` +
      `rate_limit:\n  backend: ${backend}\n${store}  limits: [[2, 3600], [50, 86400]]\n  limit_by_sender: true\n  store_timeout_ms: 5000\n${extra}`,
  );
  return { cfg, sock };
}

for (const backend of BACKENDS) {
  test(`ratelimit show and reset beside a running daemon (${backend}): the next request is counted from nothing`, async () => {
    const { cfg, sock } = config(backend);
    const d = startDaemon(['--config', cfg]);
    try {
      await d.waitFor((l) => l.msg === 'front ready');
      const local = uniq('Blocked');
      const mail = async () =>
        (
          await exchange({ path: sock }, [rcpt('r@example.net', { sender: `${local}@Example.ORG` })], { replies: 1 })
        ).text.replace(/^action=|\n\n$/g, '');
      assert.deepEqual([await mail(), await mail(), await mail()], ['DUNNO', 'DUNNO', FAIL]);
      // Any spelling of the address names the one key it is counted under.
      const show = cli('ratelimit', 'show', `sender:${local.toUpperCase()}@example.org`, '--config', cfg);
      assert.equal(show.status, 0, show.stderr);
      const key = `sender:${local.toLowerCase()}@example.org`;
      assert.match(
        show.stdout,
        new RegExp(
          `^key: ${key}\\nstore: ${backend}\\nlimits: \\[\\[2, 3600\\], \\[50, 86400\\]\\] \\(limits\\)\\n` +
            '  2 in 3600 s: 2 used, full: frees up at \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ \\(in (?:35|36)\\d\\d s\\)\\n  50 in 86400 s: 2 used, 48 left\\n$',
        ),
      );
      const reset = cli('ratelimit', 'reset', key, '--config', cfg);
      assert.deepEqual(
        [reset.status, reset.stdout, reset.stderr],
        [0, `reset ${key}: 2 events deleted from ${backend}; its next request is counted from nothing\n`, ''],
      );
      assert.deepEqual(
        [await mail(), await mail(), await mail()],
        ['DUNNO', 'DUNNO', FAIL],
        'unblocked at once, and counted again from there',
      );
      assert.match(cli('ratelimit', 'show', key, '--config', cfg).stdout, /\n {2}2 in 3600 s: 2 used, full: /);
      const again = cli('ratelimit', 'reset', `sender:${uniq('never')}@example.org`, '--config', cfg);
      assert.equal(again.status, 66);
      assert.match(
        again.stderr,
        /^quotapolicy: ratelimit reset: nothing is held under sender:never-.*: nothing to reset/,
      );
    } finally {
      await d.stop();
    }
  });
}

test('ratelimit: usage, a missing or unknown kind, a bad address are one line each, exit 64, before any store is opened', () => {
  // A server that is not there: a store opened would be exit 69, not 64.
  const { cfg } = config('postgresql', '', 'postgresql://nobody@127.0.0.1:1/none');
  const bad: [string[], RegExp][] = [
    [
      ['ratelimit'],
      /^quotapolicy: usage: quotapolicy ratelimit show\|reset KIND:ID \(kinds: sasl, sender, ip, rcpt_domain, sender_domain, all, bytes;/,
    ],
    [['ratelimit', 'delete', 'sender:a@b'], /usage: quotapolicy ratelimit show\|reset/],
    [['ratelimit', 'show', 'sender:a@b', 'extra'], /usage: quotapolicy ratelimit show\|reset/],
    [
      ['ratelimit', 'reset', 'bob@example.org'],
      /^quotapolicy: ratelimit reset: "bob@example\.org" names no kind: write KIND:ID, e\.g\. sender:bob@example\.org or sasl:bob@example\.org/,
    ],
    [['ratelimit', 'show', 'user:bob'], /unknown kind "user" in "user:bob"/],
    [['ratelimit', 'show', 'ip:300.1.1.1'], /ip:300\.1\.1\.1 is not an IP address or network/],
  ];
  for (const [args, msg] of bad) {
    const r = cli(...args, '--config', cfg);
    assert.equal(r.status, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
  const down = cli('ratelimit', 'show', 'sender:a@b', '--config', cfg);
  assert.equal(down.status, 69, 'a good id reaches the store, which is down: one line, exit 69');
  assert.match(down.stderr, /^quotapolicy: postgresql: .*\n$/);
});

test('ratelimit show: ids not counted with this config say why; domains and unlimited ids', () => {
  const { cfg } = config(
    'sqlite',
    '  limit_by_sasl: false\n  exempt_ids: [boss@example.org]\n  limits_by_id: {vip@example.org: []}\n  limits_by_sender_domain: {example.org: [[500, 3600]]}\n',
  );
  const show = (id: string) => cli('ratelimit', 'show', id, '--config', cfg).stdout;
  assert.equal(
    show('sasl:alice'),
    'key: sasl:alice\nstore: sqlite\nnot counted: limit_by_sasl is off\nlimits: [[2, 3600], [50, 86400]] (limits)\n  2 in 3600 s: 0 used, 2 left\n  50 in 86400 s: 0 used, 50 left\n',
  );
  assert.match(
    show('sender:Boss@example.org'),
    /^key: sender:boss@example\.org\nstore: sqlite\nnot counted: boss@example\.org is in exempt_ids\n/,
  );
  assert.equal(
    show('sender:vip@example.org'),
    'key: sender:vip@example.org\nstore: sqlite\nlimits: none, unlimited ([] in limits_by_id)\nheld: 0 events\n',
  );
  assert.match(
    show('sender:bob@example.org'),
    /\nalso counted: sender_domain:example\.org \(limits_by_sender_domain; show and reset it on its own\)\n$/,
  );
  assert.equal(
    show('sender_domain:EXAMPLE.org'),
    'key: sender_domain:example.org\nstore: sqlite\nlimits: [[500, 3600]] (limits_by_sender_domain)\n  500 in 3600 s: 0 used, 500 left\n',
  );
  assert.equal(
    show('rcpt_domain:example.net'),
    'key: rcpt_domain:example.net\nstore: sqlite\nnot counted: example.net is not in limits_by_recipient_domain\nlimits: none\nheld: 0 events\n',
  );
  assert.match(
    show('ip:192.0.2.7'),
    /^key: ip:192\.0\.2\.7\nstore: sqlite\nnot counted: limit_by_ip is off\nnot counted: 192\.0\.2\.7 is not in limited_networks\n/,
  );
});
