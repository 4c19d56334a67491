#!/bin/sh
# Guest init for test/uml-warnings.test.ts: quota warnings with real kernel
# quotas, the real daemon as root and a real Postfix delivering to Maildirs.
# A user at 85% of a hard block limit gets mail through SMTP; the probe
# (warnings-probe.ts) records the SMTP replies and the Maildirs, before and
# after a restart of the daemon. Environment (kernel command line): OUT, REPO.
. "$(dirname "$0")/prelude.sh"
set -x
mkuser() { useradd -M -d /home/$1 -u $2 -U -s /bin/sh $1 && mkdir /home/$1 && chown $1: /home/$1; }
fill() { setpriv --reuid=$1 --regid=$1 --clear-groups dd if=/dev/zero of=/home/$1/fill bs=1024 count=$2 conv=fsync 2>/dev/null; }
# warn: 850 of a 1000 KiB hard limit (85%); calm: 10 of 1000.
mkuser warn 2101; setquota -u warn 0 1000 0 0 /home; fill warn 850
mkuser calm 2102; setquota -u calm 0 1000 0 0 /home; fill calm 10
repquota -u /home > /run/out/repquota.txt 2>&1

cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
postconf -e 'myhostname = mx.example.test' 'mydestination = $myhostname, example.test, localhost' \
  'myorigin = example.test' 'inet_interfaces = loopback-only' 'inet_protocols = ipv4' 'mynetworks = 127.0.0.0/8' \
  'maillog_file = /var/log/postfix.log' 'home_mailbox = Maildir/' 'recipient_delimiter = +' \
  'smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:private/quotapolicy' \
  'smtpd_end_of_data_restrictions = check_policy_service unix:private/quotapolicy' \
  'smtpd_policy_service_default_action = 451 4.3.5 Policy service unavailable' 'alias_maps =' 'alias_database ='
mkdir -p /var/spool/postfix/private
/usr/lib/postfix/sbin/master -w

# state_path's directory does not exist: serve creates it, as for rate_limit.sqlite_path.
rm -rf /var/lib/quotapolicy
cat > /run/quotapolicy.yaml <<YAML
listen: ["unix:/var/spool/postfix/private/quotapolicy"]
socket_group: postfix
quota_warnings:
  thresholds: [80, 90]
  notify: true
  notify_from: postmaster@example.test
  notify_subject: "Your mailbox is nearly full"
YAML
chmod 644 /run/quotapolicy.yaml
start() {
  node "$REPO/bin/quotapolicy.js" serve --config /run/quotapolicy.yaml >> /run/out/daemon.log 2>&1 &
  daemon=$!
  wait_connect /var/spool/postfix/private/quotapolicy
}
start
node "$REPO/dist/test/uml/warnings-probe.js" before /run/out
rc=$?
stat -c '%U %a' /var/lib/quotapolicy > /run/out/state-dir.txt
# A restart: the state file must remember that warn was told.
kill -TERM $daemon; wait $daemon
start
[ $rc = 0 ] && { node "$REPO/dist/test/uml/warnings-probe.js" after /run/out; rc=$?; }
cp /var/log/postfix.log /run/out/postfix.log 2>/dev/null
postfix stop 2>/dev/null
kill -TERM $daemon 2>/dev/null; sleep 0.5
finish $rc
