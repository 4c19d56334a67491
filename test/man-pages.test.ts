// The man pages are generated from --help (USAGE) and the config schema: the
// committed files must match the generator, carry every command, option and
// key, and render without a single groff warning.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { quotapolicyPage, configPage, usageSections, roff, EXIT_STATUSES, SIGNALS } from '../src/cli/manual.js';
import { USAGE } from '../src/cli/main.js';
import { FIELDS, ACTION_FIELDS } from '../src/shared/config/schema.js';
import { RATE_FIELDS } from '../src/shared/config/rate-schema.js';
import { REPO } from './support/daemon.js';

const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
const PAGES = [
  ['man/quotapolicy.8', quotapolicyPage(version)],
  ['man/quotapolicy.yaml.5', configPage(version)],
] as const;

/** What man(1) shows, at a fixed width; stderr must be empty for every renderer. */
function render(tool: 'groff' | 'man', file: string): { out: string; err: string; status: number | null } {
  const r =
    tool === 'groff'
      ? spawnSync('groff', ['-ww', '-man', '-Tutf8', file], { encoding: 'utf8' })
      : spawnSync('man', ['--warnings', '-l', file], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80' } });
  if (r.error) throw new Error(`${tool} is missing (scripts/setup.sh --test installs groff-base and man-db)`);
  return { out: r.stdout, err: r.stderr, status: r.status };
}

test('man/*.[58] match the generator (npm run docs regenerates them)', () => {
  for (const [file, text] of PAGES) assert.equal(readFileSync(join(REPO, file), 'utf8'), text, file);
});

test('every --help line lands in quotapolicy(8): each command and option a term, with all its text', () => {
  const { sections } = usageSections();
  const page = quotapolicyPage(version);
  for (const s of sections) {
    assert.ok(page.includes(`.SH ${roff(s.title.toUpperCase())}\n`), s.title);
    for (const e of s.entries)
      assert.ok(page.includes(`.TP\n\\fB${roff(e.term)}\\fR\n${e.text.map(roff).join('\n')}`), e.term);
    for (const p of s.prose) assert.ok(page.includes(roff(p)), p);
  }
  const terms = sections.flatMap((s) => s.entries.map((e) => e.term));
  for (const t of ['serve', 'check-config', '--quota-path PATH', '--count', '--sudopath PATH', '-V, --version'])
    assert.ok(terms.includes(t), `${t} not read from USAGE: ${terms.join(' | ')}`);
  const lines = USAGE.split('\n').filter((l) => /^ +\S/.test(l)).length;
  const placed = sections.reduce(
    (n, s) => n + s.prose.length + s.entries.reduce((m, e) => m + Math.max(1, e.text.length), 0),
    0,
  );
  assert.ok(placed >= lines - 2, `USAGE has ${lines} indented lines, the page places ${placed}`);
});

test('a --help line the generator cannot place is an error, not a silent drop', () => {
  assert.throws(() => usageSections('usage: x\n\nOptions:\n bad indent\n'), /cannot place/);
  assert.throws(() => usageSections('no usage line\n'), /must start with/);
});

test('quotapolicy(8) has the signals, exit statuses and files; quotapolicy.yaml(5) every key with its default', () => {
  const eight = quotapolicyPage(version);
  for (const s of ['.SH SIGNALS', '.SH EXIT STATUS', '.SH FILES', '.SH COMMANDS', '.SH OPTIONS'])
    assert.ok(eight.includes(s), s);
  for (const [code] of EXIT_STATUSES) assert.ok(eight.includes(`.TP\n\\fB${code}\\fR\n`), `exit status ${code}`);
  for (const [sig] of SIGNALS) assert.ok(eight.includes(roff(sig)), sig);
  const five = configPage(version);
  for (const [prefix, fields] of [
    ['', FIELDS],
    ['actions.', ACTION_FIELDS],
    ['rate_limit.', RATE_FIELDS],
  ] as const) {
    for (const [k, f] of Object.entries(fields))
      assert.ok(
        five.includes(
          `\\fB${roff(prefix + k)}\\fR\nDefault: \\fB${roff(JSON.stringify(f.default))}\\fR.\n.br\n${roff(f.doc)}\n`,
        ),
        `${prefix}${k}`,
      );
  }
});

test('roff escaping: backslashes, leading dots, option dashes and non-ASCII are made safe', () => {
  assert.equal(roff('.foo'), '\\&.foo');
  assert.equal(roff('a\\b'), 'a\\eb');
  assert.equal(roff('use --count or -h'), 'use \\-\\-count or \\-h');
  assert.equal(roff('non-empty'), 'non-empty');
  assert.equal(roff('≥ 20'), '\\[u2265] 20');
  assert.equal(roff('run `quota -v`'), 'run \\fBquota \\-v\\fR');
});

for (const [file] of PAGES) {
  test(`${file}: groff -ww and man --warnings render it with no warning at all`, () => {
    for (const tool of ['groff', 'man'] as const) {
      const r = render(tool, join(REPO, file));
      assert.equal(r.status, 0, `${tool}: ${r.err}`);
      assert.equal(r.err, '', `${tool} warned`);
      assert.ok(r.out.replace(/.\x08/g, '').includes('SEE ALSO'), `${tool} rendered nothing:\n${r.out}`);
    }
  });
}
