#!/bin/sh
# Guest init for test/uml-deb.test.ts: the Debian package's whole life on a
# system with Postfix and real kernel quotas: dpkg -i (the user created,
# nothing started: no systemd here), the daemon started with the unit's own
# ExecStart answers a real Postfix, an upgrade to a higher version keeps the
# edited config and the user, dpkg -r stops and removes it, dpkg -P leaves
# nothing. /usr, /etc and /var are overlays: the host stays untouched.
# Environment: OUT (holds old.deb and new.deb), REPO, OVERLAY_USR=1.
. "$(dirname "$0")/prelude.sh"
set -x
R=/run/out
mkuser() { useradd -M -d /home/$1 -u $2 -U -s /bin/sh $1 && mkdir /home/$1 && chown $1: /home/$1; }
mkuser hard 2003; setquota -u hard 100 200 10 20 /home
setpriv --reuid=hard --regid=hard --clear-groups dd if=/dev/zero of=/home/hard/fill bs=1024 count=300 conv=fsync 2>/dev/null
mkuser roomy 2004; setquota -u roomy 1000 2000 100 200 /home
# A machine that never had quotapolicy: the package must create its user itself.
userdel quotapolicy 2>/dev/null; groupdel quotapolicy 2>/dev/null
getent passwd quotapolicy > $R/user-before.txt

# Postfix as Debian ships it (chrooted smtpd), asking the package's default socket.
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
postconf -e 'myhostname = mx.example.test' 'mydestination = $myhostname, example.test, localhost' \
  'inet_interfaces = loopback-only' 'inet_protocols = ipv4' 'mynetworks = 127.0.0.0/8' \
  'maillog_file = /var/log/postfix.log' 'alias_maps =' 'alias_database =' \
  'smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:private/quotapolicy' \
  'smtpd_policy_service_default_action = 451 4.3.5 Policy service unavailable'
mkdir -p /var/spool/postfix/private
/usr/lib/postfix/sbin/master -w

# The RCPT TO reply Postfix gives for $1 (one SMTP session on loopback).
rcpt() {
  node -e '
    const s = require("net").connect(25, "127.0.0.1");
    const cmds = ["EHLO uml.test", "MAIL FROM:<a@example.org>", `RCPT TO:<${process.argv[1]}>`, "QUIT"];
    const replies = []; let buf = "";
    setTimeout(() => { console.log("timeout: " + replies.join(" | ")); process.exit(1); }, 30000).unref();
    s.on("data", (d) => {
      buf += d;
      for (let m; (m = /^\d{3} .*\r\n/m.exec(buf)); ) {
        replies.push(m[0].trim()); buf = buf.slice(m.index + m[0].length);
        const c = cmds.shift(); if (c) s.write(c + "\r\n");
      }
    });
    s.on("close", () => console.log(replies[3] ?? "no RCPT reply: " + replies.join(" | ")));' "$1"
}
# The unit's own command line, as systemd would run it (ExecStart= of the installed unit).
start_unit_command() {
  cmd=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/quotapolicy.service)
  echo "$cmd" > $R/execstart.txt
  $cmd >> $R/daemon.log 2>&1 &
  daemon=$!
  # Fails fast when the daemon exits instead of answering.
  for _ in $(seq 1 300); do
    wait_connect_once && return 0
    kill -0 $daemon 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
wait_connect_once() {
  node -e 'require("net").connect(process.argv[1]).on("connect", () => process.exit(0)).on("error", () => process.exit(1))' \
    /var/spool/postfix/private/quotapolicy 2>/dev/null
}
alive() { [ -f /run/quotapolicy/quotapolicy.pid ] && kill -0 "$(cat /run/quotapolicy/quotapolicy.pid)" 2>/dev/null && echo alive || echo stopped; }

# The guest sees the host's /var through its overlay: a socket file a daemon on the host left
# there would look like one this package started. Removed in the overlay only (the host keeps it).
rm -f /var/spool/postfix/private/quotapolicy

# 1. Install.
date +%T
dpkg -i $R/old.deb > $R/install.log 2>&1; echo $? > $R/install.rc
getent passwd quotapolicy > $R/user-after-install.txt
getent group quotapolicy > $R/group-after-install.txt
stat -c '%U:%G %a %n' /etc/quotapolicy /etc/quotapolicy/quotapolicy.yaml /var/lib/quotapolicy /usr/lib/quotapolicy \
  /usr/lib/quotapolicy/quotapolicy-helper > $R/modes.txt 2>&1
