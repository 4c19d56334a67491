#!/bin/sh
# Guest init for test/uml.test.ts: real kernel quotas, the real quota(1), the
# real daemon as root with real privilege separation, and a real Postfix.
# Environment (from the kernel command line): OUT, REPO.
. "$(dirname "$0")/prelude.sh"
set -x
mkuser() { useradd -M -d /home/$1 -u $2 -U -s /bin/sh $1 && mkdir /home/$1 && chown $1: /home/$1; }
fill() { setpriv --reuid=$1 --regid=$1 --clear-groups dd if=/dev/zero of=/home/$1/fill$2 bs=1024 count=$2 conv=fsync 2>/dev/null; }
mkuser under 2001;   setquota -u under 1000 2000 100 200 /home;  fill under 10
mkuser grace 2002;   setquota -u grace 100 200 10 20 /home;      fill grace 150
mkuser hard 2003;    setquota -u hard 100 200 10 20 /home;       fill hard 300
mkuser files 2004;   setquota -u files 1000 2000 3 5 /home
for i in 1 2 3 4 5 6; do setpriv --reuid=files --regid=files --clear-groups touch /home/files/x$i 2>/dev/null; done
mkuser expired 2005; setquota -u expired 100 200 10 20 /home;    fill expired 150; setquota -T -u expired 1 1 /home
mkuser noquota 2006; fill noquota 5
# Group quotas (issue 14.1). fillas UID GID FILE KiB: a write as that user and group, stopped by any full quota.
fillas() { setpriv --reuid=$1 --regid=$2 --clear-groups dd if=/dev/zero of=$3 bs=1024 count=$4 conv=fsync 2>/dev/null; }
# grpuser's own quota is fine; its primary group web (shared hosting) is full, filled by grpfiller.
groupadd -g 3001 web
useradd -M -d /home/grpuser -u 2007 -g web -s /bin/sh grpuser && mkdir /home/grpuser && chown grpuser:web /home/grpuser
useradd -M -d /home/grpfiller -u 2008 -g web -s /bin/sh grpfiller && mkdir /home/grpfiller && chown grpfiller:web /home/grpfiller
setquota -u grpuser 1000 2000 100 200 /home; setquota -g web 100 200 10 20 /home; fillas 2008 3001 /home/grpfiller/fill 300
# Group grace: soft limit passed, grace running (grpgrace) or expired (grpexpired); the users have no quota of their own.
mkuser grpgrace 2009;   setquota -g grpgrace 100 200 10 20 /home;   fill grpgrace 150
mkuser grpexpired 2010; setquota -g grpexpired 100 200 10 20 /home; fill grpexpired 150; setquota -T -g grpexpired 1 1 /home
# Group quotas off: /home/prj counts group usage but does not enforce it (prelude.sh), so a full group there is not consulted.
groupadd -g 3004 offgrp
useradd -M -d /home/prj/grpoff -u 2011 -g offgrp -s /bin/sh grpoff && mkdir /home/prj/grpoff && chown grpoff:offgrp /home/prj/grpoff
setquota -u grpoff 1000 2000 100 200 /home/prj; setquota -g offgrp 100 200 10 20 /home/prj; fillas 2011 3004 /home/prj/grpoff/fill 300
# Project quotas: prjfull's home on /home/prj is project 42 (inherited by what is made in it), which is full;
# its own quota there is fine. The front reads the id with lsattr -p as the service user.
useradd -M -d /home/prj/prjfull -u 2012 -U -s /bin/sh prjfull && mkdir /home/prj/prjfull && chown prjfull: /home/prj/prjfull
chattr -p 42 +P /home/prj/prjfull
setquota -u prjfull 1000 2000 100 200 /home/prj; setquota -P 42 100 200 10 20 /home/prj; fillas 2012 2012 /home/prj/prjfull/fill 300
sleep 2   # let the expired user's 1 s grace run out
repquota -u /home > /run/out/repquota.txt 2>&1
repquota -g /home /home/prj > /run/out/repquota-g.txt 2>&1
repquota -P /home/prj > /run/out/repquota-p.txt 2>&1

