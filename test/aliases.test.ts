// Alias expansion (src/frontend/quota/aliases.ts) with a map reader made of
// plain tables: key order, extensions, catch-alls, nesting, loops and limits.
// The real postmap/postalias: postfix-maps.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  expandRecipient,
  splitTargets,
  MAX_ALIAS_DEPTH,
  MAX_ALIAS_FANOUT,
  type MapKind,
  type MapReader,
} from '../src/frontend/quota/aliases.js';

/** Tables per kind (each a list of maps, searched in order); records every call. */
function reader(tables: Partial<Record<MapKind, Record<string, string>[]>>) {
  const calls: [MapKind, string[]][] = [];
  const r: MapReader = {
    lookup: (kind, keys) => {
      calls.push([kind, [...keys]]);
      const maps = tables[kind] ?? [];
      return Promise.resolve(
        maps.map((m) => new Map(keys.filter((k) => Object.hasOwn(m, k)).map((k) => [k, m[k]!] as const))),
      );
    },
  };
  return { r, calls };
}
const LOCAL = { delimiters: '+', isLocal: (d: string) => d === 'example.org' };

test('not an alias anywhere: { alias: false }, one virtual and one alias lookup', async () => {
  const { r, calls } = reader({ virtual: [{}], alias: [{}] });
  assert.deepEqual(await expandRecipient('bob@example.org', LOCAL, r), { alias: false });
  assert.deepEqual(calls, [
    ['virtual', ['bob@example.org', 'bob', '@example.org']],
    ['alias', ['bob']],
  ]);
});

test('aliases(5) in a local domain: info -> bob, alice; nested team -> info', async () => {
  const { r } = reader({ alias: [{ info: 'bob, alice', team: 'info carol' }] });
  assert.deepEqual(await expandRecipient('team@example.org', LOCAL, r), {
    alias: true,
    users: ['carol', 'bob', 'alice'],
    remote: 0,
    unchecked: [],
  });
});

test('aliases(5) is not consulted for another domain; virtual is, for any domain', async () => {
  const { r, calls } = reader({ alias: [{ info: 'bob' }], virtual: [{ 'info@other.net': 'bob@example.org' }] });
  assert.deepEqual(await expandRecipient('info@elsewhere.net', LOCAL, r), { alias: false });
  assert.deepEqual(calls, [['virtual', ['info@elsewhere.net', '@elsewhere.net']]]);
  assert.deepEqual(await expandRecipient('info@other.net', LOCAL, r), {
    alias: true,
    users: ['bob'],
    remote: 0,
    unchecked: [],
  });
});

test('virtual(5) order: user+ext@domain, user@domain, user+ext, user, @domain; the first key found wins', async () => {
  const { r, calls } = reader({
    virtual: [{ '@example.org': 'catchall', bob: 'viauser', 'bob+x': 'viaext' }],
    alias: [{}],
  });
  const x = await expandRecipient('bob+x@example.org', LOCAL, r);
  assert.deepEqual(x, { alias: true, users: ['viaext'], remote: 0, unchecked: [] });
  assert.deepEqual(calls[0], ['virtual', ['bob+x@example.org', 'bob@example.org', 'bob+x', 'bob', '@example.org']]);
  const only = reader({ virtual: [{ '@example.org': 'catchall' }] });
  assert.deepEqual(await expandRecipient('anyone@example.org', LOCAL, only.r), {
    alias: true,
    users: ['catchall'],
    remote: 0,
    unchecked: [],
  });
});

test('a key is searched in every map before the next key: map order is inner, key order outer', async () => {
  const { r } = reader({ alias: [{ sales: 'first' }, { 'sales+x': 'second' }] });
  assert.deepEqual(await expandRecipient('sales+x@example.org', LOCAL, r), {
    alias: true,
    users: ['second'],
    remote: 0,
    unchecked: [],
  });
});

test('extensions: aliases(5) tries sales+x, then sales; the user reached loses its extension', async () => {
  const { r, calls } = reader({ alias: [{ sales: 'bob+sales, alice' }] });
  assert.deepEqual(await expandRecipient('Sales+X@Example.org', LOCAL, r), {
    alias: true,
    users: ['bob', 'alice'],
    remote: 0,
    unchecked: [],
  });
  assert.deepEqual(calls[1], ['alias', ['sales+x', 'sales']]);
  // With no delimiter there is no extension: "sales+x" is one name.
  const none = reader({ alias: [{ sales: 'bob' }] });
  assert.deepEqual(await expandRecipient('sales+x@example.org', { ...LOCAL, delimiters: '' }, none.r), {
    alias: false,
  });
});

test('remote targets are counted, not checked; files, commands and :include: are listed as not checked', async () => {
  const { r } = reader({
    alias: [{ info: 'bob, carol@remote.net, "|/usr/bin/procmail -a x", /var/log/info.mbox, :include:/etc/list' }],
  });
  assert.deepEqual(await expandRecipient('info@example.org', LOCAL, r), {
    alias: true,
    users: ['bob'],
    remote: 1,
    unchecked: ['"|/usr/bin/procmail -a x"', '/var/log/info.mbox', ':include:/etc/list'],
  });
});

