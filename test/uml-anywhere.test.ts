// The user-mode-linux acceptance run works from a checkout anywhere: a copy of
// this built checkout under /var/tmp (which the guest covers with its own
// tmpfs, inside its /var overlay) and one under /home (where the guest mounts
// its quota file system) each boot test/uml/acceptance.sh end to end. The guest
// must see the copy at its own path and must not change it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { REPO } from './support/daemon.js';
import { POLICY_CASES, FULL } from './uml/cases.js';
import { bootGuest } from './support/uml.js';

/** Where a newcomer's clone may sit that the guest's own mounts used to hide. */
const PARENTS = ['/var/tmp', '/home'];

/** The checkout as the guest needs it: everything but .git, with a real node_modules (the guest runs it through hostfs). */
function copyCheckout(parent: string): string {
  const copy = mkdtempSync(join(parent, 'qp-anywhere-'));
  // The daemon's front runs as the service user and loads its code from the checkout.
  chmodSync(copy, 0o755);
  const skip = new Set([resolve(REPO, '.git'), resolve(REPO, 'node_modules')]);
  cpSync(REPO, copy, { recursive: true, verbatimSymlinks: true, filter: (src) => !skip.has(resolve(src)) });
  // A copy, not a link: a link back into this checkout could point where the guest's mounts hide it.
  // cp -a: four times faster than cpSync on node_modules' thousands of small files.
  const cp = spawnSync('cp', ['-a', '--', realpathSync(join(REPO, 'node_modules')), join(copy, 'node_modules')], {
    encoding: 'utf8',
  });
  assert.equal(cp.status, 0, `copying node_modules into ${copy}: ${cp.stderr}${cp.error?.message ?? ''}`);
  return copy;
}

/** Every entry under dir with its type, mode, size and mtime: what a write by the guest would change. */
function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true })
    .map(String)
    .sort()
    .map((f) => {
      const s = lstatSync(join(dir, f));
      return `${f} ${s.mode.toString(8)} ${s.size} ${s.mtimeMs}`;
    });
}

for (const parent of PARENTS) {
  describe(`a checkout under ${parent}`, () => {
    let copy: string;
    let out: string;
    let before_: string[];
    let results: { policy: Record<string, string> };

    before(() => {
      copy = copyCheckout(parent);
      before_ = snapshot(copy);
      out = mkdtempSync(join(tmpdir(), 'qp-uml-anywhere-'));
      // Fails (not skips) where user-mode-linux is missing: scripts/setup.sh installs it.
      bootGuest(out, 'acceptance.sh', { repo: copy });
      results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as typeof results;
    });

    after(() => {
      if (copy) rmSync(copy, { recursive: true, force: true });
    });

    test('every real-quota policy case gets its answer from the daemon run from the copy', () => {
      for (const c of POLICY_CASES) assert.equal(results.policy[c.name], c.want, c.name);
    });

    test('`quotapolicy check` from the copy reads the real quota', () => {
      assert.match(
        readFileSync(join(out, 'check-hard.txt'), 'utf8'),
        new RegExp(`^action: ${FULL}\nverdict: over_quota\n`),
      );
    });

    test('the guest changed nothing in the checkout', () => {
      assert.deepEqual(snapshot(copy), before_);
    });
  });
}

test('a checkout where the guest mounts its own file systems, or none at all, stops the guest with a clear reason', () => {
  for (const [repo, reason] of [
    ['/var/tmp', /^prelude: REPO=\/var\/tmp \(\/var\/tmp\) would hide or be hidden by the guest's own mounts/m],
    ['/nonexistent-qp-checkout', /^prelude: REPO=\/nonexistent-qp-checkout: no such directory$/m],
  ] as const) {
    const out = mkdtempSync(join(tmpdir(), 'qp-uml-anywhere-'));
    const r = spawnSync(join(REPO, 'test/uml/boot.sh'), [out, join(REPO, 'test/uml/acceptance.sh'), `REPO=${repo}`], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, UML_TIMEOUT: '100' },
    });
    const console_ = existsSync(join(out, 'console.log')) ? readFileSync(join(out, 'console.log'), 'utf8') : '';
    assert.equal(r.status, 95, `REPO=${repo}: status ${r.status}\n${r.stderr}\n${console_.slice(-2000)}`);
    assert.match(console_, reason);
  }
});
