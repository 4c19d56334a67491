#!/bin/sh
# One-step set-up on a fresh Debian machine (as root):
#   scripts/setup.sh          what the daemon needs: Node.js (if missing), quota,
#                             Postfix, build tools (dpkg-dev for make deb);
#                             npm ci; build; service user
#   scripts/setup.sh --test   the same, plus what the test suite needs:
#                             user-mode-linux (real kernel quotas; gcc builds its
#                             ptrace shim, test/uml/xstate-shim.c), kmod, iproute2,
#                             sudo and systemd's tools (deployment tests),
#                             strace, procps and bsdutils' script (root
#                             boundary tests: what root loads, ttys),
#                             PostgreSQL, MariaDB, Redis (rate-limit store tests,
#                             started by scripts/start-test-services.sh),
#                             pgbouncer (the store through it: the test starts
#                             its own on port 6437), redis-sentinel (the
#                             failover test starts its own) and
#                             policyd-rate-limit (the differential test),
#                             dovecot-core and postfwd (benchmark comparators),
#                             lintian, man-db and groff-base (the package and
#                             man-page checks)
# Safe to run again. Postfix is installed unconfigured ("No configuration").
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (sudo scripts/setup.sh)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
SERVICE_USER=quotapolicy

pkgs="quota postfix ca-certificates make g++ python3 dpkg-dev"
[ "${1:-}" = "--test" ] && pkgs="$pkgs user-mode-linux gcc kmod iproute2 e2fsprogs util-linux sudo systemd \
  strace procps bsdutils \
  postgresql pgbouncer mariadb-server redis-server redis-tools redis-sentinel policyd-rate-limit openssl \
  dovecot-core postfwd lintian man-db groff-base"
# Debian 13 ships Node 20.19; an existing node (>= 20.19) is kept as it is.
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $pkgs >/dev/null

node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a < 20 || (a === 20 && b < 19)) { console.error(`setup.sh: Node ${process.versions.node} is too old; quotapolicy needs >= 20.19`); process.exit(1); }'

getent passwd "$SERVICE_USER" >/dev/null || \
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$SERVICE_USER"
# Postfix's chrooted smtpd reaches the default socket as unix:private/quotapolicy.
[ -d /var/spool/postfix/private ] || install -d -o postfix -g root -m 0700 /var/spool/postfix/private

npm ci --no-audit --no-fund
npm run build
[ "${1:-}" = "--test" ] && scripts/start-test-services.sh
echo "setup.sh: done"
