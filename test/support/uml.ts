// Boots a user-mode-linux guest (test/uml/boot.sh) with one of test/uml's init
// scripts and waits for it; the guest writes its results into `out`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './daemon.js';

export interface GuestOptions {
  /** The checkout the guest runs from (default: this one). */
  repo?: string;
  /** Also put an overlay on /usr (install tests). */
  overlayUsr?: boolean;
  /** boot.sh kills the guest after this long (UML_TIMEOUT); the test waits 20 s more. */
  timeoutS?: number;
}

/**
 * Fails (never skips) unless the guest finishes with status 0, with the tail of
 * its console; so does a machine without user-mode-linux (scripts/setup.sh
 * --test installs it).
 */
export function bootGuest(out: string, script: string, o: GuestOptions = {}): void {
  const repo = o.repo ?? REPO;
  const timeoutS = o.timeoutS ?? 480;
  const args = [out, join(repo, 'test/uml', script), `REPO=${repo}`, ...(o.overlayUsr ? ['OVERLAY_USR=1'] : [])];
  const r = spawnSync(join(repo, 'test/uml/boot.sh'), args, {
    encoding: 'utf8',
    timeout: (timeoutS + 20) * 1000,
    env: { ...process.env, UML_TIMEOUT: String(timeoutS) },
  });
  const log = join(out, 'console.log');
  const console_ = existsSync(log) ? readFileSync(log, 'utf8') : '(no console log)';
  assert.equal(
    r.status,
    0,
    `guest ${script} from ${repo} failed (status ${r.status}, ${r.error?.message ?? ''}):\n${r.stderr}\n${console_.slice(-4000)}`,
  );
}
