// How much code root runs, measured, not assumed. Two figures:
// - what input from the front can reach after start-up: the modules that
//   handle the channel and the front process (src/helper/channel.ts,
//   supervise.ts) and everything they import, in code lines (Prettier-
//   formatted, blank and comment lines not counted): at most 400;
// - everything the root process of `serve` loads at all, traced with strace
//   while it starts, answers a quota lookup through the helper and stops:
//   first-party files (all under src/helper and src/shared, or the bin
//   script) and third-party packages, with their lines.
// The README states both (between the root-surface markers); it may not
// claim less than is measured here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import userid from 'userid';
import { Daemon, REPO, BIN, fakeQuota, quotaBlock, writeConfig } from './support/daemon.js';
import { exchange, rcpt } from './support/policy-client.js';

/** Code lines reachable from the front's input, after start-up. */
export const INPUT_REACHABLE_BUDGET = 400;
/** Where input from the front is first handled in the root process. */
const INPUT_ENTRIES = ['src/helper/channel.ts', 'src/helper/supervise.ts'];
/** Packages root may load: config (yaml), the service user (userid), quota(1) (execa and its own). */
const ROOT_PACKAGES = new Set([
  'yaml',
  'userid',
  'bindings', // userid's loader for its native addon
  'file-uri-to-path',
  'execa',
  '@sindresorhus/merge-streams',
  'cross-spawn',
  'figures',
  'get-stream',
  'human-signals',
  'is-plain-obj',
  'is-stream',
  'is-unicode-supported',
  'isexe',
  'npm-run-path',
  'parse-ms',
  'path-key',
  'pretty-ms',
  'shebang-command',
  'shebang-regex',
  'signal-exit',
  'strip-final-newline',
  'unicorn-magic',
  'which',
  'yoctocolors',
  '@sec-ant/readable-stream',
]);

const ROOT_SIDE = ['src/helper', 'src/shared', 'bin/quotapolicy.js'];

function lines(text: string): { all: number; code: number } {
  const all = text.split('\n');
  if (all.at(-1) === '') all.pop();
  let code = 0;
  let inBlock = false;
  for (const raw of all) {
    const l = raw.trim();
    if (inBlock) {
      if (l.includes('*/')) inBlock = false;
      continue;
    }
    if (l === '' || l.startsWith('//')) continue;
    if (l.startsWith('/*')) {
      inBlock = !l.includes('*/');
      continue;
    }
    code++;
  }
  return { all: all.length, code };
}

const specsOf = (text: string): string[] =>
  [
    ...text.matchAll(
      /(?:^|\s)(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm,
    ),
  ].map((m) => m[1] ?? m[2] ?? m[3]!);

/** First-party files reachable by imports from `entries` (relative imports only). */
function importClosure(entries: string[]): string[] {
  const seen = new Set<string>();
  const todo = [...entries];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const s of specsOf(readFileSync(join(REPO, f), 'utf8'))) {
      if (s.startsWith('.')) todo.push(relative(REPO, resolve(REPO, dirname(f), s.replace(/\.js$/, '.ts'))));
    }
  }
  return [...seen].sort();
}

