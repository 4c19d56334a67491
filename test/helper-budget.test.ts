// The root side must stay small enough to audit in one sitting: src/helper
// plus the wire contract at most 400 lines, importing only Node built-ins and
// execa (and each other).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';

const SRC = new URL('../../src/', import.meta.url);
export const HELPER_LINE_BUDGET = 400;

function rootSideFiles(): string[] {
  const helper = readdirSync(new URL('helper/', SRC)).filter((f) => f.endsWith('.ts')).map((f) => `helper/${f}`);
  return [...helper, 'shared/wire.ts'];
}

test(`src/helper + src/shared/wire.ts is at most ${HELPER_LINE_BUDGET} lines`, () => {
  const counts = rootSideFiles().map((f) => [f, readFileSync(new URL(f, SRC), 'utf8').split('\n').length - 1] as const);
  const total = counts.reduce((a, [, n]) => a + n, 0);
  console.log(`root side: ${total} lines (${counts.map(([f, n]) => `${f} ${n}`).join(', ')})`);
  assert.ok(total <= HELPER_LINE_BUDGET, `root side is ${total} lines`);
});

test('the root side imports only Node built-ins, execa and itself', () => {
  const allowedBare = new Set(['execa', ...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
  for (const f of rootSideFiles()) {
    const text = readFileSync(new URL(f, SRC), 'utf8');
    const specs = [...text.matchAll(/(?:^|\s)(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm)]
      .map((m) => m[1] ?? m[2] ?? m[3]!);
    if (f === 'helper/channel.ts') assert.ok(specs.length >= 3, 'import scan found nothing: regex broken?');
    for (const s of specs) {
      if (s.startsWith('.')) {
        assert.ok(s.startsWith('./') || s === '../shared/wire.js', `${f} imports ${s}: only helper files and the wire contract`);
      } else {
        assert.ok(allowedBare.has(s), `${f} imports ${s}: only Node built-ins and execa are allowed`);
      }
    }
  }
});

test('the helper build refuses frontend imports (composite tsconfig)', () => {
  const cfg = readFileSync(new URL('../tsconfig.helper.json', SRC), 'utf8');
  assert.match(cfg, /"composite": true/);
  assert.match(cfg, /"include": \["src\/helper\/\*\*\/\*\.ts", "src\/shared\/\*\*\/\*\.ts"\]/);
});
