// The Postfix stage check (src/frontend/startup/postfix-stages.ts): postconf's
// text in, findings out. The real postconf and daemon: startup-warnings.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parsePostconf,
  policyServices,
  reaches,
  serviceFor,
  stageFindings,
  tokens,
} from '../src/frontend/startup/postfix-stages.js';

const SPOOL = '/var/spool/postfix';
const DEFAULT_LISTEN = [`unix:${SPOOL}/private/quotapolicy`];

function params(lines: Record<string, string>): Map<string, string> {
  const text = Object.entries({ queue_directory: SPOOL, ...lines })
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  return parsePostconf(`${text}\n`);
}

const quotaOnly = {
  listen: DEFAULT_LISTEN,
  checks: ['quota'],
  quota_states: ['RCPT', 'END-OF-MESSAGE'],
  count_mode: 'rcpt',
};
const rateData = { ...quotaOnly, checks: ['quota', 'rate_limit'], count_mode: 'data_messages' };

test('postconf lines: name = value, empty values kept, warnings ignored', () => {
  const p = parsePostconf('a = x, y\nb =\npostconf: warning: c: unknown parameter\n');
  assert.deepEqual(
    [...p],
    [
      ['a', 'x, y'],
      ['b', ''],
    ],
  );
});

test('restriction lists: commas, spaces and { } groups', () => {
  assert.deepEqual(
    tokens('permit_mynetworks,reject_unauth_destination  check_policy_service { inet:h:1, timeout=10s }'),
    ['permit_mynetworks', 'reject_unauth_destination', 'check_policy_service', '{ inet:h:1, timeout=10s }'],
  );
  assert.deepEqual(
    policyServices('check_policy_service { inet:127.0.0.1:9, default_action=DUNNO }, permit', new Map()),
    ['inet:127.0.0.1:9'],
  );
  // A class naming itself is followed only so deep.
  const classes = new Map([
    ['loop', 'loop, check_policy_service unix:private/a'],
    ['other', 'check_policy_service unix:private/b'],
  ]);
  const found = policyServices('permit_mynetworks loop other', classes);
  assert.ok(found.includes('unix:private/b'));
  assert.ok(found.length < 20, String(found.length));
});

test('unix endpoints: relative to queue_directory; absolute as it is or inside the chroot', () => {
  assert.equal(reaches('unix:private/quotapolicy', DEFAULT_LISTEN, SPOOL), true);
  assert.equal(reaches('unix:private//quotapolicy', DEFAULT_LISTEN, SPOOL), true);
  assert.equal(reaches(`unix:${SPOOL}/private/quotapolicy`, DEFAULT_LISTEN, SPOOL), true);
  assert.equal(reaches('unix:/private/quotapolicy', DEFAULT_LISTEN, SPOOL), true, 'chrooted smtpd');
  assert.equal(reaches('unix:private/other', DEFAULT_LISTEN, SPOOL), false);
  assert.equal(reaches('unix:private/quotapolicy', DEFAULT_LISTEN, '/srv/spool'), false);
  assert.equal(reaches('unix:/run/qp.sock', ['unix:/run/qp.sock'], SPOOL), true);
  assert.equal(reaches('private/quotapolicy', DEFAULT_LISTEN, SPOOL), false, 'no transport: Postfix refuses it too');
});

test('inet endpoints: same port and host, a wildcard listener, localhost, or a name not resolved', () => {
  const l = ['inet:127.0.0.1:10099'];
  assert.equal(reaches('inet:127.0.0.1:10099', l, SPOOL), true);
  assert.equal(reaches('inet:localhost:10099', l, SPOOL), true);
  assert.equal(reaches('inet:127.0.0.1:10098', l, SPOOL), false);
  assert.equal(reaches('inet:192.0.2.1:10099', l, SPOOL), false);
  assert.equal(reaches('inet:mx.example.org:10099', l, SPOOL), true, 'may be this host: no warning');
  assert.equal(reaches('inet:[::1]:10099', ['inet:[::1]:10099'], SPOOL), true);
  assert.equal(reaches('inet:[::1]:10099', ['inet:0.0.0.0:10099'], SPOOL), true);
  assert.equal(reaches('unix:private/quotapolicy', l, SPOOL), false);
});

