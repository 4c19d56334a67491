#!/bin/sh
# Guest init for test/uml-install.test.ts: make install -> start -> answer ->
# uninstall, in both deployment modes (root helper; sudo mode as the service
# user), with the real quota(1) on real kernel quotas. /usr, /etc and /var are
# overlays: the host stays untouched. Environment: OUT, REPO, OVERLAY_USR=1.
. "$(dirname "$0")/prelude.sh"
set -x
R=/run/out
useradd -M -d /home/hard -u 2003 -U hard && mkdir /home/hard && chown hard: /home/hard
setquota -u hard 100 200 10 20 /home
setpriv --reuid=hard --regid=hard --clear-groups dd if=/dev/zero of=/home/hard/fill bs=1024 count=300 conv=fsync 2>/dev/null

cd "$REPO" || finish 80
make install SUDOERS=yes > $R/make-install.log 2>&1; echo $? > $R/make-install.rc
stat -c '%U:%G %a %n' /usr/lib/quotapolicy /usr/lib/quotapolicy/dist /usr/lib/quotapolicy/quotapolicy-helper \
  /etc/quotapolicy /etc/quotapolicy/quotapolicy.yaml /etc/sudoers.d/quotapolicy > $R/install-modes.txt 2>&1
find /usr/lib/quotapolicy -perm /022 ! -type l > $R/writable-by-others.txt
cd /
# The installed units, with systemd's own targets and slices only (other packages' units would add noise).
mkdir -p /run/unitcheck && cp /etc/systemd/system/quotapolicy* /lib/systemd/system/*.target /lib/systemd/system/*.slice /run/unitcheck/
SYSTEMD_UNIT_PATH=/run/unitcheck systemd-analyze verify /run/unitcheck/quotapolicy.socket /run/unitcheck/quotapolicy.service \
  /run/unitcheck/quotapolicy-clean.service /run/unitcheck/quotapolicy-clean.timer > $R/verify.out 2> $R/verify.err
echo $? > $R/verify.rc

# Root mode, installed copy, default config (socket in Postfix's spool).
/usr/sbin/quotapolicy serve > $R/root-mode.log 2>&1 &
ROOTPID=$!
wait_connect /var/spool/postfix/private/quotapolicy
/usr/sbin/quotapolicy query --count hard@example.test > $R/root-query.txt 2>&1
/usr/sbin/quotapolicy query --count under-nobody@example.test >> $R/root-query.txt 2>&1
kill -TERM $ROOTPID; wait $ROOTPID; echo $? > $R/root-mode.rc

# Root mode as quotapolicy.service confines it: socket from systemd (here
# systemd-socket-activate), capabilities cut to CapabilityBoundingSet, no new privileges.
systemd-socket-activate -l /run/qp-caps.sock --fdname=policy \
  setpriv --bounding-set=-all,+setuid,+setgid,+sys_admin,+kill --inh-caps=-all --no-new-privs \
  /usr/sbin/quotapolicy serve > $R/caps-mode.log 2>&1 &
CAPSPID=$!
# Wait for the front (bounded): on a slow host a cold start in the guest takes
# several seconds, and query gives up after 15 s.
for _ in $(seq 1 600); do grep -q '"front ready"' $R/caps-mode.log 2>/dev/null && break; sleep 0.1; done
/usr/sbin/quotapolicy query --count --to unix:/run/qp-caps.sock hard@example.test > $R/caps-query.txt 2>&1
grep -E '^Cap(Eff|Bnd)' /proc/$CAPSPID/status > $R/caps-status.txt
# Reload (the unit's ExecReload) and stop reach the front through the helper.
kill -HUP $CAPSPID; sleep 1
/usr/sbin/quotapolicy query --count --to unix:/run/qp-caps.sock hard@example.test >> $R/caps-query.txt 2>&1
kill -TERM $CAPSPID; wait $CAPSPID; echo $? > $R/caps-mode.rc

# Sudo mode: started as the service user; the helper comes through sudo -n.
install -d -o quotapolicy -g quotapolicy -m 0755 /run/qp
cat > /run/qp/sudo.yaml <<YAML
privilege_mode: sudo
listen: ["unix:/run/qp/policy.sock"]
socket_group: quotapolicy
pid_file: /run/qp/quotapolicy.pid
YAML
chmod 644 /run/qp/sudo.yaml
AS_SVC="setpriv --reuid=quotapolicy --regid=quotapolicy --init-groups"
$AS_SVC /usr/sbin/quotapolicy serve --config /run/qp/sudo.yaml > $R/sudo-mode.log 2>&1 &
SUDOPID=$!
wait_connect /run/qp/policy.sock
sleep 0.5
ps -eo user,args > $R/sudo-ps.txt
$AS_SVC /usr/sbin/quotapolicy query --count --to unix:/run/qp/policy.sock hard@example.test > $R/sudo-query.txt 2>&1
$AS_SVC /usr/sbin/quotapolicy serve --config /run/qp/sudo.yaml > $R/sudo-second.log 2>&1; echo $? > $R/sudo-second.rc
$AS_SVC sudo -n /usr/bin/id > $R/sudo-other.txt 2>&1; echo $? > $R/sudo-other.rc
$AS_SVC sudo -n /usr/lib/quotapolicy/quotapolicy-helper --quota-path /bin/sh > $R/sudo-args.txt 2>&1 </dev/null; echo $? > $R/sudo-args.rc
kill -TERM $SUDOPID; wait $SUDOPID; echo $? > $R/sudo-mode.rc
[ -e /run/qp/quotapolicy.pid ] && echo present > $R/pidfile-after.txt || echo gone > $R/pidfile-after.txt

cd "$REPO"
make uninstall > $R/make-uninstall.log 2>&1; echo $? > $R/make-uninstall.rc
ls -d /usr/lib/quotapolicy /usr/sbin/quotapolicy /etc/systemd/system/quotapolicy.service /etc/systemd/system/quotapolicy.socket \
  /etc/systemd/system/quotapolicy-clean.service /etc/systemd/system/quotapolicy-clean.timer /etc/sudoers.d/quotapolicy > $R/left-after-uninstall.txt 2>/dev/null
finish 0
