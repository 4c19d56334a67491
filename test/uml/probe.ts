// Runs inside user-mode-linux (see acceptance.sh): asks the daemon every
// POLICY_CASE over its socket, sends SMTP_CASES through Postfix, and writes
// what it heard to OUT/results.json for the host-side test to judge.
import net from 'node:net';
import { writeFileSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import { POLICY_CASES, SMTP_CASES, type SmtpCase } from './cases.js';

const [socketPath, out] = process.argv.slice(2) as [string, string];

function ask(attrs: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.endsWith('\n\n')) {
        s.destroy();
        resolve(buf.replace(/^action=/, '').trimEnd());
      }
    });
    s.on('error', reject);
    s.write(
      Object.entries(attrs)
        .map(([k, v]) => `${k}=${v}\n`)
        .join('') + '\n',
    );
  });
}

/** A small SMTP client: returns the reply line to each command. */
async function smtp(c: SmtpCase): Promise<Record<string, string>> {
  const s = net.connect(25, '127.0.0.1');
  let buf = '';
  const waiters: ((l: string) => void)[] = [];
  s.on('data', (d) => {
    buf += d.toString();
    let m;
    while ((m = /^(\d{3}) [^\n]*\r?\n/m.exec(buf))) {
      const upTo = buf.indexOf(m[0]) + m[0].length;
      buf = buf.slice(upTo);
      waiters.shift()?.(m[0].trim());
    }
  });
  const reply = (): Promise<string> => new Promise((r) => waiters.push(r));
  const cmd = (line: string): Promise<string> => {
    const p = reply();
    s.write(line + '\r\n');
    return p;
  };
  const got: Record<string, string> = { banner: await reply() };
  got.ehlo = await cmd('EHLO client.example.org');
  if (c.login) {
    got.xclient = await cmd(`XCLIENT LOGIN=${c.login}`);
    got.ehlo2 = await cmd('EHLO client.example.org');
  }
  const body = `Subject: ${c.name}\r\n\r\n` + ('x'.repeat(1023) + '\n').repeat(c.bodyKiB);
  got.mail = await cmd(`MAIL FROM:<a@example.org>${c.declareSize ? ` SIZE=${body.length}` : ''}`);
  got.rcpt = await cmd(`RCPT TO:<${c.to}>`);
  if (got.rcpt.startsWith('250')) {
    got.data = await cmd('DATA');
    got.end = await cmd(body.replace(/\n/g, '\r\n') + '\r\n.');
  }
  await cmd('QUIT');
  s.destroy();
  return got;
}

async function delivered(user: string, want: number, timeoutMs = 20_000): Promise<string[]> {
  const dir = `/home/${user}/Maildir/new`;
  const read = (): string[] =>
    existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(`${dir}/${f}`, 'utf8').slice(0, 2000)) : [];
  for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
    if (read().length >= want) break;
  }
  return read();
}

const results: Record<string, unknown> = { policy: {}, smtp: {} };
for (const c of POLICY_CASES) (results.policy as Record<string, string>)[c.name] = await ask(c.attrs);
for (const c of SMTP_CASES)
  (results.smtp as Record<string, unknown>)[c.name] = await smtp(c).catch((e: Error) => ({ error: e.message }));
results.delivered_under = await delivered('under', 3);
writeFileSync(`${out}/results.json`, JSON.stringify(results, null, 2));
