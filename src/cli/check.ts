// `quotapolicy check ADDRESS [--size BYTES]`: one decision through the same
// code as the daemon (recipient mapping, helper channel, decision, actions),
// with a helper process of its own. Run it as root to read others' quotas.
import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { loadConfig, DEFAULT_CONFIG_PATH } from '../shared/config/load.js';
import { flagOf, UsageError, type CommandLine } from '../shared/options.js';
import { EXIT } from '../shared/errors.js';
import { HelperClient } from '../frontend/quota/helper-client.js';
import { PolicyService } from '../frontend/policy/service.js';
import { NO_QUOTA_FS } from '../frontend/quota/quota-check.js';
import { delimitersFor } from '../frontend/quota/delimiter.js';
import { makeLogger } from '../frontend/log.js';
import { aliasSetupFor } from '../frontend/quota/postfix-maps.js';
import { ProjectLookup } from '../frontend/quota/project.js';
import { serviceUserIds } from './service-user.js';

export const HELPER_MAIN = fileURLToPath(new URL('../helper/main.js', import.meta.url));

export async function check(cl: CommandLine, out: (s: string) => void): Promise<number> {
  const address = cl.positionals[1];
  if (address === undefined || cl.positionals.length > 2)
    throw new UsageError('usage: quotapolicy check ADDRESS [--size BYTES]');
  if (cl.size !== undefined && !/^\d{1,15}$/.test(cl.size)) throw new UsageError('--size must be a number of bytes');
  const { config } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  // As root the helper below runs quota_path: the same checks as serve's, or nothing runs.
  if (process.getuid?.() === 0)
    (await import('../helper/startup/serve.js')).checkHelperPaths(cl.configPath ?? DEFAULT_CONFIG_PATH, config);
  const child = spawn(
    process.execPath,
    [
      HELPER_MAIN,
      '--quota-path',
      config.quota_path,
      '--timeout-ms',
      String(config.quota_timeout_ms),
      '--min-uid',
      String(config.min_uid),
    ],
    { stdio: ['pipe', 'pipe', 'ignore'] },
  );
  const helper = new HelperClient(
    Duplex.from({ readable: child.stdout, writable: child.stdin }),
    config.quota_timeout_ms,
  );
  try {
    const minUid = await helper.hello();
    const log = makeLogger('cli', 'silent');
    // Postfix's maps are read as the service user, as the daemon reads them: never as root.
    const aliases = await aliasSetupFor(config, config.expand_aliases ? serviceUserIds(config) : undefined);
    if (aliases.warning !== undefined) out(`warning: ${aliases.warning}\n`);
    // The mailbox's project is read as the service user too, as the daemon reads it.
    const projects = config.quota_kinds.includes('project')
      ? new ProjectLookup({ runAs: serviceUserIds(config) })
      : undefined;
    const service = new PolicyService(
      config,
      (await delimitersFor(config)).delimiters,
      minUid,
      {
        queryQuota: (id, kind) => helper.query(id, kind),
        aliases: aliases.reader,
        mailboxProject: projects && ((name) => projects.mailboxProject(name)),
      },
      log,
    );
    const req = new Map([
      ['request', 'smtpd_access_policy'],
      ['protocol_state', 'RCPT'],
      ['recipient', address],
      ['size', cl.size ?? '0'],
    ]);
    const r = await service.decide(req);
    out(
      `action: ${r.action}\nverdict: ${r.verdict}\nreason: ${r.reason}\n${r.user === undefined ? '' : `user: ${r.user}\n`}`,
    );
    // Not this user's doing: no one is checked until quotas are on.
    if (r.results.quota?.reason === NO_QUOTA_FS) {
      out(
        `note: quota checks refuse no one on this host until quotas are on: mount with usrquota and run quotaon (check with: ${config.quota_path} -v), or leave quota out of checks\n`,
      );
    }
    return EXIT.OK;
  } finally {
    helper.close('done');
    child.kill();
  }
}
