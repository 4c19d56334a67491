#!/bin/sh
# What one quota cache miss costs in user-mode-linux (docs/BENCHMARKS.md,
# "Quota cache miss (issue 13)"): the wall time of each process a miss may
# run, alone, for one id and for a batch, with the guest's two quota file
# systems and with /home alone. Not part of `npm run bench`; run by hand:
#   test/uml/boot.sh /tmp/probe "$PWD/bench/uml-miss-probe.sh" REPO="$PWD"
#   cat /tmp/probe/probe.txt
. "$REPO/test/uml/prelude.sh"
N=300
i=0
while [ $i -lt $N ]; do
  echo "u$i:x:$((3000 + i)):$((3000 + i))::/home/u$i:/bin/sh" >> /etc/passwd
  echo "u$i:x:$((3000 + i)):" >> /etc/group
  mkdir -p /home/u$i && chown $((3000 + i)):$((3000 + i)) /home/u$i
  echo "u$i 1000 2000 0 0"
  i=$((i + 1))
done | setquota -u -b /home
now() { cut -d' ' -f1 /proc/uptime; }
# time LABEL REPS CMD...: the mean wall time of one run, in ms
t() {
  label=$1; reps=$2; shift 2
  a=$(now); k=0
  while [ $k -lt "$reps" ]; do "$@" > /dev/null 2>&1; k=$((k + 1)); done
  b=$(now)
  awk -v l="$label" -v a="$a" -v b="$b" -v n="$reps" 'BEGIN { printf "%s: %.1f ms\n", l, (b - a) * 1000 / n }' >> /run/out/probe.txt
}
Q="-w -p -v --show-mntpoint --hide-device"
ids() { seq $((3000 + $1)) $((3000 + $1 + $2 - 1)); }
names() { for k in $(seq "$1" $(($1 + $2 - 1))); do echo "u$k"; done; }
{ echo "cpus: $(nproc)"; grep -E ' /home' /proc/mounts; } > /run/out/probe.txt
for pass in two-fs home-only; do
  echo "-- $pass" >> /run/out/probe.txt
  t "true (a process start)" 10 /bin/true
  # The same process start made by a Node process (the helper's case: fork of a larger process).
  a=$(now)
  node -e 'const {spawnSync}=require("child_process");for(let i=0;i<10;i++)spawnSync("/bin/true")'
  b=$(now)
  t0=$(now); node -e 0; t1=$(now)
  awk -v a="$a" -v b="$b" -v c="$t0" -v d="$t1" 'BEGIN { printf "true, spawned by node (10 in one node): %.1f ms\n", ((b - a) - (d - c)) * 1000 / 10 }' >> /run/out/probe.txt
  t "quota -u, 1 id" 10 quota $Q -u -- 3001
  t "quota -u, 8 ids" 5 quota $Q -u -- $(ids 1 8)
  t "quota -u, 32 ids" 5 quota $Q -u -- $(ids 1 32)
  t "quota -g, 1 id" 10 quota $Q -g -- 3001
  t "quota -g, 32 ids" 5 quota $Q -g -- $(ids 1 32)
  t "getent passwd, 1 name" 10 getent passwd -- u1
  t "getent passwd, 32 names" 5 getent passwd -- $(names 1 32)
  t "lsattr -p -d, 1 dir" 10 lsattr -p -d -- /home/u1
  t "repquota -u -n -p /home ($N users)" 5 repquota -u -n -p /home
  t "repquota -u -g -n -p /home" 5 repquota -u -g -n -p /home
  umount /home/prj
done
finish 0
