// `quotapolicy serve` as root on this host: privilege separation, listeners,
// the policy protocol over real sockets, decisions through the real helper
// (with a stand-in quota(1): plumbing only; real quotas are in uml.test.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, chmodSync, statSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import net from 'node:net';
import {
  startDaemon,
  fakeQuota,
  quotaBlock,
  freePort,
  writeConfig,
  type Daemon,
  type FakeQuota,
} from './support/daemon.js';
import { exchange, rcpt, request, actions } from './support/policy-client.js';

const SERVICE_USER = 'quotapolicy';
const FULL = '452 4.2.2 Mailbox full, try again later';
const ERROR_ACTION = '451 4.3.0 quota lookup failed';

let dir: string;
let sock: string;
let port: number;
let port6: number;
let fq: FakeQuota;
let d: Daemon;
let cfgPath: string;
let svc: { uid: number; gid: number };
const nobody = userid.ids('nobody').uid;

function config(extra = ''): string {
  return `user: ${SERVICE_USER}
listen: ["unix:${sock}", "inet:127.0.0.1:${port}", "inet:[::1]:${port6}"]
socket_group: ${SERVICE_USER}
quota_path: ${fq.path}
min_uid: 100
recipient_delimiter: "+"
idle_timeout_ms: 1500
cache_ttl_ms: 0
actions:
  error: "${ERROR_ACTION}"
${extra}`;
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'these tests start the daemon as root: run them as root (CI does)');
  svc = userid.ids(SERVICE_USER); // throws if scripts/setup.sh has not created the user
  dir = mkdtempSync(join(tmpdir(), 'qp-serve-'));
  chmodSync(dir, 0o755);
  sock = join(dir, 'policy.sock');
  [port, port6] = [await freePort(), await freePort('::1')];
  fq = fakeQuota();
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '200*', 100, 200, 1));
  fq.setOutput(nobody, quotaBlock(nobody, '10', 100, 200));
  cfgPath = writeConfig(dir, config());
  d = startDaemon(['--config', cfgPath]);
  await d.waitFor((l) => l.msg === 'front ready');
});

after(async () => {
  assert.equal(await d.stop(), 0, 'SIGTERM stops the daemon with status 0');
});

test('the front runs as the service user, no supplementary groups, no capabilities', () => {
  const status = (pid: number): Record<string, string> =>
    Object.fromEntries(statusLines(pid).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
  const front = status(d.frontPid());
  assert.deepEqual(front.Uid!.split(/\s+/).map(Number), [svc.uid, svc.uid, svc.uid, svc.uid]);
  assert.deepEqual(front.Gid!.split(/\s+/).map(Number), [svc.gid, svc.gid, svc.gid, svc.gid]);
  assert.ok(svc.uid !== 0 && svc.gid !== 0);
  assert.equal(front.Groups, '');
  assert.equal(front.CapEff, '0000000000000000');
  assert.equal(front.CapPrm, '0000000000000000');
  assert.equal(status(d.proc.pid!).Uid!.split(/\s+/)[0], '0', 'the helper stays root');
});

function statusLines(pid: number): string[] {
  return readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .filter((l) => l.includes(':'));
}

test('answers on the unix socket, IPv4 and IPv6', async () => {
  for (const addr of [{ path: sock }, { host: '127.0.0.1', port }, { host: '::1', port: port6 }]) {
    const r = await exchange(addr, [rcpt(`${SERVICE_USER}@example.test`)], { replies: 1 });
    assert.deepEqual(actions(r.text), [FULL], JSON.stringify(addr));
  }
});

test('the unix socket is owner/group/mode as configured, not world-accessible', () => {
  const st = statSync(sock);
  assert.equal(st.mode & 0o777, 0o660);
  assert.equal(st.uid, svc.uid);
  assert.equal(st.gid, svc.gid);
});

test('pipelined requests are answered in order on one connection', async () => {
  const reqs = [
    rcpt(`${SERVICE_USER}+x@example.test`),
    rcpt('nobody@example.test'),
    rcpt('root@example.test'),
    request({ request: 'smtpd_access_policy', protocol_state: 'DATA' }),
    rcpt('NoSuchUser@example.test'),
    rcpt(`${SERVICE_USER.toUpperCase()}@example.test`),
  ];
  const r = await exchange({ path: sock }, [reqs.join('')], { replies: reqs.length });
  assert.deepEqual(actions(r.text), [FULL, 'DUNNO', 'DUNNO', 'DUNNO', 'DUNNO', FULL]);
});

test('a request sent one byte at a time gets the same answer', async () => {
  const bytes = [...Buffer.from(rcpt(`${SERVICE_USER}@example.test`))].map((b) => Buffer.from([b]));
  const r = await exchange({ path: sock }, bytes, { replies: 1, gapMs: 1 });
  assert.deepEqual(actions(r.text), [FULL]);
});

test('many requests on one connection, then a half-close: every reply arrives', async () => {
  const r = await exchange({ host: '127.0.0.1', port }, [rcpt('nobody@x').repeat(50)], { halfClose: true });
  assert.equal(actions(r.text).length, 50);
  assert.ok(r.closedByServer);
});

test('non-UTF-8 bytes do not kill the connection', async () => {
  const bad = Buffer.concat([
    Buffer.from('request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=a'),
    Buffer.from([0xff, 0xc3]),
    Buffer.from('@x\n\n'),
  ]);
  const r = await exchange({ path: sock }, [bad, rcpt(`${SERVICE_USER}@x`)], { replies: 2 });
  assert.deepEqual(actions(r.text), ['DUNNO', FULL]);
});

test('garbage and over-long lines close the connection without a reply; others keep working', async () => {
  const before_ = d.lines.length;
  const g = await exchange({ path: sock }, ['this is not a policy request\n']);
  assert.equal(g.text, '');
  assert.ok(g.closedByServer);
  const long = await exchange({ path: sock }, ['recipient=' + 'x'.repeat(20_000)]);
  assert.equal(long.text, '');
  assert.ok(long.closedByServer);
  const ok = await exchange({ path: sock }, [rcpt(`${SERVICE_USER}@x`)], { replies: 1 });
  assert.deepEqual(actions(ok.text), [FULL]);
  // The front's log reaches us through the helper, after the replies: wait for it (bounded).
  const bad = (): Record<string, unknown>[] =>
    d.lines.slice(before_).filter((l) => l.msg === 'bad policy request, closing connection without a reply');
  for (const until = Date.now() + 10_000; bad().length < 2 && Date.now() < until;)
    await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200)); // a third line, were there one, would be here by now
  assert.equal(bad().length, 2, 'each bad connection is logged once');
});

