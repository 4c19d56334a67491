// Runs inside user-mode-linux (see warnings.sh): sends mail through the real
// Postfix and records the SMTP replies and what landed in the Maildirs, to
// OUT/warnings-PHASE.json, for test/uml-warnings.test.ts to judge.
// Phase "before": two messages to warn (85% full), one to calm; "after" (the
// daemon restarted): one more to warn.
import net from 'node:net';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';

const [phase, out] = process.argv.slice(2) as ['before' | 'after', string];
/** After the expected mail is in, how long to watch for mail that should not come (a second notice). */
const QUIET_MS = 4000;
const DELIVERY_TIMEOUT_MS = 30_000;

/** A small SMTP client: the reply line to each command. */
async function send(to: string, subject: string): Promise<Record<string, string>> {
  const s = net.connect(25, '127.0.0.1');
  let buf = '';
  const waiters: ((l: string) => void)[] = [];
  s.on('data', (d) => {
    buf += d.toString();
    let m;
    while ((m = /^(\d{3}) [^\n]*\r?\n/m.exec(buf))) {
      buf = buf.slice(buf.indexOf(m[0]) + m[0].length);
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
  got.mail = await cmd('MAIL FROM:<a@example.org>');
  got.rcpt = await cmd(`RCPT TO:<${to}>`);
  if (got.rcpt.startsWith('250')) {
    got.data = await cmd('DATA');
    got.end = await cmd(`Subject: ${subject}\r\n\r\nhello\r\n.`);
  }
  await cmd('QUIT');
  s.destroy();
  return got;
}

const mailbox = (user: string): string[] => {
  const dir = `/home/${user}/Maildir/new`;
  return existsSync(dir)
    ? readdirSync(dir)
        .sort()
        .map((f) => readFileSync(`${dir}/${f}`, 'utf8').slice(0, 4000))
    : [];
};

async function until(want: Record<string, number>): Promise<void> {
  const end = Date.now() + DELIVERY_TIMEOUT_MS;
  while (Date.now() < end && !Object.entries(want).every(([u, n]) => mailbox(u).length >= n))
    await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, QUIET_MS));
}

const smtp: Record<string, Record<string, string>> = {};
if (phase === 'before') {
  smtp.first = await send('warn@example.test', 'first to warn');
  smtp.calm = await send('calm@example.test', 'to calm');
  smtp.second = await send('warn+x@example.test', 'second to warn');
  // Two messages and one notice for warn; one message for calm.
  await until({ warn: 3, calm: 1 });
} else {
  smtp.third = await send('warn@example.test', 'third to warn');
  await until({ warn: 4 });
}
writeFileSync(
  `${out}/warnings-${phase}.json`,
  JSON.stringify({ smtp, warn: mailbox('warn'), calm: mailbox('calm') }, null, 2),
);
