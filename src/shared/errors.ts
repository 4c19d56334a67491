// One error model for every command (fastify's and undici's manner): a
// QpError carries a stable code, for scripts and tests, never reworded; the
// code decides the exit status, sysexits(3) where one fits. Every command
// (src/cli/main.ts, and serve as root: src/helper/startup/serve.ts) turns an
// error into one line and a status with exitFor(), nothing else.
// Errors that never leave the module pair that throws and catches them are
// not QpErrors: the policy parser's ProtocolError (a closed connection and a
// metric), the wire's DecodeError (a closed channel), the helper's
// QuotaOutputError (a QuotaStatus).
import { PROCESS_EXIT } from './exit.js';

/** Every status a quotapolicy process exits with; src/cli/main.ts's --help says what each means. */
export const EXIT = {
  ...PROCESS_EXIT,
  /** EX_USAGE: the command line is wrong. */
  USAGE: 64,
  /** EX_NOINPUT: what the command was to act on is not there (ratelimit reset: nothing held). */
  NOINPUT: 66,
  /** EX_UNAVAILABLE: a service needed is unreachable (the rate-limit store; the daemon, for query). */
  UNAVAILABLE: 69,
  /** EX_SOFTWARE: an error no code names, i.e. a bug. */
  SOFTWARE: 70,
  /** EX_TEMPFAIL: try again later (query: no reply in time). */
  TEMPFAIL: 75,
  /** EX_CONFIG: the configuration, or what serve checks before it starts, is wrong. */
  CONFIG: 78,
} as const;
export type ExitStatus = (typeof EXIT)[keyof typeof EXIT];
/** Not a status: what a command returns when its process keeps running (serve); bin/quotapolicy.js then sets none. */
export const KEEPS_RUNNING = -1;

/** Each error code and its exit status. */
export const ERROR_EXIT = {
  QP_USAGE: EXIT.USAGE,
  QP_CONFIG: EXIT.CONFIG,
  /** A file or directory root would trust is writable by others. */
  QP_TRUST: EXIT.CONFIG,
  QP_PID_FILE: EXIT.CONFIG,
  QP_LISTEN: EXIT.CONFIG,
  /** serve's other start-up checks: the service user, quota(1), the front's code, privilege_mode. */
  QP_START: EXIT.CONFIG,
  QP_STORE: EXIT.UNAVAILABLE,
  /** query: the daemon's socket cannot be reached. */
  QP_UNREACHABLE: EXIT.UNAVAILABLE,
  /** query: no reply in time, or the connection closed without one. */
  QP_NO_REPLY: EXIT.TEMPFAIL,
} as const satisfies Record<string, ExitStatus>;
export type ErrorCode = keyof typeof ERROR_EXIT;

export class QpError extends Error {
  readonly exit: ExitStatus;
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.exit = ERROR_EXIT[code];
  }
}

/** The one mapping from an error to what a command prints and exits with. */
export function exitFor(e: unknown, err: (s: string) => void): ExitStatus {
  if (e instanceof QpError) return (err(`quotapolicy: ${e.message}\n`), e.exit);
  return (err(`quotapolicy: unexpected error: ${e instanceof Error ? e.message : String(e)}\n`), EXIT.SOFTWARE);
}
