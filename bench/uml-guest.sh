#!/bin/sh
# Guest init for scenario (b) of `npm run bench` (bench/uml.ts boots it):
# bench/uml-load.ts makes USERS local users with real kernel quotas on /home (a
# few of them over quota), then measures quotapolicy (cache off: every request
# runs the real quota(1)) and Dovecot quota-status (fs backend) in this boot.
# Environment (kernel command line): OUT, REPO, USERS, SECONDS, WARMUP.
. "$REPO/test/uml/prelude.sh"
echo "uml-guest: booted, $(cut -d' ' -f1 /proc/uptime) s"
node "$REPO/dist/bench/uml-load.js" /run/out "$USERS" "$SECONDS" "$WARMUP" > /run/out/load.log 2>&1
rc=$?
cp /run/dovecot-fs/dovecot.log /run/out/dovecot.log 2>/dev/null
echo "uml-guest: done ($rc), $(cut -d' ' -f1 /proc/uptime) s"
finish $rc