test('an address in a local domain from aliases(5) is resubmitted: virtual first, then aliases again', async () => {
  const { r } = reader({ alias: [{ info: 'help@example.org', help: 'bob' }], virtual: [{}] });
  assert.deepEqual(await expandRecipient('info@example.org', LOCAL, r), {
    alias: true,
    users: ['bob'],
    remote: 0,
    unchecked: [],
  });
  // A bare name from aliases(5) is local(8)'s: alias_maps only, never virtual.
  const v = reader({ alias: [{ info: 'help' }], virtual: [{ help: 'nobody-should-see-this' }] });
  assert.deepEqual(await expandRecipient('info@example.org', LOCAL, v.r), {
    alias: true,
    users: ['help'],
    remote: 0,
    unchecked: [],
  });
});

test('an alias naming itself delivers to the user; a loop ends at the address met again', async () => {
  const self = reader({ alias: [{ bob: 'bob, archive' }] });
  assert.deepEqual(await expandRecipient('bob@example.org', LOCAL, self.r), {
    alias: true,
    users: ['bob', 'archive'],
    remote: 0,
    unchecked: [],
  });
  const loop = reader({ alias: [{ a: 'b', b: 'c', c: 'a' }] });
  const x = await expandRecipient('a@example.org', LOCAL, loop.r);
  assert.deepEqual(x, { alias: true, users: ['a'], remote: 0, unchecked: [] });
  assert.deepEqual(
    loop.calls.filter(([k]) => k === 'alias').map(([, keys]) => keys.join()),
    ['a', 'b', 'c'],
    'a, b and c each looked up once',
  );
});

test(`nesting deeper than ${MAX_ALIAS_DEPTH} levels is an error; exactly that deep is not`, async () => {
  const chain = (n: number): Record<string, string> =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => [`l${i}`, `l${i + 1}`]));
  const ok = await expandRecipient('l0@example.org', LOCAL, reader({ alias: [chain(MAX_ALIAS_DEPTH - 1)] }).r);
  assert.deepEqual(ok, { alias: true, users: [`l${MAX_ALIAS_DEPTH - 1}`], remote: 0, unchecked: [] });
  assert.deepEqual(await expandRecipient('l0@example.org', LOCAL, reader({ alias: [chain(MAX_ALIAS_DEPTH)] }).r), {
    error: `aliases nested deeper than ${MAX_ALIAS_DEPTH} levels`,
  });
});

test(`more than ${MAX_ALIAS_FANOUT} addresses is an error, over all levels; ${MAX_ALIAS_FANOUT} is not`, async () => {
  const names = (n: number, p: string) => Array.from({ length: n }, (_, i) => `${p}${i}`).join(', ');
  const fits = reader({ alias: [{ all: names(MAX_ALIAS_FANOUT, 'u') }] });
  const x = await expandRecipient('all@example.org', LOCAL, fits.r);
  assert.ok('users' in x && x.users.length === MAX_ALIAS_FANOUT);
  const nested = reader({ alias: [{ all: 'a, b', a: names(32, 'a'), b: names(31, 'b') }] });
  assert.deepEqual(await expandRecipient('all@example.org', LOCAL, nested.r), {
    error: `alias expands to more than ${MAX_ALIAS_FANOUT} addresses`,
  });
});

test('one lookup per kind per level, all the level’s keys together', async () => {
  const { r, calls } = reader({ alias: [{ all: 'a, b, c', a: 'x', b: 'y' }] });
  await expandRecipient('all@example.org', { delimiters: '', isLocal: () => true }, r);
  assert.deepEqual(
    calls.map(([k, keys]) => `${k}:${keys.join(' ')}`),
    ['virtual:all@example.org all @example.org', 'alias:all', 'alias:a b c', 'alias:x y'],
  );
});

test('a map that cannot be read is an error, with its reason', async () => {
  const r: MapReader = { lookup: () => Promise.reject(new Error('postmap -q - ldap:/x: no answer in 5000 ms')) };
  assert.deepEqual(await expandRecipient('info@example.org', LOCAL, r), {
    error: 'postmap -q - ldap:/x: no answer in 5000 ms',
  });
});

test('keys with control characters or over 256 characters are never looked up', async () => {
  const { r, calls } = reader({ alias: [{}] });
  await expandRecipient(`${'a'.repeat(300)}@example.org`, LOCAL, r);
  assert.deepEqual(calls, [['virtual', ['@example.org']]]);
});

test('map values: commas and spaces separate, double quotes hold a command together', () => {
  assert.deepEqual(splitTargets(' bob,alice  carol,\t"|/bin/x a, b" /f '), [
    'bob',
    'alice',
    'carol',
    '"|/bin/x a, b"',
    '/f',
  ]);
});