readlink /etc/systemd/system/sockets.target.wants/quotapolicy.socket > $R/enabled.txt 2>&1
{ ps -eo args | grep -c '^quotapolicy' ; [ -e /var/spool/postfix/private/quotapolicy ] && echo socket || echo no-socket; } > $R/started-by-install.txt
dpkg-query -W -f='${Conffiles}\n' quotapolicy > $R/conffiles.txt
man -w quotapolicy quotapolicy.yaml > $R/man-paths.txt 2>&1
# -l: rendered from the file, so man-db writes no cat page to /var/cache/man.
for page in $(cat $R/man-paths.txt); do MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null; done > $R/man-warnings.txt
find /usr/lib/quotapolicy -perm /022 ! -type l > $R/writable-by-others.txt

# 2. The admin edits the config (a pid file, for stopping without systemd, and
# a refusal text of their own), then starts the unit's command line.
# The pid file's directory: root's alone (the daemon refuses one others can write).
install -d -m 0755 /run/quotapolicy
cat >> /etc/quotapolicy/quotapolicy.yaml <<YAML
pid_file: /run/quotapolicy/quotapolicy.pid
actions:
  over_quota: "452 4.2.2 Mailbox full (edited config)"
YAML
cp /etc/quotapolicy/quotapolicy.yaml $R/edited.yaml
start_unit_command
quotapolicy query --count hard@example.test > $R/query-old.txt 2>&1
rcpt hard@example.test > $R/rcpt-hard-old.txt
rcpt roomy@example.test > $R/rcpt-roomy-old.txt
ps -eo user,args | grep '[q]uotapolicy:' > $R/ps-old.txt

date +%T
# 3. Upgrade to a rebuilt package with a higher version.
id -u quotapolicy > $R/uid-before-upgrade.txt
dpkg -i $R/new.deb > $R/upgrade.log 2>&1; echo $? > $R/upgrade.rc
dpkg-query -W -f='${Version} ${Status}\n' quotapolicy > $R/version-after-upgrade.txt
id -u quotapolicy > $R/uid-after-upgrade.txt
cmp /etc/quotapolicy/quotapolicy.yaml $R/edited.yaml > $R/config-kept.txt 2>&1; echo $? >> $R/config-kept.txt
ls /etc/quotapolicy > $R/etc-after-upgrade.txt
stat -c '%U:%G %a %n' /etc/quotapolicy/quotapolicy.yaml >> $R/etc-after-upgrade.txt
# Without systemd nothing restarts it: the admin does, on the new code.
start-stop-daemon --stop --quiet --retry TERM/30 --pidfile /run/quotapolicy/quotapolicy.pid --exec /usr/bin/node
start_unit_command
rcpt hard@example.test > $R/rcpt-hard-new.txt
rcpt roomy@example.test > $R/rcpt-roomy-new.txt
alive > $R/alive-before-remove.txt

date +%T
# 4. Remove: stops the daemon, removes the code; config and user stay.
dpkg -r quotapolicy > $R/remove.log 2>&1; echo $? > $R/remove.rc
sleep 0.5
alive > $R/alive-after-remove.txt
{ [ -e /var/spool/postfix/private/quotapolicy ] && echo socket || echo no-socket; } >> $R/alive-after-remove.txt
ls -d /usr/lib/quotapolicy /usr/sbin/quotapolicy /lib/systemd/system/quotapolicy.service /lib/systemd/system/quotapolicy.socket \
  /usr/share/man/man8/quotapolicy.8.gz > $R/left-after-remove.txt 2>/dev/null
ls /etc/quotapolicy > $R/config-after-remove.txt 2>&1
getent passwd quotapolicy > $R/user-after-remove.txt
rcpt hard@example.test > $R/rcpt-hard-removed.txt

date +%T
# 5. Purge: nothing left but what policy allows. Everything dpkg and the
# scripts wrote went to the overlays' upper layers: list what names quotapolicy.
dpkg -P quotapolicy > $R/purge.log 2>&1; echo $? > $R/purge.rc
getent passwd quotapolicy > $R/user-after-purge.txt
getent group quotapolicy >> $R/user-after-purge.txt
dpkg-query -W quotapolicy > $R/dpkg-after-purge.txt 2>&1
find /run/ov/*/upper -name '*quotapolicy*' ! -type c > $R/left-after-purge.txt
find /etc/systemd -name '*quotapolicy*' >> $R/left-after-purge.txt

cp /var/log/postfix.log $R/postfix.log 2>/dev/null
postfix stop 2>/dev/null
finish 0