test('the fix names the socket as main.cf would', () => {
  assert.equal(serviceFor(DEFAULT_LISTEN, SPOOL), 'unix:private/quotapolicy');
  assert.equal(serviceFor(['unix:/run/qp.sock'], SPOOL), 'unix:/run/qp.sock');
  assert.equal(serviceFor(['inet:127.0.0.1:10099'], SPOOL), 'inet:127.0.0.1:10099');
});

test("README's main.cf: no finding for the quota check; data_* count modes need smtpd_data_restrictions", () => {
  const readme = params({
    smtpd_recipient_restrictions:
      'permit_mynetworks, reject_unauth_destination, check_policy_service unix:private/quotapolicy',
  });
  assert.deepEqual(stageFindings(readme, quotaOnly), [], 'END-OF-MESSAGE alone missing is the optional set-up');
  const [f, ...more] = stageFindings(readme, rateData);
  assert.equal(more.length, 0);
  assert.equal(
    f,
    'rate_limit.count_mode data_messages counts at DATA, but Postfix never asks this daemon there: ' +
      `no check_policy_service for unix:${SPOOL}/private/quotapolicy in smtpd_data_restrictions ` +
      `(postconf, queue_directory ${SPOOL}), so the rate limit never runs: ` +
      'add "check_policy_service unix:private/quotapolicy" to smtpd_data_restrictions, or set count_mode rcpt',
  );
  const withData = params({
    smtpd_recipient_restrictions: 'reject_unauth_destination, check_policy_service unix:private/quotapolicy',
    smtpd_data_restrictions: 'check_policy_service { unix:private/quotapolicy, timeout=10s }',
  });
  assert.deepEqual(stageFindings(withData, rateData), []);
});

test('rcpt count mode and quota at RCPT: relay, recipient, and (delayed) client/helo/sender lists count; a class too', () => {
  const rate = { ...quotaOnly, checks: ['rate_limit'], count_mode: 'rcpt' };
  const call = 'check_policy_service unix:private/quotapolicy';
  assert.deepEqual(stageFindings(params({ smtpd_relay_restrictions: call }), rate), []);
  assert.deepEqual(stageFindings(params({ smtpd_sender_restrictions: call }), rate), []);
  assert.equal(
    stageFindings(params({ smtpd_sender_restrictions: call, smtpd_delay_reject: 'no' }), rate).length,
    1,
    'evaluated at MAIL FROM, not RCPT TO',
  );
  const viaClass = params({
    smtpd_restriction_classes: 'qp',
    qp: call,
    smtpd_recipient_restrictions: 'permit_sasl_authenticated, qp',
  });
  assert.deepEqual(stageFindings(viaClass, rate), []);
  assert.deepEqual(stageFindings(params({ smtpd_data_restrictions: call }), rate).length, 1);
  const quota = stageFindings(params({ smtpd_data_restrictions: call }), quotaOnly);
  assert.equal(quota.length, 1);
  assert.match(
    quota[0]!,
    /^quota_states is RCPT, END-OF-MESSAGE, but .* in smtpd_relay_restrictions, smtpd_recipient_restrictions, smtpd_client_restrictions, smtpd_helo_restrictions, smtpd_sender_restrictions, smtpd_end_of_data_restrictions .*so the quota check never runs/,
  );
});

test('another daemon, or nothing configured, is found; a check that is off is not', () => {
  const other = params({ smtpd_recipient_restrictions: 'check_policy_service inet:127.0.0.1:12340' });
  assert.equal(stageFindings(other, quotaOnly).length, 1);
  assert.equal(stageFindings(params({}), rateData).length, 2);
  assert.deepEqual(stageFindings(params({}), { ...quotaOnly, checks: [] }), []);
});
