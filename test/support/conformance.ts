// The store conformance suite: every backend answers these the same. Run
// against each real server by ratelimit-store.test.ts, and against
// PostgreSQL through PgBouncer by ratelimit-pgbouncer.test.ts.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { STORE_URLS, storeConfig, uniq, type Backend } from './stores.js';
import { STORE_KEY_MAX_BYTES, storedKey, type RateStore } from '../../src/frontend/ratelimit/store.js';
import { openStore } from '../../src/frontend/ratelimit/open-store.js';
import { PolicyParser, MAX_LINE_BYTES } from '../../src/frontend/protocol/parser.js';
import { RateLimitCheck } from '../../src/frontend/ratelimit/check.js';
import { parseConfig } from '../../src/shared/config/load.js';

const T = 1_800_000_000;
const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');
/**
 * label, padded to exactly n UTF-8 bytes with random letters (which no
 * compression shrinks much: PostgreSQL compresses a long index entry before
 * its 2704-byte limit applies), then end.
 */
const sized = (label: string, n: number, end = ''): string => {
  const fill = n - bytes(label) - bytes(end);
  return label + randomBytes(fill).toString('base64url').slice(0, fill) + end;
};

/** One request as Postfix would send it, through the real parser (so invalid UTF-8 arrives as the parser decodes it). */
function parsed(attrs: (string | Buffer)[]): ReturnType<PolicyParser['push']>[number] {
  const wire = Buffer.concat([
    ...attrs.map((a) => Buffer.concat([Buffer.isBuffer(a) ? a : Buffer.from(a, 'utf8'), Buffer.from('\n')])),
    Buffer.from('\n'),
  ]);
  const reqs = new PolicyParser().push(wire);
  assert.equal(reqs.length, 1);
  return reqs[0]!;
}

/**
 * A store whose sql_limits_by_id reads a table of the admin's own, made for
 * the test with `rows` (id, limits) and dropped by the returned function.
 */
async function withLimitsTable(
  backend: Exclude<Backend, 'redis'>,
  url: string | null,
  rows: [string, string][],
): Promise<{ query: string; open: () => Promise<RateStore>; drop: () => Promise<void> }> {
  const table = `qp_admin_limits_${uniq('t').replace(/-/g, '_')}`;
  const create = `CREATE TABLE ${table} (id VARCHAR(255) NOT NULL, lim VARCHAR(255) NOT NULL)`;
  const cfg = storeConfig(backend, `SELECT lim FROM ${table} WHERE id = ${backend === 'postgresql' ? '$1' : '?'}`, url);
  if (backend === 'sqlite') {
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(cfg.sqlite_path);
    db.exec(create);
    for (const r of rows) db.prepare(`INSERT INTO ${table} VALUES (?, ?)`).run(...r);
    db.close();
    return { query: cfg.sql_limits_by_id, open: () => openStore(cfg), drop: async () => {} };
  }
  const run = async (sql: string, params: string[] = []): Promise<void> => {
    if (backend === 'postgresql') {
      const c = new pg.Client({ connectionString: cfg.url! });
      await c.connect();
      try {
        await c.query(sql, params);
      } finally {
        await c.end();
      }
    } else {
      const c = await mysql.createConnection({ uri: cfg.url! });
      try {
        await c.query(sql, params);
      } finally {
        await c.end();
      }
    }
  };
  await run(create);
  for (const r of rows) await run(`INSERT INTO ${table} VALUES (${backend === 'postgresql' ? '$1, $2' : '?, ?'})`, r);
  return { query: cfg.sql_limits_by_id, open: () => openStore(cfg), drop: () => run(`DROP TABLE ${table}`) };
}

/**
 * The suite against one backend; url (for the network ones) defaults to
 * STORE_URLS' server, label to the backend's name.
 */
