// The report's SMTP client against a scripted server that speaks STARTTLS
// (a real TLS handshake, certificate verified) and AUTH PLAIN. Plain SMTP
// delivery to a real server (smtp-sink) is in ratelimit-commands.test.ts.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sendMail, SMTP_MAX_REPLY_BYTES } from '../src/frontend/mail/smtp.js';

let cert: Buffer;
let key: Buffer;

before(() => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-tls-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(dir, 'k.pem'),
      '-out',
      join(dir, 'c.pem'),
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  cert = readFileSync(join(dir, 'c.pem'));
  key = readFileSync(join(dir, 'k.pem'));
});

interface Seen {
  commands: string[];
  tlsCommands: string[];
  data: string;
}

/**
 * Plaintext a hostile server (or a man in the middle) adds at STARTTLS:
 * with-220: a reply in the same write as its 220; after-hello: a reply once
 * the client's TLS ClientHello has arrived (the client has switched).
 */
type Inject = 'with-220' | 'after-hello';

/** A minimal ESMTP server: STARTTLS (when offered), AUTH PLAIN user/pass, one message per transaction. */
function server(offerTls: boolean, inject?: Inject): Promise<{ port: number; seen: Seen; close: () => void }> {
  const seen: Seen = { commands: [], tlsCommands: [], data: '' };
  return new Promise((resolve) => {
    const srv = net
      .createServer((plain) => {
        let sock: net.Socket = plain;
        let secure = false;
        let inData = false;
        let buf = '';
        const say = (l: string): void => {
          sock.write(l + '\r\n');
        };
        const onData = (d: Buffer): void => {
          buf += d.toString();
          let i;
          while ((i = buf.indexOf('\r\n')) !== -1) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (inData) {
              if (line === '.') {
                inData = false;
                say('250 2.0.0 queued');
              } else seen.data += line + '\n';
              continue;
            }
            (secure ? seen.tlsCommands : seen.commands).push(line);
            const verb = line.split(' ')[0]!.toUpperCase();
            if (verb === 'EHLO') {
              say('250-test');
              if (offerTls && !secure) say('250-STARTTLS');
              say('250 AUTH PLAIN');
            } else if (verb === 'STARTTLS') {
              if (inject === 'with-220') sock.write('220 2.0.0 go ahead\r\n250 2.0.0 injected\r\n');
              else say('220 2.0.0 go ahead');
              plain.removeListener('data', onData);
              if (inject === 'after-hello') {
                plain.once('data', (hello) => {
                  seen.data = `hello ${hello.length} bytes`;
                  plain.write('250 2.0.0 injected\r\n');
                });
                return;
              }
              const t = new tls.TLSSocket(plain, { isServer: true, cert, key });
              t.on('data', onData);
              t.on('error', () => {});
              sock = t;
              secure = true;
            } else if (verb === 'AUTH')
              say(
                line === `AUTH PLAIN ${Buffer.from('\0reporter\0s3cret').toString('base64')}`
                  ? '235 2.7.0 ok'
                  : '535 5.7.8 bad',
              );
            else if (verb === 'DATA') {
              inData = true;
              say('354 go');
            } else if (verb === 'QUIT') {
              say('221 bye');
              sock.end();
            } else say('250 ok');
          }
        };
        plain.on('data', onData);
        plain.on('error', () => {});
        say('220 test ESMTP');
      })
      .listen(0, '127.0.0.1', () =>
        resolve({ port: (srv.address() as net.AddressInfo).port, seen, close: () => srv.close() }),
      );
  });
}

test('STARTTLS with a verified certificate, then AUTH PLAIN, then the message: credentials never travel in clear', async () => {
  const s = await server(true);
  try {
    await sendMail(
      { host: '127.0.0.1', port: s.port, starttls: true, credentials: ['reporter', 's3cret'], ca: cert },
      'a@example.org',
      ['b@example.org'],
      'Report',
      'hello',
    );
    assert.deepEqual(
      s.seen.commands.map((c) => c.split(' ')[0]),
      ['EHLO', 'STARTTLS'],
    );
    assert.deepEqual(
      s.seen.tlsCommands.map((c) => c.split(' ')[0]),
      ['EHLO', 'AUTH', 'MAIL', 'RCPT', 'DATA', 'QUIT'],
    );
    assert.match(s.seen.data, /Subject: Report\nDate: .*\nMIME-Version: 1\.0\n/);
  } finally {
    s.close();
  }
});