test('the root side is formatted (Prettier) before anything is counted', () => {
  const r = spawnSync(join(REPO, 'node_modules/.bin/prettier'), ['--check', ...ROOT_SIDE], {
    cwd: REPO,
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, `npx prettier --write ${ROOT_SIDE.join(' ')}\n${r.stdout}${r.stderr}`);
});

test(`code that input from the front can reach is at most ${INPUT_REACHABLE_BUDGET} lines`, () => {
  const files = importClosure(INPUT_ENTRIES);
  assert.ok(
    files.includes('src/shared/wire.ts') && files.includes('src/helper/quota-run.ts'),
    'closure found the wire',
  );
  const counts = files.map((f) => [f, lines(readFileSync(join(REPO, f), 'utf8'))] as const);
  const code = counts.reduce((a, [, n]) => a + n.code, 0);
  const all = counts.reduce((a, [, n]) => a + n.all, 0);
  console.log(`input-reachable: ${code} code lines (${all} with comments) in ${files.length} files`);
  for (const [f, n] of counts) console.log(`  ${f}: ${n.code} (${n.all})`);
  assert.ok(code <= INPUT_REACHABLE_BUDGET, `${code} code lines`);
  // And it imports nothing but Node's built-ins and execa (which runs quota).
  const allowedBare = new Set(['execa', ...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
  for (const f of files) {
    for (const s of specsOf(readFileSync(join(REPO, f), 'utf8')).filter((x) => !x.startsWith('.'))) {
      assert.ok(allowedBare.has(s), `${f} imports ${s}: only Node built-ins and execa are allowed here`);
    }
  }
  const root = importClosure(['src/helper/startup/serve.ts']);
  assert.ok(
    root.every((f) => f.startsWith('src/helper/') || f.startsWith('src/shared/')),
    `root start-up imports outside src/helper and src/shared: ${root.join(' ')}`,
  );
});

test('the helper build refuses frontend imports (composite tsconfig)', () => {
  const cfg = readFileSync(join(REPO, 'tsconfig.helper.json'), 'utf8');
  assert.match(cfg, /"composite": true/);
  assert.match(cfg, /"include": \["src\/helper\/\*\*\/\*\.ts", "src\/shared\/\*\*\/\*\.ts"\]/);
});

interface Loaded {
  firstParty: Map<string, { all: number; code: number }>;
  packages: Map<string, { files: number; lines: number; bytes: number }>;
}

/** Files the root process (its threads, not its children) opened, from an strace -f log. */
export function rootOpens(log: string): string[] {
  const rows = log.split('\n').filter(Boolean);
  const rootPid = Number(rows[0]!.split(' ')[0]);
  const tids = new Set([rootPid]);
  const pending = new Map<number, string>();
  const out = new Set<string>();
  for (const row of rows) {
    const m = /^(\d+) +(.*)$/.exec(row);
    if (!m) continue;
    const pid = Number(m[1]);
    let call = m[2]!;
    if (call.endsWith('<unfinished ...>')) {
      pending.set(pid, call);
      continue;
    }
    if (call.startsWith('<...')) {
      call = (pending.get(pid) ?? '') + call;
      pending.delete(pid);
    }
    if (!tids.has(pid)) continue;
    const ret = /\) += (\d+)/.exec(call)?.[1] ?? /= (\d+)$/.exec(call)?.[1];
    if (/^clone3?\(/.test(call) && call.includes('CLONE_THREAD') && ret) tids.add(Number(ret));
    const open = /^openat\(AT_FDCWD, "([^"]+)",.*\)\s+=\s+\d+$/.exec(call);
    if (open) out.add(open[1]!);
  }
  return [...out];
}

function classify(paths: string[]): Loaded {
  const firstParty = new Map<string, { all: number; code: number }>();
  const packages = new Map<string, { files: number; lines: number; bytes: number }>();
  for (const p of paths.filter((x) => /\.(m?js|cjs|node)$/.test(x))) {
    const rel = relative(REPO, p);
    const nm = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(rel);
    if (nm) {
      const e = packages.get(nm[1]!) ?? { files: 0, lines: 0, bytes: 0 };
      e.files++;
      e.bytes += statSync(p).size;
      if (!p.endsWith('.node')) e.lines += lines(readFileSync(p, 'utf8')).all;
      packages.set(nm[1]!, e);
    } else if (rel.startsWith('dist/src/')) {
      const src = rel.replace(/^dist\//, '').replace(/\.js$/, '.ts');
      firstParty.set(src, lines(readFileSync(join(REPO, src), 'utf8')));
    } else if (rel.startsWith('bin/')) {
      firstParty.set(rel, lines(readFileSync(p, 'utf8')));
    } else if (!rel.startsWith('..')) {
      assert.fail(`root loaded ${rel}: neither built code nor a package`);
    }
  }
  return { firstParty, packages };
}

/** "<!-- root-surface: first_party_files=N first_party_lines=N packages=N package_lines=N -->" */
function readmeFigures(): Record<string, number> {
  const m = /<!-- root-surface: ([^>]*) -->/.exec(readFileSync(join(REPO, 'README.md'), 'utf8'));
  assert.ok(m, 'README.md states the root surface between root-surface markers');
  return Object.fromEntries(
    m[1]!
      .trim()
      .split(/\s+/)
      .map((kv) => [kv.split('=')[0]!, Number(kv.split('=')[1])]),
  );
}

test('everything the root process loads, traced: only src/helper, src/shared and named packages; README agrees', async () => {
  assert.equal(process.getuid?.(), 0, 'run as root (CI does)');
  const dir = mkdtempSync(join(tmpdir(), 'qp-surface-'));
  chmodSync(dir, 0o755);
  const svc = userid.ids('quotapolicy');
  const fq = fakeQuota();
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '10', 100, 200));
  const sock = join(dir, 'p.sock');
  const cfg = writeConfig(
    dir,
    `user: quotapolicy\nlisten: ["unix:${sock}"]\nsocket_group: quotapolicy\nquota_path: ${fq.path}\nmin_uid: 100\n`,
  );
  const log = join(dir, 'strace.log');
  // strace comes with scripts/setup.sh --test; missing, this fails loudly.
  const d = new Daemon(
    spawn(
      'strace',
      ['-f', '-qq', '-e', 'trace=openat,clone,clone3', '-o', log, process.execPath, BIN, 'serve', '--config', cfg],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    ),
  );
  try {
    await d.waitFor((l) => l.msg === 'front ready', 30_000);
    // A quota lookup through the helper: root loads what running quota(1) needs.
    const r = await exchange({ path: sock }, [rcpt('quotapolicy@x')], { replies: 1, timeoutMs: 15_000 });
    assert.equal(r.text, 'action=DUNNO\n\n');
    assert.ok(fq.argv().length > 0, 'quota ran');
  } finally {
    const rootPid = Number(readFileSync(log, 'utf8').split(' ')[0]);
    process.kill(rootPid, 'SIGTERM');
    await d.exit;
  }
  const { firstParty, packages } = classify(rootOpens(readFileSync(log, 'utf8')));
  const fpLines = [...firstParty.values()].reduce((a, n) => a + n.all, 0);
  const fpCode = [...firstParty.values()].reduce((a, n) => a + n.code, 0);
  const pkgLines = [...packages.values()].reduce((a, n) => a + n.lines, 0);
  const pkgFiles = [...packages.values()].reduce((a, n) => a + n.files, 0);
  console.log(`root loads ${firstParty.size} first-party files: ${fpLines} lines (${fpCode} code)`);
  for (const [f, n] of firstParty) console.log(`  ${f}: ${n.all}`);
  console.log(`root loads ${packages.size} packages, ${pkgFiles} files, ${pkgLines} lines`);
  for (const [p, n] of packages) console.log(`  ${p}: ${n.files} files, ${n.lines} lines, ${n.bytes} bytes`);
  for (const f of firstParty.keys()) {
    assert.ok(
      ROOT_SIDE.some((r) => f.startsWith(r)),
      `root loaded ${f}: outside src/helper, src/shared and the bin script`,
    );
  }
  assert.ok(firstParty.has('src/helper/channel.ts') && firstParty.has('src/helper/startup/serve.ts'), 'trace saw root');
  for (const p of packages.keys()) assert.ok(ROOT_PACKAGES.has(p), `root loaded package ${p}: not one of root's`);
  assert.ok(packages.has('execa') && packages.has('yaml') && packages.has('userid'), 'trace saw the packages');
  const stated = readmeFigures();
  const measured = {
    first_party_files: firstParty.size,
    first_party_lines: fpLines,
    packages: packages.size,
    package_lines: pkgLines,
  };
  for (const [k, v] of Object.entries(measured)) {
    assert.ok(stated[k] !== undefined && stated[k] >= v, `README says ${k}=${stated[k]}, measured ${v}`);
    assert.ok(stated[k] <= Math.ceil(v * 1.1), `README's ${k}=${stated[k]} is stale: measured ${v}`);
  }
});
