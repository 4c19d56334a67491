// make deb: the package holds what make install lays out and nothing of the
// build (no tests, benchmarks or dev dependencies), states its real Depends,
// marks the config a conffile, installs the man pages, loads its native
// addons, and lintian finds no error and only the warnings README.md lists.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/daemon.js';

let out: string;
let deb: string;
let lintian: string;
const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  version: string;
  engines: { node: string };
  devDependencies: Record<string, string>;
};
const run = (cmd: string, args: string[]): string => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 300_000 });
  if (r.error) throw new Error(`${cmd} is missing (scripts/setup.sh --test installs it): ${r.error.message}`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
};

before(() => {
  out = mkdtempSync(join(tmpdir(), 'qp-deb-'));
  const arch = run('dpkg', ['--print-architecture']).trim();
  run('make', ['-s', '-C', REPO, 'deb', `DEB_OUT=${out}`]);
  deb = join(out, `quotapolicy_${pkg.version}_${arch}.deb`);
  // lintian exits non-zero on an error tag; the output is what the tests judge.
  const r = spawnSync('lintian', [deb], { encoding: 'utf8', timeout: 300_000 });
  if (r.error) throw new Error(`lintian is missing (scripts/setup.sh --test installs it): ${r.error.message}`);
  lintian = r.stdout;
});
after(() => rmSync(out, { recursive: true, force: true }));

const field = (name: string): string => run('dpkg-deb', ['-f', deb, name]).trim();
const files = (): string[] => run('dpkg-deb', ['-c', deb]).split('\n').filter(Boolean);

test("debian/changelog's version is package.json's, and names the built file", () => {
  assert.equal(run('dpkg-parsechangelog', ['-l', join(REPO, 'debian/changelog'), '-SVersion']).trim(), pkg.version);
  assert.equal(field('Version'), pkg.version);
  assert.equal(field('Architecture'), run('dpkg', ['--print-architecture']).trim());
});

test('Depends: the Node.js of package.json engines, quota, postfix, adduser, and the C libraries the addons link', () => {
  const minNode = /^>=(\d+\.\d+)$/.exec(pkg.engines.node)?.[1];
  assert.ok(minNode, `engines.node ${pkg.engines.node}`);
  const deps = field('Depends').split(/,\s*/);
  for (const d of [`nodejs (>= ${minNode})`, 'quota', 'postfix', 'adduser'])
    assert.ok(deps.includes(d), `${d} in ${deps.join(', ')}`);
  assert.ok(
    deps.some((d) => d.startsWith('libc6 (>=')),
    deps.join(', '),
  );
  for (const d of deps)
    assert.match(d, /^(nodejs|quota|postfix|adduser|libc6|libgcc-s1|libstdc\+\+6)\b/, `unexpected ${d}`);
});

test('the config is a conffile; the maintainer scripts are shipped', () => {
  const x = mkdtempSync(join(out, 'ctl-'));
  run('dpkg-deb', ['-e', deb, x]);
  assert.equal(readFileSync(join(x, 'conffiles'), 'utf8'), '/etc/quotapolicy/quotapolicy.yaml\n');
  for (const s of ['postinst', 'prerm', 'postrm'])
    assert.equal(readFileSync(join(x, s), 'utf8'), readFileSync(join(REPO, 'debian', s), 'utf8'));
});

test('contents: make install layout, man pages, inactive sudoers; no tests, benchmarks or dev dependencies', () => {
  const list = files();
  const paths = list.map((l) => l.split(/\s+/)[5]!);
  for (const p of [
    './usr/lib/quotapolicy/dist/src/cli/main.js',
    './usr/lib/quotapolicy/dist/src/helper/main.js',
    './usr/lib/quotapolicy/quotapolicy-helper',
    './lib/systemd/system/quotapolicy.socket',
    './lib/systemd/system/quotapolicy.service',
    './lib/systemd/system/quotapolicy-clean.service',
    './lib/systemd/system/quotapolicy-clean.timer',
    './etc/quotapolicy/quotapolicy.yaml',
    './var/lib/quotapolicy/',
    './usr/share/man/man8/quotapolicy.8.gz',
    './usr/share/man/man5/quotapolicy.yaml.5.gz',
    './usr/share/quotapolicy/sudoers.d/quotapolicy',
    './usr/share/doc/quotapolicy/copyright',
  ])
    assert.ok(paths.includes(p), `${p} missing`);
  assert.ok(list.some((l) => / \.\/usr\/sbin\/quotapolicy -> \.\.\/lib\/quotapolicy\/bin\/quotapolicy\.js$/.test(l)));
  assert.ok(!paths.some((p) => p.startsWith('./etc/sudoers.d')), 'the sudoers drop-in is not active');
  assert.ok(!paths.some((p) => p.startsWith('./etc/systemd')), "units are not in the admin's directory");
  assert.ok(!paths.some((p) => /\/dist\/(test|bench)\//.test(p)), 'no tests or benchmarks');
  // A dev dependency a runtime one also needs (mysql2 needs @types/node) rightly stays.
  const runtime = run('npm', ['ls', '--omit=dev', '--all', '--parseable', '--prefix', REPO]);
  const neededAtRunTime = (name: string): boolean =>
    runtime.split('\n').some((l) => l.endsWith(`/node_modules/${name}`));
  for (const dev of Object.keys(pkg.devDependencies).filter((d) => !neededAtRunTime(d)))
    assert.ok(!paths.some((p) => p.includes(`/node_modules/${dev}/`)), `dev dependency ${dev} packaged`);
  assert.ok(!paths.some((p) => p.includes('/node_modules/typescript/')), 'typescript packaged');
  assert.ok(!paths.some((p) => /\/build\/Release\/(obj|\.deps)|test_extension|\.o$/.test(p)), 'no addon build files');
});

test("the packaged native addons load in this machine's node", () => {
  const x = mkdtempSync(join(out, 'root-'));
  run('dpkg-deb', ['-x', deb, x]);
  const lib = join(x, 'usr/lib/quotapolicy');
  const got = run('node', [
    '-e',
    `const r = require('module').createRequire(${JSON.stringify(lib + '/')});
     const D = r('better-sqlite3'); console.log(new D(':memory:').prepare('select 41 + 1 as n').get().n);
     console.log(r('userid').uid('root'));`,
  ]);
  assert.equal(got, '42\n0\n');
});

test('lintian: no error, and exactly the warnings README.md lists with their reasons', () => {
  const lines = lintian.split('\n').filter((l) => /^[EW]: /.test(l));
  assert.deepEqual(
    lines.filter((l) => l.startsWith('E: ')),
    [],
  );
  const warnings = lines.map((l) => l.replace(/^W: quotapolicy: /, '')).sort();
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const m = /<!-- lintian-warnings:start -->\n([\s\S]*?)<!-- lintian-warnings:end -->/.exec(readme);
  assert.ok(m, 'README.md has the lintian-warnings markers');
  const listed = [...m[1]!.matchAll(/^\| `([^`]+)` \| \S.* \|$/gm)].map((r) => r[1]!).sort();
  assert.deepEqual(warnings, listed);
});
