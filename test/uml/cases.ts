// What the acceptance run inside user-mode-linux asks, and what it must hear.
// Users and their states are made by test/uml/acceptance.sh with real writes.
export const FULL = '452 4.2.2 Mailbox full, try again later';
export const TOO_LARGE = "552 5.2.2 Message is larger than the recipient's whole quota";
export const NO_FIT = "452 4.2.2 Message does not fit in the recipient's remaining quota";
export const GRACE = 'PREPEND X-Quota-Warning: mailbox over its soft quota';

export interface PolicyCase {
  name: string;
  attrs: Record<string, string>;
  want: string;
  verdict: string;
}

const rcpt = (recipient: string, size = '0'): Record<string, string> => ({
  request: 'smtpd_access_policy',
  protocol_state: 'RCPT',
  recipient,
  size,
  queue_id: '',
  sender: 'a@example.org',
});

export const POLICY_CASES: PolicyCase[] = [
  { name: 'under quota', attrs: rcpt('under@example.test'), want: 'DUNNO', verdict: 'pass' },
  { name: 'in grace', attrs: rcpt('grace@example.test'), want: GRACE, verdict: 'grace' },
  { name: 'blocks at the hard limit', attrs: rcpt('hard@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'files at the hard limit', attrs: rcpt('files@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'grace expired', attrs: rcpt('expired@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'no quota set', attrs: rcpt('noquota@example.test'), want: 'DUNNO', verdict: 'skip' },
  // Group quotas: the recipient's primary group, where the file system enforces them.
  { name: 'user fine, group full', attrs: rcpt('grpuser@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'group in grace', attrs: rcpt('grpgrace@example.test'), want: GRACE, verdict: 'grace' },
  { name: 'group grace expired', attrs: rcpt('grpexpired@example.test'), want: FULL, verdict: 'over_quota' },
  {
    name: 'group full where group quotas are not enforced',
    attrs: rcpt('grpoff@example.test'),
    want: 'DUNNO',
    verdict: 'pass',
  },
  // Project quotas: the project of the mailbox directory (its home on /home/prj).
  { name: 'user fine, project full', attrs: rcpt('prjfull@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'not a Unix user', attrs: rcpt('nosuchuser@example.test'), want: 'DUNNO', verdict: 'skip' },
  // Aliases, expanded through the real postalias/postmap on the maps acceptance.sh makes.
  { name: 'alias to a full user', attrs: rcpt('fullalias@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'nested alias, extension', attrs: rcpt('nested+x@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'virtual alias onto a nested alias', attrs: rcpt('support@example.test'), want: FULL, verdict: 'over_quota' },
  {
    name: 'alias to a full and a fine user (all_full)',
    attrs: rcpt('team@example.test'),
    want: 'DUNNO',
    verdict: 'pass',
  },
  { name: 'system user', attrs: rcpt('daemon@example.test'), want: 'DUNNO', verdict: 'skip' },
  { name: 'extension address', attrs: rcpt('hard+lists@example.test'), want: FULL, verdict: 'over_quota' },
  { name: 'upper-case address', attrs: rcpt('HARD@Example.TEST'), want: FULL, verdict: 'over_quota' },
  {
    name: 'message that does not fit (SIZE at RCPT)',
    attrs: rcpt('grace@example.test', String(60 * 1024)),
    want: NO_FIT,
    verdict: 'does_not_fit',
  },
  {
    name: 'message bigger than the whole quota',
    attrs: rcpt('under@example.test', String(3000 * 1024)),
    want: TOO_LARGE,
    verdict: 'too_large',
  },
  {
    name: 'END-OF-MESSAGE, one recipient, real size',
    attrs: {
      request: 'smtpd_access_policy',
      protocol_state: 'END-OF-MESSAGE',
      recipient: 'grace@example.test',
      recipient_count: '1',
      size: String(60 * 1024),
    },
    want: NO_FIT,
    verdict: 'does_not_fit',
  },
  {
    name: 'END-OF-MESSAGE, two recipients',
    attrs: {
      request: 'smtpd_access_policy',
      protocol_state: 'END-OF-MESSAGE',
      recipient: '',
      recipient_count: '2',
      size: '10',
    },
    want: 'DUNNO',
    verdict: 'skip',
  },
];

/** Mail sent through Postfix's check_policy_service: expected SMTP replies. */
export interface SmtpCase {
  name: string;
  to: string;
  bodyKiB: number;
  declareSize: boolean;
  rcptCode: string;
  dataCode?: string;
  login?: string;
}
export const SMTP_CASES: SmtpCase[] = [
  {
    name: 'over-quota user refused at RCPT with 452 4.2.2',
    to: 'hard@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '452 4.2.2',
  },
  {
    name: 'user whose group is over quota refused at RCPT with 452 4.2.2',
    to: 'grpuser@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '452 4.2.2',
  },
  {
    name: 'user whose project is over quota refused at RCPT with 452 4.2.2',
    to: 'prjfull@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '452 4.2.2',
  },
  {
    name: 'alias whose user is over quota refused at RCPT with 452 4.2.2',
    to: 'fullalias@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '452 4.2.2',
  },
  {
    name: 'virtual alias onto it refused at RCPT with 452 4.2.2',
    to: 'support@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '452 4.2.2',
  },
  {
    name: 'normal user delivered',
    to: 'under@example.test',
    bodyKiB: 4,
    declareSize: true,
    rcptCode: '250',
    dataCode: '250',
  },
  {
    name: 'too-large message refused at RCPT with 552 5.2.2',
    to: 'under@example.test',
    bodyKiB: 3000,
    declareSize: true,
    rcptCode: '552 5.2.2',
  },
  {
    name: 'message that does not fit refused at end of data',
    to: 'grace@example.test',
    bodyKiB: 60,
    declareSize: false,
    rcptCode: '250',
    dataCode: '452 4.2.2',
  },
  // Rate limit: SASL user "ratelimited" may send 2 per hour (XCLIENT LOGIN stands in for AUTH).
  {
    name: 'authenticated sender, 1st of 2 allowed',
    to: 'under@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '250',
    dataCode: '250',
    login: 'ratelimited',
  },
  {
    name: 'authenticated sender, 2nd of 2 allowed',
    to: 'under@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '250',
    dataCode: '250',
    login: 'ratelimited',
  },
  {
    name: 'authenticated sender over its limit deferred at RCPT',
    to: 'under@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '450 4.7.1',
    login: 'ratelimited',
  },
  // Volume: SASL user "volume" may send 7000 bytes per hour (volume_limits_by_id); "noquota" has no quota to get in the way.
  {
    name: 'volume-limited sender, 4 KiB counted at end of data',
    to: 'noquota@example.test',
    bodyKiB: 4,
    declareSize: false,
    rcptCode: '250',
    dataCode: '250',
    login: 'volume',
  },
  {
    name: 'volume-limited sender declaring 4 KiB more refused at RCPT',
    to: 'noquota@example.test',
    bodyKiB: 4,
    declareSize: true,
    rcptCode: '450 4.7.1',
    login: 'volume',
  },
  {
    name: 'volume-limited sender, 4 KiB more undeclared refused at end of data',
    to: 'noquota@example.test',
    bodyKiB: 4,
    declareSize: false,
    rcptCode: '250',
    dataCode: '450 4.7.1',
    login: 'volume',
  },
  {
    name: 'volume-limited sender, 1 KiB still fits',
    to: 'noquota@example.test',
    bodyKiB: 1,
    declareSize: false,
    rcptCode: '250',
    dataCode: '250',
    login: 'volume',
  },
];