test('an idle connection is closed after idle_timeout_ms', async () => {
  const started = Date.now();
  const r = await exchange({ path: sock }, [], { timeoutMs: 8000 });
  assert.ok(r.closedByServer && !r.timedOut);
  assert.ok(Date.now() - started >= 1400);
});

test('quota(1) gets fixed flags and numeric uids only, and one run serves concurrent lookups', async () => {
  const n = fq.argv().length;
  await exchange({ path: sock }, [rcpt(`${SERVICE_USER}@x`) + rcpt('nobody@x')], { replies: 2 });
  const runs = fq.argv().slice(n);
  assert.equal(runs.length, 1, runs.join(' | '));
  assert.match(runs[0]!, /^-w -p -v --show-mntpoint --hide-device -u -- \d+ \d+$/);
  for (const line of fq.argv()) assert.match(line, /^-w -p -v --show-mntpoint --hide-device -u --( \d+)+$/);
});

test('a quota error is an error, never "full": the error action is answered and logged as a warning', async () => {
  fq.setMode('stderr');
  try {
    const r = await exchange({ path: sock }, [rcpt(`${SERVICE_USER}@x`)], { replies: 1 });
    assert.deepEqual(actions(r.text), [ERROR_ACTION]);
    await d.waitFor((l) => l.role === 'front' && l.level === 40 && l.verdict === 'error');
    await d.waitFor((l) => l.role === 'helper' && l.msg === 'quota complained');
  } finally {
    fq.setMode('');
  }
});

test('one decision line per request, with the fields an admin greps for', async () => {
  await exchange({ path: sock }, [rcpt(`${SERVICE_USER}+tag@x`, { queue_id: 'ABC123' })], { replies: 1 });
  const line = await d.waitFor((l) => l.queue_id === 'ABC123');
  for (const k of ['recipient', 'user', 'verdict', 'reason', 'latency_ms']) assert.ok(k in line, k);
  assert.equal(line.role, 'front');
  assert.equal(line.user, SERVICE_USER);
  assert.equal(line.verdict, 'over_quota');
});

test('SIGHUP reloads the config; the front cannot read a root-only file, so that reload fails and the old config stays', async () => {
  // A connection opened before the reload is answered before and after it.
  const open = net.connect(sock);
  let got = '';
  open.on('data', (c: Buffer) => {
    got += c.toString();
  });
  const replies = async (n: number): Promise<void> => {
    while (got.split('\n\n').length - 1 < n) await new Promise((r) => setTimeout(r, 10));
  };
  open.write(rcpt(`${SERVICE_USER}@x`));
  await replies(1);
  writeFileSync(cfgPath, config('exempt_users: [quotapolicy]\n'));
  d.proc.kill('SIGHUP');
  await d.waitFor((l) => l.msg === 'config reloaded');
  open.write(rcpt(`${SERVICE_USER}@x`));
  await replies(2);
  open.destroy();
  assert.deepEqual(actions(got), [FULL, 'DUNNO'], 'same connection, new config');
  assert.deepEqual(actions((await exchange({ path: sock }, [rcpt(`${SERVICE_USER}@x`)], { replies: 1 })).text), [
    'DUNNO',
  ]);
  chmodSync(cfgPath, 0o600); // root-only
  writeFileSync(cfgPath, config());
  d.proc.kill('SIGHUP');
  const failed = await d.waitFor((l) => l.msg === 'config reload failed, keeping the old config');
  assert.match(String(failed.reason), /EACCES/);
  assert.deepEqual(actions((await exchange({ path: sock }, [rcpt(`${SERVICE_USER}@x`)], { replies: 1 })).text), [
    'DUNNO',
  ]);
  chmodSync(cfgPath, 0o644);
  writeFileSync(cfgPath, 'min_uid: [broken\n');
  d.proc.kill('SIGHUP');
  await d.waitFor(
    (l) => l.msg === 'config reload failed, keeping the old config' && /YAML syntax/.test(String(l.reason)),
  );
  writeFileSync(cfgPath, config());
  d.proc.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 300));
});

test('a second instance on the same socket refuses to start and leaves the first untouched', async () => {
  const second = startDaemon(['--config', cfgPath]);
  assert.equal(await second.exit, 78);
  assert.match(second.stderr, /another process is listening on/);
  assert.ok(existsSync(sock));
  const r = await exchange({ path: sock }, [rcpt('nobody@x')], { replies: 1 });
  assert.deepEqual(actions(r.text), ['DUNNO']);
});