test('a certificate no trusted CA signed is refused before anything is sent', async () => {
  const s = await server(true);
  try {
    await assert.rejects(
      sendMail(
        { host: '127.0.0.1', port: s.port, starttls: true, credentials: ['reporter', 's3cret'] },
        'a@x',
        ['b@x'],
        'S',
        'b',
      ),
      /SMTP STARTTLS: self[- ]signed certificate/,
    );
    assert.deepEqual(s.seen.tlsCommands, []);
  } finally {
    s.close();
  }
});

test('a server without STARTTLS, or credentials without STARTTLS: a clear error, no AUTH sent', async () => {
  const s = await server(false);
  try {
    await assert.rejects(
      sendMail(
        { host: '127.0.0.1', port: s.port, starttls: true, credentials: null, ca: cert },
        'a@x',
        ['b@x'],
        'S',
        'b',
      ),
      /STARTTLS: not offered/,
    );
    await assert.rejects(
      sendMail({ host: '127.0.0.1', port: s.port, starttls: false, credentials: ['u', 'p'] }, 'a@x', ['b@x'], 'S', 'b'),
      /refusing to send credentials without STARTTLS/,
    );
    assert.ok(!s.seen.commands.some((c) => c.startsWith('AUTH')));
  } finally {
    s.close();
  }
});

test('a refused recipient is an error naming the step', async () => {
  const srv = net
    .createServer((c) => {
      c.write('220 x\r\n');
      c.on('data', (d) => {
        const v = d.toString().slice(0, 4).toUpperCase();
        c.write(v === 'RCPT' ? '550 5.1.1 no such user\r\n' : v === 'EHLO' ? '250 x\r\n' : '250 ok\r\n');
      });
    })
    .listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  try {
    await assert.rejects(
      sendMail(
        { host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, starttls: false, credentials: null },
        'a@x',
        ['nobody@x'],
        'S',
        'b',
      ),
      /SMTP RCPT TO nobody@x: 550 5\.1\.1 no such user/,
    );
  } finally {
    srv.close();
  }
});

test('plaintext the server sends with its 220 to STARTTLS refuses the session: never read as a reply inside TLS', async () => {
  const s = await server(true, 'with-220');
  try {
    await assert.rejects(
      sendMail(
        { host: '127.0.0.1', port: s.port, starttls: true, credentials: ['reporter', 's3cret'], ca: cert },
        'a@x',
        ['b@x'],
        'S',
        'b',
      ),
      {
        message:
          'SMTP STARTTLS: the server sent 20 bytes after its 220 reply, before TLS ("250 2.0.0 injected\\r\\n"); refusing the session',
      },
    );
    assert.deepEqual(
      s.seen.commands.map((c) => c.split(' ')[0]),
      ['EHLO', 'STARTTLS'],
    );
    assert.deepEqual(s.seen.tlsCommands, [], 'no EHLO, and no credentials, after the switch');
  } finally {
    s.close();
  }
});

test('plaintext sent after the client switched goes to TLS and fails the handshake: an error, never a reply', async () => {
  const s = await server(true, 'after-hello');
  try {
    await assert.rejects(
      sendMail(
        { host: '127.0.0.1', port: s.port, starttls: true, credentials: ['reporter', 's3cret'], ca: cert },
        'a@x',
        ['b@x'],
        'S',
        'b',
      ),
      (e: Error) => /^SMTP STARTTLS: /.test(e.message) && !/after its 220/.test(e.message),
    );
    assert.match(s.seen.data, /^hello \d+ bytes$/, 'the client had sent its ClientHello');
    assert.deepEqual(s.seen.tlsCommands, []);
  } finally {
    s.close();
  }
});

test('a server that sends more than SMTP_MAX_REPLY_BYTES without ending a reply: a clear error, at once', async () => {
  const srv = net
    .createServer((c) => {
      c.on('error', () => {});
      c.write(`220 ${'x'.repeat(SMTP_MAX_REPLY_BYTES)}`);
    })
    .listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  try {
    const t0 = Date.now();
    await assert.rejects(
      sendMail(
        { host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port, starttls: false, credentials: null },
        'a@x',
        ['b@x'],
        'S',
        'b',
      ),
      { message: `SMTP greeting: more than ${SMTP_MAX_REPLY_BYTES} bytes without the end of a reply` },
    );
    assert.ok(Date.now() - t0 < 5000, 'not the step timeout');
  } finally {
    srv.close();
  }
});
