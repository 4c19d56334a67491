// The helper's log: one JSON line per event on stderr (stdout may be the
// channel), in pino's shape so both processes' lines read alike.
const LEVELS = { debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;

export function log(level: keyof typeof LEVELS, msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(
    JSON.stringify({ level: LEVELS[level], time: Date.now(), pid: process.pid, role: 'helper', ...fields, msg }) + '\n',
  );
}
