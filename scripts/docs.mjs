// Rewrites the generated parts of README.md (npm run docs): the config
// reference from the schema, and the command-line reference from --help; and
// the man pages man/quotapolicy.8 and man/quotapolicy.yaml.5 from the same.
import { readFileSync, writeFileSync } from 'node:fs';
import { configReference } from '../dist/src/shared/config/reference.js';
import { USAGE } from '../dist/src/cli/main.js';
import { quotapolicyPage, configPage } from '../dist/src/cli/manual.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
writeFileSync(new URL('../man/quotapolicy.8', import.meta.url), quotapolicyPage(version));
writeFileSync(new URL('../man/quotapolicy.yaml.5', import.meta.url), configPage(version));

const README = new URL('../README.md', import.meta.url);
let text = readFileSync(README, 'utf8');
for (const [name, body] of [
  ['config-reference', configReference()],
  ['usage', '```\n' + USAGE + '```\n'],
]) {
  const start = `<!-- ${name}:start -->\n`;
  const end = `<!-- ${name}:end -->`;
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a === -1 || b === -1) throw new Error(`README.md has no ${name} markers`);
  text = text.slice(0, a + start.length) + body + text.slice(b);
}
writeFileSync(README, text);
