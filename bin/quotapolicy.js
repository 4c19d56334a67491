#!/usr/bin/env node
// Entry point: the compiled CLI (npm run build) does the work.
import { run } from '../dist/src/cli/main.js';

const code = await run(process.argv.slice(2), (s) => process.stdout.write(s), (s) => process.stderr.write(s));
// serve keeps running (-1); everything else exits with its status.
if (code >= 0) process.exitCode = code;
