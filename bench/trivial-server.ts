// Scenario (d): the ceiling of the harness itself, a Node server that answers
// DUNNO to every request. Usage: node dist/bench/trivial-server.js unix:/path|inet:HOST:PORT
import net from 'node:net';
import { netOptions } from '../src/shared/config/checks.js';

const where = netOptions(process.argv[2] ?? 'inet:127.0.0.1:10099');
net
  .createServer((s) => {
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      let i;
      while ((i = buf.indexOf('\n\n')) !== -1) {
        buf = buf.slice(i + 2);
        s.write('action=DUNNO\n\n');
      }
    });
    s.on('error', () => {});
  })
  .listen(where, () => process.stdout.write('ready\n'));
