#!/bin/sh
# Starts, and on a fresh machine prepares, the servers the rate-limit tests
# use: PostgreSQL (role root, database test), MariaDB (database test; root by
# unix socket) and Redis on 127.0.0.1:6379, and empties the test databases
# (below). Safe to run again; run as root.
set -u
export PATH="$PATH:/usr/sbin:/usr/bin"
cluster=$(ls /etc/postgresql 2>/dev/null | head -1)
[ -n "$cluster" ] || { echo "start-test-services.sh: PostgreSQL is not installed (scripts/setup.sh --test)" >&2; exit 1; }
pg_isready -q 2>/dev/null || pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
mkdir -p /var/lib/redis /var/log/redis
redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || \
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null
mariadb-admin ping >/dev/null 2>&1 || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
ok=no
for i in $(seq 1 60); do
  if pg_isready -q && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && mariadb-admin ping >/dev/null 2>&1; then ok=yes; break; fi
  sleep 1
done
[ $ok = yes ] || { echo "start-test-services.sh: PostgreSQL, Redis or MariaDB did not come up" >&2; exit 1; }
# The role and databases the tests connect to (no-ops where they exist).
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='root'\"" | grep -q 1 || su postgres -c "createuser -s root"
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 || su postgres -c "createdb -O root test"
mariadb -e "CREATE DATABASE IF NOT EXISTS test"
# What the daemon itself (running as the service user) connects to in tests.
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='quotapolicy'\"" | grep -q 1 || su postgres -c "createuser quotapolicy"
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='quotapolicy_test'\"" | grep -q 1 || su postgres -c "createdb -O quotapolicy quotapolicy_test"
mariadb -e "CREATE DATABASE IF NOT EXISTS quotapolicy_test; CREATE USER IF NOT EXISTS quotapolicy@localhost IDENTIFIED VIA unix_socket; GRANT ALL ON quotapolicy_test.* TO quotapolicy@localhost"
# The test databases belong to the suite: emptied here, so that tables, triggers
# or a schema version left by another checkout (an older or newer quotapolicy)
# cannot decide this run. Redis: only the suite's own qp: keys, in database 0.
su postgres -c "dropdb --force test && createdb -O root test"
su postgres -c "dropdb --force quotapolicy_test && createdb -O quotapolicy quotapolicy_test"
mariadb -e "DROP DATABASE test; CREATE DATABASE test; DROP DATABASE quotapolicy_test; CREATE DATABASE quotapolicy_test; GRANT ALL ON quotapolicy_test.* TO quotapolicy@localhost"
redis-cli -h 127.0.0.1 -n 0 --scan --pattern 'qp:*' | xargs -r -n 500 redis-cli -h 127.0.0.1 -n 0 del >/dev/null
