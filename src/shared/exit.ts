// The exit statuses of the long-running processes (serve's root process, the
// front, the stand-alone helper) that are not sysexits(3) ones. Kept apart
// from errors.ts so that the root code input from the front can reach
// (supervise.ts; test/root-surface.test.ts budgets it) loads only these.
export const PROCESS_EXIT = {
  OK: 0,
  /** A daemon process stopped on a failure after start-up (the front died, the helper went): systemd restarts it. */
  FAILURE: 1,
  /** quotapolicy-helper closed its channel on a protocol violation. */
  VIOLATION: 2,
} as const;
