// pino JSON on stdout, with the process role on every line.
import { pino, type Logger } from 'pino';

export type Role = 'front' | 'cli';

export function makeLogger(role: Role, level: string): Logger {
  return pino({ level, base: { pid: process.pid, role }, timestamp: pino.stdTimeFunctions.epochTime });
}
