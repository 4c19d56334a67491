// The `quotapolicy` command. Every failure ends in one line on stderr and a
// sysexits-style status, never a stack trace.
import { readFileSync } from 'node:fs';
import { flagOf, parseCommandLine, UsageError } from '../shared/options.js';
import { loadConfig, DEFAULT_CONFIG_PATH } from '../shared/config/load.js';
import { EXIT, exitFor, KEEPS_RUNNING, type ExitStatus } from '../shared/errors.js';
import { query } from './query.js';

/** What each exit status means, for --help (and so the README); the type makes every status have a line. */
export const EXIT_HELP: Record<ExitStatus, string> = {
  [EXIT.OK]: 'done (check and query: whatever the action)',
  [EXIT.FAILURE]:
    'serve: the daemon failed after start-up (the front or helper died, a listener failed); systemd restarts it',
  [EXIT.VIOLATION]: 'quotapolicy-helper: the front broke the channel protocol',
  [EXIT.USAGE]: 'bad command line (EX_USAGE)',
  [EXIT.NOINPUT]: 'ratelimit reset: nothing held under that key (EX_NOINPUT)',
  [EXIT.UNAVAILABLE]: 'the rate-limit store, or (query) the daemon, cannot be reached (EX_UNAVAILABLE)',
  [EXIT.SOFTWARE]:
    "unexpected internal error: a bug; or, started the original's way, the daemon was not ready in time (EX_SOFTWARE)",
  [EXIT.TEMPFAIL]: 'query: no reply in time, or none at all (EX_TEMPFAIL)',
  [EXIT.CONFIG]: 'bad configuration, or a start-up check failed (EX_CONFIG)',
};

const exitLines = (): string =>
  Object.entries(EXIT_HELP)
    .map(([status, meaning]) => `  ${status.padEnd(4)} ${meaning}`)
    .join('\n');

export const USAGE = `usage: quotapolicy COMMAND [options]

Commands:
  serve                      run the daemon (as root: root helper + unprivileged front;
                             with privilege_mode sudo: as the service user)
  check ADDRESS [--size N]   print the action for one recipient, and why (root reads all quotas)
  query RECIPIENT            send one policy request to a running daemon and print the reply,
                             which check answered and why (on a unix socket); counts nothing
  check-config               validate the configuration and exit
  get-config [KEY]           print the effective configuration, or one setting (e.g. rate_limit.limits)
  clean                      rate limiting: purge old counts, compact the store, send the report
  ratelimit show KIND:ID     rate limiting: every window of that key: used, limit, when it frees up
  ratelimit reset KIND:ID    rate limiting: delete that key's counts (unblock it now)
                             KIND: sasl, sender, ip, rcpt_domain or sender_domain
                             (sender:bob@example.org, ip:192.0.2.7, rcpt_domain:example.org)
  migrate --from policyd-rate-limit FILE
                             print a quotapolicy config equivalent to a policyd-rate-limit one
  help                       this text

Options:
  -c, --config PATH          config file (default ${DEFAULT_CONFIG_PATH}; absent = built-in defaults)
  -u, --user NAME            service user for the front process (default quotapolicy)
  -l, --listen SPEC          unix:/path, inet:IPV4:PORT or inet:[IPV6]:PORT; repeat for more
      --quota-path PATH      quota(1) binary run by the root helper (default /usr/bin/quota)
      --min-uid N            never check users below this uid (default 1000)
      --recipient-delimiter S  extension delimiters (default: postconf's, else "+")
      --log-level LEVEL      debug, info, warn or error (default info)
      --pid-file PATH        write the main pid here; refuse to start if it names a live process
      --size BYTES           message size (check, query)
      --to SPEC              daemon socket for query (default: the first listen entry)
      --state STATE          protocol_state for query (default RCPT)
      --attr NAME=VALUE      extra request attribute for query; repeat for more
      --count                query: send exactly what smtpd sends, counted; print the action only
  -h, --help                 this text
  -V, --version              print the version

Flags of the original quotapolicy, same meaning:
  -H, --homedir DIR          -s and -p are relative to DIR
  -s, --socketfile PATH      listen on unix:PATH (default DIR/quotapolicy.socket with -H)
  -p, --pidfile PATH         pid file (default DIR/quotapolicy.pid with -H)
  -q, --quotapath PATH       same as --quota-path
  -d, --recipient-delimiter S  same as --recipient-delimiter
      --debug                same as --log-level debug, and stay in the foreground
      --sudopath PATH        sudo binary for sudo mode (root-owned); ignored, with a note, as root
  With these flags and no command, quotapolicy serves and detaches as the original did:
  it returns 0 once the pid file names the daemon and its socket answers; log in the
  pid file's directory (quotapolicy.log). Started unprivileged, that is sudo mode.

Exit status:
${exitLines()}
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export async function run(argv: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  try {
    const cl = parseCommandLine(argv);
    if (cl.version) return (out(`quotapolicy ${version()}\n`), EXIT.OK);
    const command = cl.positionals[0];
    if (cl.help || command === 'help') return (out(USAGE), EXIT.OK);
    switch (command) {
      case 'serve':
        if (cl.positionals.length > 1) throw new UsageError(`serve takes no arguments, got "${cl.positionals[1]}"`);
        if (cl.detach) return await (await import('./detach.js')).detach(argv, cl, out, err);
        // As root, bin/quotapolicy.js runs src/helper/startup/serve.ts instead:
        // root loads no CLI code. Here: sudo mode, or a clear refusal.
        await (await import('./serve-sudo.js')).serveSudo(cl);
        return KEEPS_RUNNING;
      case 'check':
        return await (await import('./check.js')).check(cl, out);
      case 'query':
        return await query(cl, out);
      case 'clean':
        return await (await import('./ratelimit-commands.js')).clean(cl, out);
      case 'ratelimit':
        return await (await import('./ratelimit-commands.js')).ratelimit(cl, out, err);
      case 'get-config':
        return (await import('./ratelimit-commands.js')).getConfig(cl, out);
      case 'migrate':
        return (await import('./ratelimit-commands.js')).migrate(cl, out, err);
      case 'check-config': {
        const { config, source } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
        // The files root would trust, checked as serve checks them (root mode only).
        if (config.privilege_mode === 'root') {
          const warnings = (await import('../helper/startup/serve.js')).checkRootPaths(
            cl.configPath ?? DEFAULT_CONFIG_PATH,
            config,
          );
          // What serve would start with, degraded: said, but no failure.
          for (const w of warnings) err(`quotapolicy: warning: ${w}\n`);
        }
        // What the front would warn about at start, tried as it would: as the service user.
        for (const line of await (await import('./startup-check.js')).checkStartup(config)) err(line);
        out(`config OK (${source})\n`);
        return EXIT.OK;
      }
      case undefined:
        throw new UsageError('no command given (try quotapolicy --help)');
      default:
        throw new UsageError(`unknown command "${command}" (try quotapolicy --help)`);
    }
  } catch (e) {
    return exitFor(e, err);
  }
}
