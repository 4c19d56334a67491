// SECURITY: what root reads, runs or writes by path must be a path nobody
// else can change (OpenSSH's StrictModes, Postfix's safe_open()). Every
// directory from / down, and the file itself, must be owned by the trusted
// owner (root, or the process's own user in sudo mode) and not writable by
// group or others. A directory writable by others is accepted only with the
// sticky bit (/tmp), where nobody can rename or replace the entries of
// another owner, and then the next entry must belong to the trusted owner.
// Symbolic links along the way are resolved and the real path is checked too.
import { existsSync, lstatSync, realpathSync, type Stats } from 'node:fs';
import { dirname, isAbsolute, sep } from 'node:path';
import { QpError } from '../../shared/errors.js';

export class TrustError extends QpError {
  override name = 'TrustError';
  constructor(message: string) {
    super('QP_TRUST', message);
  }
}

const S_IWGRP = 0o020;
const S_IWOTH = 0o002;
const S_ISVTX = 0o1000;

/** Every path from / to `path`: "/", "/etc", "/etc/quotapolicy", ... */
function chain(path: string): string[] {
  const parts = path.split(sep).filter((p) => p !== '');
  return ['/', ...parts.map((_, i) => `/${parts.slice(0, i + 1).join('/')}`)];
}

function checkChain(path: string, what: string, owner: number, fix: string, stickyEnd = false): void {
  let parentSticky = false;
  for (const p of chain(path)) {
    let st: Stats;
    try {
      st = lstatSync(p);
    } catch (e) {
      throw new TrustError(`${what} ${path}: ${p}: ${(e as NodeJS.ErrnoException).code}`);
    }
    const trustedOwner = st.uid === owner || st.uid === 0;
    if (st.isSymbolicLink()) {
      // A link is as safe as its directory (checked); its target is checked
      // through the real path.
      if (parentSticky && !trustedOwner) {
        throw new TrustError(`${what} ${path}: symbolic link ${p} is owned by uid ${st.uid}; ${fix}`);
      }
      return;
    }
    if (!trustedOwner) throw new TrustError(`${what} ${path}: ${p} is owned by uid ${st.uid}; ${fix}`);
    const writable = (st.mode & (S_IWGRP | S_IWOTH)) !== 0;
    const sticky = (st.mode & S_ISVTX) !== 0;
    if (writable && ((p === path && !(stickyEnd && sticky)) || !sticky)) {
      const kind = p === path ? '' : `directory ${p} is `;
      throw new TrustError(`${what} ${path}: ${kind || 'it is '}writable by group or others; ${fix}`);
    }
    parentSticky = writable && sticky;
  }
}

/**
 * Refuses `path` (a file or a directory) unless it and every directory above
 * it can be changed only by `owner` or root. A path that does not exist is
 * left to the caller (an absent config file means built-in defaults).
 */
export function checkTrustedPath(path: string, what: string, owner: number, fix: string): void {
  if (!isAbsolute(path)) throw new TrustError(`${what} ${path}: must be an absolute path`);
  let real: string;
  try {
    real = realpathSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new TrustError(`${what} ${path}: ${(e as NodeJS.ErrnoException).code}`);
    // Absent: then nobody but the trusted owner may be able to create it.
    let dir = dirname(path);
    while (!existsSync(dir)) dir = dirname(dir);
    return checkChain(dir, what, owner, fix);
  }
  checkChain(path, what, owner, fix);
  if (real !== path) checkChain(real, what, owner, fix);
}

/**
 * A directory others may write into (a socket's directory's parent): the
 * directories above it and itself may be changed only by `owner` or root, or
 * be sticky like /tmp, so that nobody can swap it or any directory on its path.
 */
export function checkTrustedDirectory(dir: string, what: string, owner: number, fix: string): void {
  checkChain(dir, what, owner, fix, true);
  let real: string;
  try {
    real = realpathSync(dir);
  } catch (e) {
    throw new TrustError(`${what} ${dir}: ${(e as NodeJS.ErrnoException).code}`);
  }
  if (real !== dir) checkChain(real, what, owner, fix, true);
}
