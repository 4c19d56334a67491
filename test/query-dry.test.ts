// A dry query (what `quotapolicy query` sends): counted against no limit,
// explained only to whoever may (unix sockets), never honoured in a request
// from Postfix; Postfix's own replies do not change. Through the policy
// service on a real SQLite store; through a running daemon in operations.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { pino } from 'pino';
import { parseConfig } from '../src/shared/config/load.js';
import { PolicyService } from '../src/frontend/policy/service.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { formatReply, replyValue, decodeReplyValue, type Reply } from '../src/frontend/protocol/reply.js';
import { QuotaStatus } from '../src/shared/wire.js';
import { storeConfig } from './support/stores.js';
import { explain, buildRequest } from '../src/cli/query.js';
import { PolicyParser } from '../src/frontend/protocol/parser.js';

const FAIL = 'DEFER_IF_PERMIT Rate limit reach, retry later';
const silent = pino({ level: 'silent' });

function service() {
  const cfg = parseConfig(
    'checks: [quota, rate_limit]\nactions:\n  error: "451 4.3.0 try later"\nrate_limit:\n  limits: [[1, 60]]\n',
    't',
  );
  const sqlite = storeConfig('sqlite');
  return new PolicyService(
    cfg,
    '+',
    1000,
    {
      lookupUser: (n) => (n === 'ok' ? { uid: 2002, gid: 100 } : undefined),
      queryQuota: async (uid) => ({
        uid,
        status: QuotaStatus.Ok,
        fs: [
          {
            mount: '/home',
            blocks: 1,
            blockSoft: 100,
            blockHard: 200,
            blockGrace: 0,
            files: 1,
            fileSoft: 0,
            fileHard: 0,
            fileGrace: 0,
          },
        ],
      }),
      openStore: () => openStore({ ...sqlite, timeout_ms: 2000 }),
    },
    silent,
  );
}

const req = (o: Record<string, string> = {}) =>
  new Map(
    Object.entries({
      request: 'smtpd_access_policy',
      protocol_state: 'RCPT',
      recipient: 'ok@example.test',
      sasl_username: 'alice',
      ...o,
    }),
  );
const dry = (o: Record<string, string> = {}) => req({ quotapolicy_query: 'dry', ...o });
const attrs = (r: Reply) => (typeof r === 'string' ? undefined : Object.fromEntries(r.attrs));

test('a dry query counts nothing and says which check answered and why; mail is counted as before', async () => {
  const svc = service();
  for (let i = 0; i < 3; i++) {
    const r = await svc.answer(dry(), true);
    assert.equal(typeof r === 'string' ? r : r.action, 'DUNNO');
    assert.deepEqual(attrs(r), {
      quotapolicy_counted: 'no',
      quotapolicy_check: 'quota',
      quotapolicy_verdict: 'pass',
      quotapolicy_reason: 'within quota on /home',
      quotapolicy_user: 'ok',
      quotapolicy_quota: 'pass: within quota on /home (action DUNNO)',
      quotapolicy_rate_limit: 'pass: within limits, 1 not counted for sasl:alice (action DUNNO)',
    });
  }
  assert.equal(await svc.answer(req()), 'DUNNO', 'the limit of 1 is still free: mail gets it');
  assert.equal(await svc.answer(req()), FAIL);
  const full = await svc.answer(dry(), true);
  assert.equal(typeof full === 'string' ? full : full.action, FAIL);
  const a = attrs(full)!;
  assert.deepEqual(
    [a.quotapolicy_check, a.quotapolicy_verdict, a.quotapolicy_rate_id],
    ['rate_limit', 'rate_limited', 'alice'],
  );
  assert.match(a.quotapolicy_reason!, /^sasl:alice: 1 \+ 1 over 1 in 60 s$/);
  assert.equal(a.quotapolicy_quota, 'pass: within quota on /home (action DUNNO)');
});

test('on an inet listener a dry query is not counted either, but its explanation is withheld', async () => {
  const svc = service();
  const r = await svc.answer(dry(), false);
  assert.deepEqual(attrs(r), {
    quotapolicy_counted: 'no',
    quotapolicy_details:
      'withheld: asked on an inet listener, which any local user may reach; ask on a unix socket (listen: unix:PATH)',
  });
  assert.equal(await svc.answer(req(), false), 'DUNNO', 'not counted');
});

test('the query attribute in a request from Postfix (it carries instance=) is ignored: counted as mail, answered as mail', async () => {
  const svc = service();
  const forged = dry({ instance: '1a2b.66b0c0de.1234.0' });
  assert.equal(await svc.answer(forged, true), 'DUNNO', 'a plain action: nothing Postfix would not expect');
  assert.equal(await svc.answer(forged, true), FAIL, 'and it was counted');
});

test('a query of an unknown kind is refused with the error action and a reason, nothing decided or counted', async () => {
  const svc = service();
  const r = await svc.answer(req({ quotapolicy_query: 'count-twice' }), true);
  assert.deepEqual(r, {
    action: '451 4.3.0 try later',
    attrs: [
      [
        'quotapolicy_error',
        'quotapolicy_query=count-twice: unknown (quotapolicy query sends dry); nothing decided or counted',
      ],
    ],
  });
  assert.equal(await svc.answer(req()), 'DUNNO', 'not counted');
});

test('replies: Postfix still gets exactly "action=...\\n\\n"; a dry reply\'s values are one line of printable ASCII and decode back', () => {
  assert.equal(formatReply('DUNNO'), 'action=DUNNO\n\n');
  assert.equal(
    formatReply({ action: 'DUNNO', attrs: [['quotapolicy_reason', 'a\nb\\c \u00e9\u{1f600}']] }),
    'action=DUNNO\nquotapolicy_reason=a\\u{a}b\\\\c \\u{e9}\\u{1f600}\n\n',
  );
  fc.assert(
    fc.property(fc.string({ unit: 'binary' }), (v) => {
      const enc = replyValue(v);
      assert.match(enc, /^[\x20-\x7e]*$/);
      assert.equal(decodeReplyValue(enc), v);
    }),
  );
});

test('query: the request is dry unless --count, and a dry reply is printed as lines', () => {
  const parse = (text: string) => new PolicyParser().push(Buffer.from(text))[0]!;
  assert.equal(parse(buildRequest('a@b', 'RCPT', '0', [], true)).get('quotapolicy_query'), 'dry');
  assert.equal(parse(buildRequest('a@b', 'RCPT', '0', [], false)).get('quotapolicy_query'), undefined);
  assert.throws(() => buildRequest('a@b', 'RCPT', '0', ['quotapolicy_query=x'], true), /set by query itself/);
  assert.throws(() => buildRequest('a@b', 'RCPT', '0', ['instance=1'], true), /only Postfix sends it/);
  assert.equal(
    explain('action=DUNNO\nquotapolicy_counted=no\nquotapolicy_check=quota\nquotapolicy_reason=caf\\u{e9}'),
    'action=DUNNO\ncheck: quota\nreason: caf\u00e9\ncounted: no (dry query)\n',
  );
  assert.match(explain('action=DUNNO'), /^action=DUNNO\ncounted: unknown: the daemon does not take dry queries/);
});
