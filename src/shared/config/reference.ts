// The README's config reference, generated from schema.ts so the two cannot
// drift: test/config-reference.test.ts compares them, `npm run docs` rewrites it.
import { FIELDS, ACTION_FIELDS, WARNING_FIELDS } from './schema.js';
import type { Field } from './checks.js';
import { RATE_FIELDS } from './rate-schema.js';

function cell(v: unknown): string {
  return `\`${JSON.stringify(v)}\``.replace(/\|/g, '\\|');
}

function rows(fields: Readonly<Record<string, Field>>, prefix: string): string[] {
  return Object.entries(fields).map(
    ([k, f]) => `| \`${prefix}${k}\` | ${cell(f.default)} | ${f.doc.replace(/\|/g, '\\|')} |`,
  );
}

export function configReference(): string {
  return (
    [
      '| Key | Default | Meaning |',
      '|---|---|---|',
      ...rows(FIELDS, ''),
      ...rows(ACTION_FIELDS, 'actions.'),
      ...rows(WARNING_FIELDS, 'quota_warnings.'),
      ...rows(RATE_FIELDS, 'rate_limit.'),
    ].join('\n') + '\n'
  );
}
