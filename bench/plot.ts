// A line chart of req/s against connections, one line per system, as SVG:
// logarithmic req/s (the systems span two orders of magnitude), connection
// counts evenly spaced. No dependency; the file is committed with the figures.

export interface Series {
  name: string;
  points: { connections: number; reqPerSec: number }[];
}

const W = 980;
const H = 520;
const M = { left: 80, right: 330, top: 40, bottom: 60 };
const COLOURS = [
  '#1b6ca8',
  '#d1495b',
  '#edae49',
  '#00798c',
  '#66a182',
  '#8d5a97',
  '#2e4057',
  '#e07a5f',
  '#3d405b',
  '#81b29a',
];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function plot(title: string, series: Series[]): string {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.connections)))].sort((a, b) => a - b);
  const ys = series.flatMap((s) => s.points.map((p) => p.reqPerSec)).filter((y) => y > 0);
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...ys, 100))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...ys, 1000))));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (c: number): number => M.left + (xs.length === 1 ? pw / 2 : (xs.indexOf(c) / (xs.length - 1)) * pw);
  const y = (v: number): number =>
    M.top + ph - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="13">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${M.left}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`);
  for (let d = lo; d <= hi; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi) break;
      out.push(
        `<line x1="${M.left}" x2="${M.left + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="${m === 1 ? '#bbb' : '#eee'}"/>`,
      );
      out.push(
        `<text x="${M.left - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#444">${v >= 1000 ? `${v / 1000}k` : v}</text>`,
      );
    }
  }
  for (const c of xs) {
    out.push(`<line x1="${x(c)}" x2="${x(c)}" y1="${M.top}" y2="${M.top + ph}" stroke="#eee"/>`);
    out.push(`<text x="${x(c)}" y="${M.top + ph + 20}" text-anchor="middle" fill="#444">${c}</text>`);
  }
  out.push(`<text x="${M.left + pw / 2}" y="${H - 15}" text-anchor="middle">connections</text>`);
  out.push(
    `<text transform="translate(18 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">requests per second (log)</text>`,
  );
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    const pts = s.points
      .filter((p) => p.reqPerSec > 0)
      .map((p) => `${x(p.connections).toFixed(1)},${y(p.reqPerSec).toFixed(1)}`);
    out.push(`<polyline fill="none" stroke="${colour}" stroke-width="2.5" points="${pts.join(' ')}"/>`);
    for (const p of pts) out.push(`<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3.5" fill="${colour}"/>`);
    const ly = M.top + 10 + i * 22;
    out.push(
      `<line x1="${W - M.right + 20}" x2="${W - M.right + 45}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="3"/>`,
    );
    out.push(`<text x="${W - M.right + 52}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