export function storeConformance(
  backend: Backend,
  url: string | null = backend === 'sqlite' ? null : STORE_URLS[backend],
  label: string = backend,
): void {
  const open = (sqlLimitsById = ''): Promise<RateStore> => openStore(storeConfig(backend, sqlLimitsById, url));
  describe(`store conformance: ${label}`, () => {
    let s: RateStore;
    before(async () => {
      s = await open();
    });
    after(async () => {
      await s.close();
    });

    test('a window admits exactly its count, then refuses', async () => {
      const key = uniq('win');
      const b = [{ key, limits: [[3, 60]] as const }];
      for (let i = 0; i < 3; i++)
        assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T + i, commit: true }), { ok: true });
      assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T + 3, commit: true }), {
        ok: false,
        key,
        limit: [3, 60],
        used: 3,
      });
    });

    test('sliding window: events exactly `seconds` old still count, one second older do not', async () => {
      const key = uniq('slide');
      const b = [{ key, limits: [[1, 10]] as const }];
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: true })).ok, true);
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + 10, commit: true })).ok, false);
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + 11, commit: true })).ok, true);
    });

    test('several windows: the shortest and the longest both hold', async () => {
      const key = uniq('multi');
      const b = [
        {
          key,
          limits: [
            [2, 10],
            [3, 1000],
          ] as const,
        },
      ];
      const at = async (t: number) => (await s.consume({ buckets: b, n: 1, nowSec: t, commit: true })).ok;
      assert.deepEqual([await at(T), await at(T + 1), await at(T + 2)], [true, true, false]);
      assert.deepEqual([await at(T + 20), await at(T + 21)], [true, false], 'the 1000 s window is full at 3');
    });

    test('n counts several events at once, and is refused whole', async () => {
      const key = uniq('n');
      const b = [{ key, limits: [[5, 60]] as const }];
      assert.equal((await s.consume({ buckets: b, n: 3, nowSec: T, commit: true })).ok, true);
      assert.deepEqual(await s.consume({ buckets: b, n: 3, nowSec: T, commit: true }), {
        ok: false,
        key,
        limit: [5, 60],
        used: 3,
      });
      assert.equal((await s.consume({ buckets: b, n: 2, nowSec: T, commit: true })).ok, true);
    });

    test('commit=false looks without counting; refusals are never counted', async () => {
      const key = uniq('peek');
      const b = [{ key, limits: [[1, 60]] as const }];
      for (let i = 0; i < 3; i++)
        assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: false })).ok, true);
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: true })).ok, true);
      for (let i = 0; i < 3; i++)
        assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + 61 - 61, commit: true })).ok, false);
      assert.equal(
        (await s.consume({ buckets: b, n: 1, nowSec: T + 61, commit: true })).ok,
        true,
        'the refusals did not extend the window',
      );
    });

    test('several buckets are all-or-nothing', async () => {
      const a = uniq('a');
      const z = uniq('z');
      const both = [
        { key: a, limits: [[5, 60]] as const },
        { key: z, limits: [[1, 60]] as const },
      ];
      assert.equal((await s.consume({ buckets: both, n: 1, nowSec: T, commit: true })).ok, true);
      const r = await s.consume({ buckets: both, n: 1, nowSec: T, commit: true });
      assert.deepEqual(r, { ok: false, key: z, limit: [1, 60], used: 1 });
      assert.equal(
        (await s.consume({ buckets: [both[0]!], n: 4, nowSec: T, commit: true })).ok,
        true,
        'bucket a was not charged by the refused request',
      );
    });

    test('no count is lost or doubled under concurrency: limit L, 4L concurrent requests, exactly L pass', async () => {
      const key = uniq('race');
      const L = 25;
      const b = [{ key, limits: [[L, 3600]] as const }];
      const results = await Promise.all(
        Array.from({ length: 4 * L }, () => s.consume({ buckets: b, n: 1, nowSec: T, commit: true })),
      );
      assert.equal(results.filter((r) => r.ok).length, L);
    });

    test('hits for reports: counted per key and window, listed, cleared', async () => {
      const key = uniq('hit');
      await s.recordHit(key, 86400);
      await s.recordHit(key, 86400);
      await s.recordHit(key, 60);
      const mine = (await s.hits()).filter((h) => h.key === key);
      assert.deepEqual(
        mine.sort((x, y) => x.seconds - y.seconds),
        [
          { key, seconds: 60, hits: 1 },
          { key, seconds: 86400, hits: 2 },
        ],
      );
      await s.clearHits();
      assert.deepEqual(
        (await s.hits()).filter((h) => h.key === key),
        [],
      );
    });

    test('keys of 1 KiB and 8 KiB are counted exactly, apart from keys differing only in their last character', async () => {
      for (const size of [1024, 8192]) {
        const head = `${uniq('long')}-${size}-`;
        const key = sized(head, size, 'a');
        const twin = `${key.slice(0, -1)}b`;
        assert.equal(bytes(key), size);
        const b = [{ key, limits: [[2, 60]] as const }];
        assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T, commit: true }), { ok: true });
        assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T, commit: true }), { ok: true });
        assert.deepEqual(
          await s.consume({ buckets: b, n: 1, nowSec: T, commit: true }),
          { ok: false, key, limit: [2, 60], used: 2 },
          `${size} bytes`,
        );
        assert.deepEqual(
          await s.consume({ buckets: [{ key: twin, limits: [[2, 60]] }], n: 1, nowSec: T, commit: false }),
          { ok: true },
          'the twin has its own count',
        );
      }
    });

    test('keys of STORE_KEY_MAX_BYTES (held as they are) and one byte more (hashed) each keep their own count', async () => {
      const head = `${uniq('edge')}-`;
      const keys = [
        sized(head, STORE_KEY_MAX_BYTES - 1),
        sized(head, STORE_KEY_MAX_BYTES),
        sized(head, STORE_KEY_MAX_BYTES + 1),
        sized(head, STORE_KEY_MAX_BYTES, '\u00e9'),
      ];
      assert.equal(bytes(keys[3]!), STORE_KEY_MAX_BYTES, 'a 2-byte character ending exactly at the limit');
      for (const key of keys)
        assert.equal(
          (await s.consume({ buckets: [{ key, limits: [[1, 60]] }], n: 1, nowSec: T, commit: true })).ok,
          true,
          `${bytes(key)} bytes: first`,
        );
      for (const key of keys)
        assert.deepEqual(await s.consume({ buckets: [{ key, limits: [[1, 60]] }], n: 1, nowSec: T, commit: true }), {
          ok: false,
          key,
          limit: [1, 60],
          used: 1,
        });
    });

    test('every distinct key has its own count: case, accents, normalization, trailing spaces, NUL, control characters, multi-byte, U+FFFD', async () => {
      const base = `${uniq('distinct')}:`;
      const tails = [
        'a',
        'A',
        'a ',
        'a  ',
        ' a',
        'a\t',
        'a\0',
        'a\0\0',
        '\0a',
        'a\r\n',
        '\u00e1',
        'a\u0301',
        '\uff41',
        'ss',
        '\u00df',
        'i',
        '\u0131',
        '\u{1f600}',
        '\ufffd',
        '\ufffd\ufffd',
        '\ufffe',
        '\u{10ffff}',
        '\u0085',
        '\u200b',
        `a\u2026[sha256:${'0'.repeat(64)}, 9 bytes]`,
      ];
      assert.equal(new Set(tails).size, tails.length);
      for (const t of tails)
        assert.deepEqual(
          await s.consume({ buckets: [{ key: base + t, limits: [[1, 60]] }], n: 1, nowSec: T, commit: true }),
          { ok: true },
          `${JSON.stringify(t)}: merged with another key`,
        );
      for (const t of tails) {
        const key = base + t;
        assert.deepEqual(
          await s.consume({ buckets: [{ key, limits: [[1, 60]] }], n: 1, nowSec: T, commit: true }),
          { ok: false, key, limit: [1, 60], used: 1 },
          `${JSON.stringify(t)}: not found again`,
        );
      }
    });

    test('keys as the parser makes them (multi-byte, invalid UTF-8, an 8 KiB line) are held exactly and listed for reports', async () => {
      const id = uniq('parsed');
      const long = `sender=${id}@`;
      const req = parsed([
        `multi=${id}-\u00e9\u65e5\u672c\u{1f600}@example.org`,
        Buffer.concat([
          Buffer.from(`invalid=${id}-`),
          Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xf0, 0x9f, 0x98]),
          Buffer.from('@example.org'),
        ]),
        sized(long, MAX_LINE_BYTES, '.example'),
      ]);
      const multi = req.get('multi')!;
      const invalid = req.get('invalid')!;
      const line = req.get('sender')!;
      assert.equal(multi, `${id}-\u00e9\u65e5\u672c\u{1f600}@example.org`);
      assert.ok(
        invalid.startsWith(`${id}-\ufffd`) &&
          invalid.includes('\ufffd(\ufffd') &&
          invalid.endsWith('\ufffd@example.org') &&
          !/\p{Cs}/u.test(invalid),
        JSON.stringify(invalid),
      );
      assert.equal(bytes(line), MAX_LINE_BYTES - bytes('sender='));
      for (const v of [multi, invalid, line]) {
        const key = `sender:${v}`;
        const b = [{ key, limits: [[1, 60]] as const }];
        assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T, commit: true }), { ok: true });
        assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T, commit: true }), {
          ok: false,
          key,
          limit: [1, 60],
          used: 1,
        });
        await s.recordHit(key, 60);
      }
      const listed = new Map((await s.hits()).map((h) => [h.key, h.hits]));
      assert.equal(listed.get(`sender:${multi}`), 1, 'a short key is listed as it is');
      assert.equal(listed.get(`sender:${invalid}`), 1, 'U+FFFD as the parser made it');
      const shown = [...listed.keys()].filter((k) => k.startsWith(`sender:${id}@`));
      assert.equal(shown.length, 1);
      const digest = createHash('sha256').update(`sender:${line}`).digest('hex');
      assert.equal(
        shown[0],
        `sender:${line}`.slice(0, 128) + `\u2026[sha256:${digest}, ${bytes(line) + 7} bytes]`,
        'readable head, SHA-256 and length of the whole key',
      );
      assert.equal(listed.get(shown[0]), 1);
    });

    test('end to end: long, 8 KiB, multi-byte and invalid UTF-8 senders are refused after the limit like a short one, never db_error_action', async () => {
      // Config ids take 255 characters: 3-byte ones make the sender-domain key longer than STORE_KEY_MAX_BYTES (hashed).
      const domain = `${uniq('dom')}.${'\u65e5'.repeat(170)}.example`;
      assert.ok(bytes(`sender_domain:${domain}`) > STORE_KEY_MAX_BYTES);
      const cfg = parseConfig(
        [
          'checks: [rate_limit]',
          'rate_limit:',
          '  limits: [[2, 60]]',
          '  limit_by_sender: true',
          '  db_error_action: "451 4.3.0 store error"',
          '  store_timeout_ms: 10000',
          `  limits_by_sender_domain: { "${domain}": [[3, 60]] }`,
          '',
        ].join('\n'),
        't',
      ).rate_limit;
      const check = new RateLimitCheck(cfg, () => open());
      try {
        const id = uniq('e2e');
        const senders: (string | Buffer)[] = [
          `${id}@example.org`,
          sized(`${id}-262-`, 262, '@example.org'),
          sized(`${id}-8k-`, MAX_LINE_BYTES - bytes('sender='), '@example.org'),
          `${id}-\u65e5\u672c\u{1f600}@example.org`,
          Buffer.concat([Buffer.from(`${id}-`), Buffer.from([0xff, 0xc0, 0xaf, 0x00]), Buffer.from('@example.org')]),
        ];
        const rq = (sender: string | Buffer) =>
          parsed([
            'request=smtpd_access_policy',
            'protocol_state=RCPT',
            'client_address=192.0.2.1',
            'recipient=r@example.net',
            Buffer.concat([Buffer.from('sender='), Buffer.isBuffer(sender) ? sender : Buffer.from(sender)]),
          ]);
        for (const sender of senders) {
          const got = [];
          for (let i = 0; i < 3; i++) got.push(await check.check(rq(sender), T * 1000, true));
          assert.deepEqual(
            got.map((r) => r.verdict),
            ['pass', 'pass', 'rate_limited'],
            `${bytes(rq(sender).get('sender')!)}-byte sender: ${got.map((r) => r.reason).join('; ')}`,
          );
          assert.ok(got.every((r) => r.action !== cfg.db_error_action));
          assert.ok(got[2]!.reason.length < 400, 'the log line names the key as stored');
        }
        // The sender-domain limit holds for a domain of over 512 bytes: the fourth sender of it is refused.
        const verdicts = [];
        for (let i = 0; i < 4; i++)
          verdicts.push((await check.check(rq(`${id}-${i}@${domain}`), T * 1000, true)).verdict);
        assert.deepEqual(verdicts, ['pass', 'pass', 'pass', 'rate_limited']);
      } finally {
        await check.close();
      }
    });

    test('ids that are mail addresses compare as Postfix compares them: counters, limits_by_id, exempt_ids and sql_limits_by_id', async () => {
      // Local parts with capitals; the domain is written a third way in the config.
      const big = `Big-${uniq('fold')}`;
      const boss = `Boss-${uniq('fold')}`;
      const carol = `Carol-${uniq('fold')}`;
      const dave = `Dave-${uniq('fold')}`;
      const sql =
        backend === 'redis'
          ? undefined
          : await withLimitsTable(backend, url, [[`${carol.toLowerCase()}@example.org`, '[[2, 60]]']]);
      const yaml = [
        'checks: [rate_limit]',
        'rate_limit:',
        `  backend: ${backend}`,
        '  limits: [[1, 60]]',
        '  limit_by_sender: true',
        '  store_timeout_ms: 10000',
        `  limits_by_id: {"${big}@Example.Org": [[3, 60]]}`,
        `  exempt_ids: ["${boss}@EXAMPLE.org"]`,
        ...(url === null ? [] : [`  url: "${url}"`]),
        ...(sql ? [`  sql_limits_by_id: "${sql.query}"`] : []),
        '',
      ].join('\n');
      const cfg = parseConfig(yaml, 't').rate_limit;
      const check = new RateLimitCheck(cfg, sql?.open ?? (() => open()));
      const rq = (o: Record<string, string>) =>
        new Map(
          Object.entries({
            request: 'smtpd_access_policy',
            protocol_state: 'RCPT',
            recipient: 'r@example.net',
            client_address: '192.0.2.1',
            ...o,
          }),
        );
      const verdicts = async (reqs: Map<string, string>[]) => {
        const out = [];
        for (const r of reqs) out.push((await check.check(r, T * 1000, true)).verdict);
        return out;
      };
      try {
        // limits_by_id [3, 60] applies whatever the case, and all spellings share one count.
        assert.deepEqual(
          await verdicts(
            [
              `${big}@example.org`,
              `${big.toUpperCase()}@EXAMPLE.ORG`,
              `${big}@Example.Org`,
              `${big.toLowerCase()}@example.ORG`,
            ].map((sender) => rq({ sender })),
          ),
          ['pass', 'pass', 'pass', 'rate_limited'],
        );
        assert.deepEqual(
          await verdicts(
            Array.from({ length: 3 }, (_, i) => rq({ sender: `${i ? boss.toLowerCase() : boss}@example.ORG` })),
          ),
          ['skip', 'skip', 'skip'],
          'exempt in any case',
        );
        // A SASL name that is an address: one count (limits [1, 60]) for both spellings.
        assert.deepEqual(
          await verdicts([
            rq({ sasl_username: `${dave}@Example.org` }),
            rq({ sasl_username: `${dave.toLowerCase()}@example.org` }),
          ]),
          ['pass', 'rate_limited'],
        );
        if (sql) {
          // The admin's table holds the address in lower case: it is asked for it, whatever the case the sender was written in.
          assert.deepEqual(
            await verdicts(
              [`${carol}@Example.ORG`, `${carol.toUpperCase()}@example.org`, `${carol}@example.org`].map((sender) =>
                rq({ sender }),
              ),
            ),
            ['pass', 'pass', 'rate_limited'],
            'sql_limits_by_id [2, 60], not the default [1, 60]',
          );
        }
      } finally {
        await check.close();
        await sql?.drop();
      }
      // fold_local_part_case: false: local parts count apart, the domain still folds.
      const erin = `Erin-${uniq('exact')}`;
      const exact = new RateLimitCheck(
        parseConfig(
          yaml.replace('  limit_by_sender: true', '  limit_by_sender: true\n  fold_local_part_case: false'),
          't',
        ).rate_limit,
        () => open(),
      );
      try {
        const got = [];
        for (const sender of [`${erin}@example.org`, `${erin.toLowerCase()}@example.org`, `${erin}@EXAMPLE.ORG`])
          got.push((await exact.check(rq({ sender }), T * 1000, true)).verdict);
        assert.deepEqual(got, ['pass', 'pass', 'rate_limited']);
      } finally {
        await exact.close();
      }
    });

    test('a key that is not well-formed Unicode (a lone surrogate) is one clear error, not merged with U+FFFD', async () => {
      const key = `${uniq('lone')}\ud800`;
      await assert.rejects(s.consume({ buckets: [{ key, limits: [[1, 60]] }], n: 1, nowSec: T, commit: true }), {
        name: 'StoreError',
        message: /not well-formed Unicode/,
      });
      await assert.rejects(s.recordHit(key, 60), { name: 'StoreError', message: /not well-formed Unicode/ });
      assert.equal(storedKey(`${key.slice(0, -1)}\ufffd`), `${key.slice(0, -1)}\ufffd`);
    });

    test("events lists one key's counts per second from a time on, oldest first, and no other key's", async () => {
      const key = uniq('show');
      const twin = `${key}x`;
      const b = [{ key, limits: [[100, 1000]] as const }];
      for (const [t, n] of [
        [T - 100, 2],
        [T - 10, 1],
        [T - 10, 1],
        [T, 3],
      ] as const)
        assert.equal((await s.consume({ buckets: b, n, nowSec: t, commit: true })).ok, true);
      assert.equal(
        (await s.consume({ buckets: b, n: 50, nowSec: T, commit: false })).ok,
        true,
        'a look records nothing',
      );
      await s.consume({ buckets: [{ key: twin, limits: [[100, 1000]] }], n: 4, nowSec: T - 10, commit: true });
      assert.deepEqual(await s.events(key, T - 50), [
        { at: T - 10, n: 2 },
        { at: T, n: 3 },
      ]);
      assert.deepEqual(
        await s.events(key, T - 100),
        [
          { at: T - 100, n: 2 },
          { at: T - 10, n: 2 },
          { at: T, n: 3 },
        ],
        'an event exactly at since is listed',
      );
      assert.deepEqual(await s.events(twin, 0), [{ at: T - 10, n: 4 }]);
      assert.deepEqual(await s.events(uniq('never'), 0), []);
    });

    test('reset deletes every event of one key, returns how many, and leaves every other key (long ones too) alone', async () => {
      const key = uniq('reset');
      const other = `${key.toUpperCase()}`;
      const long = sized(`${uniq('reset-long')}-`, 8192, 'a');
      const longTwin = `${long.slice(0, -1)}b`;
      const lim = [[3, 3600]] as const;
      for (const k of [key, other, long, longTwin]) {
        assert.equal(
          (await s.consume({ buckets: [{ key: k, limits: lim }], n: 1, nowSec: T - 60, commit: true })).ok,
          true,
        );
        assert.equal((await s.consume({ buckets: [{ key: k, limits: lim }], n: 2, nowSec: T, commit: true })).ok, true);
        assert.equal(
          (await s.consume({ buckets: [{ key: k, limits: lim }], n: 1, nowSec: T, commit: true })).ok,
          false,
          `${k.slice(0, 40)} is full`,
        );
      }
      await s.recordHit(key, 3600);
      assert.equal(await s.reset(key), 3);
      assert.equal(await s.reset(long), 3);
      assert.deepEqual(await s.events(key, 0), []);
      assert.deepEqual(
        await s.consume({ buckets: [{ key, limits: lim }], n: 3, nowSec: T, commit: true }),
        { ok: true },
        'the reset key starts from nothing',
      );
      assert.equal(
        (await s.consume({ buckets: [{ key: long, limits: lim }], n: 3, nowSec: T, commit: false })).ok,
        true,
        'the long key too',
      );
      for (const k of [other, longTwin]) {
        assert.deepEqual(
          await s.consume({ buckets: [{ key: k, limits: lim }], n: 1, nowSec: T, commit: false }),
          { ok: false, key: k, limit: [3, 3600], used: 3 },
          `${k.slice(0, 40)} kept its count`,
        );
      }
      assert.equal((await s.hits()).find((h) => h.key === key)?.hits, 1, 'refusal hits stay for the report');
      assert.equal(await s.reset(uniq('never')), 0);
      await assert.rejects(s.reset(`${uniq('lone')}\ud800`), {
        name: 'StoreError',
        message: /not well-formed Unicode/,
      });
      await assert.rejects(s.events(`${uniq('lone')}\ud800`, 0), {
        name: 'StoreError',
        message: /not well-formed Unicode/,
      });
    });

    /** A RateLimitCheck on this backend with these rate_limit lines; `opener` to share one store between checks. */
    const checkOn = (lines: string[], shared = storeConfig(backend, '', url)) => {
      const opener = () => openStore(shared);
      const cfg = parseConfig(
        ['checks: [rate_limit]', 'rate_limit:', '  store_timeout_ms: 10000', ...lines.map((l) => `  ${l}`), ''].join(
          '\n',
        ),
        't',
      ).rate_limit;
      /** A key's events, read from the check's own store (for sqlite, its own file). */
      const events = async (key: string) => {
        const store = await opener();
        try {
          return await store.events(key, 0);
        } finally {
          await store.close();
        }
      };
      const reset = async (key: string) => {
        const store = await opener();
        try {
          return await store.reset(key);
        } finally {
          await store.close();
        }
      };
      return { cfg, check: new RateLimitCheck(cfg, opener), events, reset };
    };
    const rqAt = (state: string, o: Record<string, string>) =>
      parsed(
        Object.entries({ client_address: '192.0.2.1', recipient: 'r@example.net', ...o })
          .map(([k, v]) => `${k}=${v}`)
          .concat(['request=smtpd_access_policy', `protocol_state=${state}`]),
      );

    test('limits_by_kind: SASL users, senders and client IPs each get their own default', async () => {
      const { check, reset } = checkOn([
        'limits: [[5, 60]]',
        'limit_by_sender: true',
        'limit_by_ip: true',
        'limited_networks: ["192.0.2.0/24"]',
        'limits_by_kind: {sasl: [[1, 60]], sender: [[2, 60]]}',
      ]);
      try {
        const sasl = uniq('kind-sasl');
        const sender = `${uniq('kind-sender')}@example.org`;
        // An IP of its own, so that no other run's counts under it matter.
        const ip = `192.0.2.${2 + Math.floor(Math.random() * 250)}`;
        const run = async (o: Record<string, string>, times: number) => {
          const got = [];
          for (let i = 0; i < times; i++) got.push((await check.check(rqAt('RCPT', o), T * 1000, true)).verdict);
          return got;
        };
        assert.deepEqual(await run({ sasl_username: sasl }, 2), ['pass', 'rate_limited']);
        assert.deepEqual(await run({ sender }, 3), ['pass', 'pass', 'rate_limited']);
        // No ip entry: limits. (Reset first: the address may have been drawn by an earlier run.)
        await reset(`ip:${ip}`);
        const ipReq = { client_address: ip };
        const got = [];
        for (let i = 0; i < 6; i++) got.push((await check.check(rqAt('RCPT', ipReq), T * 1000, true)).verdict);
        assert.deepEqual(got, ['pass', 'pass', 'pass', 'pass', 'pass', 'rate_limited']);
      } finally {
        await check.close();
      }
    });

    test("server_limits: one count for every id together, all or nothing with the ids' own windows", async () => {
      const { check, events, reset } = checkOn([
        'limits: [[2, 60]]',
        'limit_by_sender: true',
        'server_limits: [[3, 60]]',
      ]);
      // all: is one key for every run on a shared server: start it from nothing.
      await reset('all:');
      try {
        const [a, b, c] = ['a', 'b', 'c'].map((x) => `${uniq(`srv-${x}`)}@example.org`);
        const v = async (sender: string) => (await check.check(rqAt('RCPT', { sender }), T * 1000, true)).verdict;
        assert.deepEqual([await v(a!), await v(a!), await v(a!)], ['pass', 'pass', 'rate_limited']);
        // a's refusal was not counted in all:, so b still fits once.
        assert.equal(await v(b!), 'pass');
        const r = await check.check(rqAt('RCPT', { sender: c! }), T * 1000, true);
        assert.equal(r.verdict, 'rate_limited');
        assert.match(r.reason, /^all:: 3 \+ 1 over 3 in 60 s$/);
        assert.equal((await events(`sender:${c!}`)).length, 0, 'refused by all:, not counted under its id either');
        assert.deepEqual(await events('all:'), [{ at: T, n: 3 }]);
      } finally {
        await check.close();
        await reset('all:');
      }
    });

    test('volume_limits: real sizes counted at END-OF-MESSAGE, declared ones only looked at where events are counted', async () => {
      const { check, events } = checkOn([
        'limits: [[100, 60]]',
        'limit_by_sender: true',
        'volume_limits: [[1000, 60]]',
        'count_mode: data_messages',
      ]);
      try {
        const sender = `${uniq('vol')}@example.org`;
        const at = async (state: string, size: string) => check.check(rqAt(state, { sender, size }), T * 1000, true);
        assert.equal((await at('DATA', '600')).verdict, 'pass', 'declared 600 fits');
        assert.equal((await events(`bytes:sender:${sender}`)).length, 0, 'a declared size is never counted');
        assert.equal((await at('END-OF-MESSAGE', '600')).verdict, 'pass');
        const early = await at('DATA', '500');
        assert.equal(early.verdict, 'rate_limited', 'declared 500 cannot fit beside 600');
        assert.match(early.reason, /^bytes:sender:\S+: 600 \+ 500 declared bytes over 1000 in 60 s$/);
        assert.equal((await at('DATA', '0')).verdict, 'pass', 'no declared size: one byte is looked at');
        assert.equal((await at('END-OF-MESSAGE', '400')).verdict, 'pass', 'exactly to the limit');
        assert.equal((await at('DATA', '')).verdict, 'rate_limited', 'a full window refuses even an unknown size');
        const late = await at('END-OF-MESSAGE', '1');
        assert.equal(late.verdict, 'rate_limited');
        assert.deepEqual(await events(`bytes:sender:${sender}`), [{ at: T, n: 1000 }]);
        // Events: the DATA requests that passed (two), each one message.
        assert.deepEqual(await events(`sender:${sender}`), [{ at: T, n: 2 }]);
      } finally {
        await check.close();
      }
    });

    test("hold_action answers refusals of the id's own windows (events and bytes); a domain refusal keeps fail_action", async () => {
      const domain = `${uniq('hold')}.example`;
      const { cfg, check } = checkOn([
        'limits: [[1, 60]]',
        'limit_by_sender: true',
        'volume_limits: [[10, 60]]',
        'hold_action: "HOLD rate limit: held for review"',
        `limits_by_sender_domain: {"${domain}": [[2, 60]]}`,
      ]);
      try {
        const [a, b, c] = ['a', 'b', 'c'].map((x) => `${uniq(x)}@${domain}`);
        const r = (sender: string, state = 'RCPT', size = '0') =>
          check.check(rqAt(state, { sender, size }), T * 1000, true);
        assert.equal((await r(a!)).verdict, 'pass');
        const own = await r(a!);
        assert.deepEqual([own.verdict, own.action], ['rate_limited', 'HOLD rate limit: held for review']);
        assert.equal((await r(b!)).verdict, 'pass');
        const dom = await r(c!);
        assert.deepEqual([dom.verdict, dom.action], ['rate_limited', cfg.fail_action]);
        const bytes = await r(b!, 'END-OF-MESSAGE', '11');
        assert.deepEqual([bytes.verdict, bytes.action], ['rate_limited', 'HOLD rate limit: held for review']);
      } finally {
        await check.close();
      }
    });

    test('alert_on_refusal: one alert per key and window length, across checks sharing the store, again once the window has passed', async () => {
      const shared = storeConfig(backend, '', url);
      const lines = ['limits: [[1, 60], [3, 3600]]', 'limit_by_sender: true', 'alert_on_refusal: true'];
      const one = checkOn(lines, shared);
      const two = checkOn(lines, shared);
      try {
        const sender = `${uniq('alert')}@example.org`;
        const at = (c: RateLimitCheck, sec: number, commit = true) =>
          c.check(rqAt('RCPT', { sender }), sec * 1000, commit);
        assert.equal((await at(one.check, T)).alert, undefined, 'a pass alerts nothing');
        const first = await at(one.check, T);
        assert.equal(first.verdict, 'rate_limited');
        assert.match(first.alert ?? '', /^first refusal of sender:\S+ in 60 s: /);
        assert.equal((await at(two.check, T + 1)).alert, undefined, 'the other host knows from the store');
        assert.equal((await at(one.check, T + 30)).alert, undefined);
        assert.equal((await at(one.check, T + 30, false)).alert, undefined, 'a look never alerts');
        // T + 61: the 60 s window has room again; the request passes; the next refusal is a new one.
        assert.equal((await at(two.check, T + 61)).verdict, 'pass');
        assert.match((await at(two.check, T + 62)).alert ?? '', /in 60 s/);
        assert.equal((await at(one.check, T + 200)).verdict, 'pass');
        assert.match((await at(one.check, T + 400)).alert ?? '', /in 3600 s/, 'another window: its own alert');
        assert.equal((await at(two.check, T + 500)).alert, undefined);
      } finally {
        await one.check.close();
        await two.check.close();
      }
    });

    test('clean removes events older than asked, keeps the rest', async () => {
      const key = uniq('clean');
      const b = [{ key, limits: [[2, 2_000_000_000]] as const }];
      await s.consume({ buckets: b, n: 1, nowSec: 1000, commit: true });
      await s.consume({ buckets: b, n: 1, nowSec: T, commit: true });
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: false })).ok, false);
      const removed = await s.clean(T - 10);
      if (backend !== 'redis') assert.ok(removed >= 1, `removed ${removed}`);
      if (backend !== 'redis')
        assert.equal(
          (await s.consume({ buckets: b, n: 1, nowSec: T, commit: false })).ok,
          true,
          'the old event is gone',
        );
    });
  });
}
