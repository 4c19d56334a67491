#!/bin/sh
# Boot user-mode-linux with a fresh ext4 quota image and run INIT inside.
# usage: boot.sh OUTDIR INIT [KEY=VALUE ...]   exit status = the guest's.
# UML_MEM (environment) sets the guest's memory (default 384M); UML_TIMEOUT the
# seconds after which the guest is killed and the status is 124 (default 200).
# OUTDIR (absolute) receives console.log and whatever the init writes there.
set -eu
out=$1; init=$2; shift 2
timeout=${UML_TIMEOUT:-200}
mkdir -p "$out"
img=$out/home.img
rm -f "$img"
mkfs.ext4 -q -F -O quota -E quotatype=usrquota:grpquota "$img" 64M
# A second, small file system with project quotas too (ext4 -O project): the
# prelude mounts it at /home/prj with user and project quotas enforced and
# group quotas counted but not enforced (the kernel refuses no write for them).
img2=$out/prj.img
rm -f "$img2"
mkfs.ext4 -q -F -I 256 -O quota,project -E quotatype=usrquota:grpquota:prjquota "$img2" 32M
# UML 6.1 cannot restore FPU state on hosts with AVX-512/AMX: see xstate-shim.c.
shim=$out/xstate-shim.so
cc -shared -fPIC -O2 -o "$shim" "$(dirname "$0")/xstate-shim.c" -ldl
set +e
LD_PRELOAD=$shim linux.uml mem="${UML_MEM:-384M}" ubd0="$img" ubd1="$img2" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet loglevel=0 \
  init="$init" OUT="$out" "$@" con=null con0=null,fd:1 </dev/null >"$out/kernel.log" 2>&1 &
uml=$!
# A hung guest must not hang the caller: past UML_TIMEOUT seconds, UML and all its host
# processes (UML makes itself a session leader, so they are its process group) are killed.
setsid sh -c 'sleep "$1"; echo "boot.sh: the guest ran over $1 s: killed" >>"$2"; kill -9 "-$3" "$3"' \
  watchdog "$timeout" "$out/kernel.log" "$uml" </dev/null >/dev/null 2>&1 &
watchdog=$!
wait "$uml"
rc=$?
kill -15 "-$watchdog" 2>/dev/null
grep -q "^boot.sh: the guest ran over" "$out/kernel.log" && rc=124
rm -f "$img" "$img2" "$shim"
exit $rc