# Postfix, chrooted smtpd as Debian ships it, policy socket in its spool.
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
postconf -e 'myhostname = mx.example.test' 'mydestination = $myhostname, example.test, localhost' \
  'inet_interfaces = loopback-only' 'inet_protocols = ipv4' 'mynetworks = 127.0.0.0/8' \
  'maillog_file = /var/log/postfix.log' 'home_mailbox = Maildir/' 'recipient_delimiter = +' \
  'smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:private/quotapolicy' \
  'smtpd_end_of_data_restrictions = check_policy_service unix:private/quotapolicy' \
  'smtpd_policy_service_default_action = 451 4.3.5 Policy service unavailable' \
  'alias_maps = hash:/etc/aliases' 'alias_database = hash:/etc/aliases' 'virtual_alias_maps = hash:/etc/postfix/virtual' \
  'smtpd_authorized_xclient_hosts = 127.0.0.0/8' 'smtpd_sasl_auth_enable = yes'
mkdir -p /var/spool/postfix/private
# Real maps for the alias cases (test/uml/cases.ts): aliases(5), nested, and a virtual alias onto them.
printf 'postmaster: root\nfullalias: hard\nteam: hard, under\nnested: fullalias\n' > /etc/aliases
printf 'support@example.test nested\n' > /etc/postfix/virtual
postalias /etc/aliases && postmap /etc/postfix/virtual

install -d -o quotapolicy -g quotapolicy -m 0750 /run/qp-rl
cat > /run/quotapolicy.yaml <<YAML
listen: ["unix:/var/spool/postfix/private/quotapolicy"]
socket_group: postfix
checks: [quota, rate_limit]
actions:
  grace: "PREPEND X-Quota-Warning: mailbox over its soft quota"
rate_limit:
  sqlite_path: /run/qp-rl/rl.sqlite3
  limits: [[1000, 60]]
  limits_by_id:
    ratelimited: [[2, 3600]]
  volume_limits_by_id:
    volume: [[7000, 3600]]
YAML
chmod 644 /run/quotapolicy.yaml
# The same daemon config with group quotas turned off, for `quotapolicy check`.
echo 'quota_kinds: [user]' > /run/quotapolicy-user.yaml; chmod 644 /run/quotapolicy-user.yaml
node "$REPO/bin/quotapolicy.js" serve --config /run/quotapolicy.yaml > /run/out/daemon.log 2>&1 &
wait_connect /var/spool/postfix/private/quotapolicy
ls -l /var/spool/postfix/private/quotapolicy > /run/out/socket.txt
/usr/lib/postfix/sbin/master -w
node "$REPO/bin/quotapolicy.js" check hard@example.test > /run/out/check-hard.txt 2>&1
node "$REPO/bin/quotapolicy.js" check under@example.test --size 3072000 > /run/out/check-under-big.txt 2>&1
node "$REPO/bin/quotapolicy.js" check grpuser@example.test > /run/out/check-grpuser.txt 2>&1
node "$REPO/bin/quotapolicy.js" check --config /run/quotapolicy-user.yaml grpuser@example.test > /run/out/check-grpuser-kinds-user.txt 2>&1
node "$REPO/bin/quotapolicy.js" check prjfull@example.test > /run/out/check-prjfull.txt 2>&1
# Privilege proof: the service user (what the front runs as) cannot read another user's quota.
setpriv --reuid=quotapolicy --regid=quotapolicy --clear-groups /usr/bin/quota -w -p -v --show-mntpoint --hide-device -u -- 2003 \
  > /run/out/front-quota.stdout 2> /run/out/front-quota.stderr; echo $? > /run/out/front-quota.rc
node "$REPO/dist/test/uml/probe.js" /var/spool/postfix/private/quotapolicy /run/out
rc=$?
cp /var/log/postfix.log /run/out/postfix.log 2>/dev/null
postfix stop 2>/dev/null
kill %1 2>/dev/null; sleep 0.5
finish $rc
