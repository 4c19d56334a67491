// SECURITY: parses root's own command line for the helper. The quota path must
// be absolute; numbers must be plain decimal integers in range.
export interface HelperOptions { quotaPath: string; timeoutMs: number; minUid: number }

const NUMBER_OPTS = { '--timeout-ms': ['timeoutMs', 1, 600_000], '--min-uid': ['minUid', 1, 0xfffffffd] } as const;

/** Returns the options, or a message saying what is wrong. */
export function parseHelperArgs(argv: readonly string[], defaults: HelperOptions): HelperOptions | string {
  const opts = { ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i]!, argv[i + 1]];
    if (value === undefined) return `${flag} needs a value`;
    if (flag === '--quota-path') {
      if (!value.startsWith('/') || value.includes('\0')) return '--quota-path must be an absolute path';
      opts.quotaPath = value;
    } else if (flag in NUMBER_OPTS) {
      const [key, min, max] = NUMBER_OPTS[flag as keyof typeof NUMBER_OPTS];
      if (!/^\d{1,10}$/.test(value) || Number(value) < min || Number(value) > max) return `${flag} must be an integer from ${min} to ${max}`;
      opts[key] = Number(value);
    } else {
      return `unknown argument ${flag}`;
    }
  }
  return opts;
}
