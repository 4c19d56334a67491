// What a Unix user or group name may be. Pure. The config check (user,
// socket_group, exempt_users, ...) and the recipient -> user mapping use this
// one test, so both sides agree on what a user name is.

/** Unix user names as useradd accepts them (NAME_REGEX), at most 32 characters. */
const UNIX_NAME = /^[a-z_][a-z0-9_.-]{0,31}\$?$/;

export function isUnixName(s: string): boolean {
  return UNIX_NAME.test(s);
}
