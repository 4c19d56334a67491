// One system through every connection count: warm-up, then the measured
// points, then the peak RSS of each of its processes, then stopped.
import { runLoad } from './loadgen.js';
import { peakRss, type System } from './systems.js';
import { CONNECTIONS, type Measured, type Scenario } from './report.js';

export type Measure = (
  scenario: Scenario,
  start: () => Promise<System>,
  template: (i: number) => Record<string, string>,
  /** Distinct requests sent in turn (loadgen's POOL when left out). */
  pool?: number,
) => Promise<Measured>;

export function measurer(
  seconds: number,
  warmupSeconds: number,
  log: (s: string) => void = (s) => process.stderr.write(s),
): Measure {
  return async (scenario, start, template, pool) => {
    const sys = await start();
    try {
      log(`${sys.name}: answering ${sys.startupMs.toFixed(0)} ms after spawn\n`);
      await runLoad({ to: sys.to, connections: 8, seconds: warmupSeconds, pipeline: 1, template, pool });
      const points = [];
      for (const connections of CONNECTIONS) {
        const r = await runLoad({ to: sys.to, connections, seconds, pipeline: 1, template, pool });
        points.push({ connections, ...r });
        log(
          `  ${connections} connections: ${Math.round(r.reqPerSec)} req/s, p99 ${r.p99Ms.toFixed(2)} ms, errors ${r.errors}\n`,
        );
      }
      const byName = new Map<string, { count: number; maxMb: number; sumMb: number }>();
      for (const p of sys.processes()) {
        const mb = peakRss(p.pid) / 1e6;
        if (Number.isNaN(mb)) continue;
        const e = byName.get(p.name) ?? { count: 0, maxMb: 0, sumMb: 0 };
        byName.set(p.name, { count: e.count + 1, maxMb: Math.max(e.maxMb, mb), sumMb: e.sumMb + mb });
      }
      return {
        scenario,
        system: sys.name,
        startupMs: sys.startupMs,
        points,
        processes: [...byName].map(([name, v]) => ({ name, ...v })),
      };
    } finally {
      await sys.stop();
    }
  };
}
