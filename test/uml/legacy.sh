#!/bin/sh
# Guest init for test/uml-legacy.test.ts: the original quotapolicy's start-up
# (its Debian init script's start-stop-daemon command lines, word for word,
# with its defaults) against the installed copy, in sudo mode as the service
# user and as root. /usr, /etc and /var are overlays. Environment: OUT, REPO.
. "$(dirname "$0")/prelude.sh"
set -x
R=/run/out
useradd -M -d /home/hard -u 2003 -U hard && mkdir /home/hard && chown hard: /home/hard
setquota -u hard 100 200 10 20 /home
setpriv --reuid=hard --regid=hard --clear-groups dd if=/dev/zero of=/home/hard/fill bs=1024 count=300 conv=fsync 2>/dev/null
cd "$REPO" || finish 80
make install > $R/make-install.log 2>&1 || finish 81
cd /
# The original's /etc/default/quotapolicy defaults; DAEMON is where it installed itself.
ln -s /usr/sbin/quotapolicy /usr/local/bin/quotapolicy
DAEMON=/usr/local/bin/quotapolicy
DAEMON_HOMEDIR=/var/spool/postfix/quotapolicy
DAEMON_USER=quotapolicy
PIDFILE=quotapolicy.pid
SOCKET=quotapolicy.socket
QUOTAPATH=/usr/bin/quota
SUDOPATH=/usr/bin/sudo
POSTFIX_RECIPIENT_DELIMITER=+
TIMEOUT=15
# Its install: the homedir belongs to the service user.
install -d -o quotapolicy -g quotapolicy -m 0755 $DAEMON_HOMEDIR
start() {
  start-stop-daemon --pidfile "$DAEMON_HOMEDIR/$PIDFILE" --user "$DAEMON_USER" --chuid "$DAEMON_USER" \
    --startas "$DAEMON" --start -- --homedir "$DAEMON_HOMEDIR" --pidfile "$PIDFILE" --socketfile "$SOCKET" \
    --quotapath "$QUOTAPATH" --sudopath "$SUDOPATH" --recipient-delimiter "$POSTFIX_RECIPIENT_DELIMITER"
}
stop() { start-stop-daemon --pidfile "$DAEMON_HOMEDIR/$PIDFILE" --user "$DAEMON_USER" --stop --retry "$TIMEOUT"; }
status() { start-stop-daemon --pidfile "$DAEMON_HOMEDIR/$PIDFILE" --user "$DAEMON_USER" --status; }
# The daemon's own command line, as root (no --chuid).
as_root() {
  "$DAEMON" --homedir "$1" --pidfile "$PIDFILE" --socketfile "$SOCKET" \
    --quotapath "$QUOTAPATH" --sudopath "$SUDOPATH" --recipient-delimiter "$POSTFIX_RECIPIENT_DELIMITER"
}
q() { /usr/sbin/quotapolicy query --count --to "unix:$1/$SOCKET" hard@example.test; }

# 1. No sudoers drop-in yet: refused, naming it.
start > $R/nodropin.txt 2>&1; echo $? > $R/nodropin.rc
ls -A $DAEMON_HOMEDIR | grep -v '^quotapolicy.log$' > $R/nodropin-left.txt

# 2. With the drop-in: start, answer, status, second start, stop.
install -o root -g root -m 0440 "$REPO/sudoers.d/quotapolicy" /etc/sudoers.d/quotapolicy
# Its socket is 0660 group postfix (the original's was 0666): the service user must be in that group.
start > $R/nogroup.txt 2>&1; echo $? > $R/nogroup.rc
ls -A $DAEMON_HOMEDIR | grep -v "^quotapolicy.log$" > $R/nogroup-left.txt
usermod -a -G postfix quotapolicy
start > $R/start.txt 2>&1; echo $? > $R/start.rc
PID=$(cat $DAEMON_HOMEDIR/$PIDFILE)
ps -o pid=,sid=,user=,args= -p "$PID" > $R/ps-daemon.txt
ps -eo user=,args= | grep '[q]uotapolicy' > $R/ps-all.txt
stat -c '%U:%G %a %n' $DAEMON_HOMEDIR/$SOCKET $DAEMON_HOMEDIR/$PIDFILE > $R/modes.txt
q $DAEMON_HOMEDIR > $R/query.txt 2>&1
status; echo $? > $R/status-running.rc
start > $R/second.txt 2>&1; echo $? > $R/second.rc
stop > $R/stop.txt 2>&1; echo $? > $R/stop.rc
status; echo $? > $R/status-stopped.rc
ls -A $DAEMON_HOMEDIR > $R/after-stop.txt
ps -eo user=,args= | grep '[q]uotapolicy' > $R/ps-after-stop.txt
cp $DAEMON_HOMEDIR/quotapolicy.log $R/sudo-daemon.log

# 3. --debug: the original stayed in the foreground.
setpriv --reuid=quotapolicy --regid=quotapolicy --init-groups "$DAEMON" --homedir "$DAEMON_HOMEDIR" --debug > $R/debug.log 2>&1 &
DBG=$!
wait_connect $DAEMON_HOMEDIR/$SOCKET
# SIGTERM is handled once the front is ready (the socket accepts a little earlier).
while ! grep -q '"msg":"front ready"' $R/debug.log; do sleep 0.1; done
echo "$DBG $(cat $DAEMON_HOMEDIR/$PIDFILE)" > $R/debug-pids.txt
kill -TERM $DBG; wait $DBG; echo $? > $R/debug.rc

# 4. --sudopath is the sudo it runs: checked.
install -o quotapolicy -m 0755 /usr/bin/sudo /run/sudo-by-quotapolicy
SUDOPATH=/run/sudo-by-quotapolicy start > $R/badsudo.txt 2>&1; echo $? > $R/badsudo.rc

# 5. As root: the original's homedir (the service user's) is refused; a root-only one works.
as_root $DAEMON_HOMEDIR > $R/root-userdir.txt 2>&1; echo $? > $R/root-userdir.rc
install -d -o root -g root -m 0755 /run/qproot
as_root /run/qproot > $R/root-start.txt 2>&1; echo $? > $R/root-start.rc
ps -o pid=,sid=,user=,args= -p "$(cat /run/qproot/$PIDFILE)" > $R/root-ps.txt
q /run/qproot > $R/root-query.txt 2>&1
start-stop-daemon --pidfile /run/qproot/$PIDFILE --stop --retry "$TIMEOUT" > $R/root-stop.txt 2>&1; echo $? > $R/root-stop.rc
ls -A /run/qproot > $R/root-after-stop.txt
finish 0
