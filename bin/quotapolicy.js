#!/usr/bin/env node
// Entry point: the compiled code (npm run build) does the work. `serve` as
// root runs only root start-up code (src/helper/startup) and then the helper;
// every other command, serve as the service user (sudo mode) and the original's
// detaching start (no command, its flags: src/cli/detach.ts) run the CLI.
import { parseCommandLine } from '../dist/src/shared/options.js';

const argv = process.argv.slice(2);
const err = (s) => process.stderr.write(s);
let cl;
try {
  cl = parseCommandLine(argv);
} catch {
  cl = undefined; // the CLI reports the usage error
}
let code;
const root = process.getuid() === 0;
if (cl?.sudoPath !== undefined && root)
  err('quotapolicy: note: --sudopath ignored: started as root, quota runs in its own root helper, not through sudo\n');
if (
  cl &&
  !cl.detach &&
  cl.positionals[0] === 'serve' &&
  cl.positionals.length === 1 &&
  !cl.help &&
  !cl.version &&
  root
) {
  const { main } = await import('../dist/src/helper/startup/serve.js');
  code = await main(cl, err);
} else {
  const { run } = await import('../dist/src/cli/main.js');
  code = await run(argv, (s) => process.stdout.write(s), err);
}
// serve keeps running (-1); everything else exits with its status.
if (code >= 0) process.exitCode = code;
