#!/bin/sh
# Boot user-mode-linux with a fresh ext4 quota image and run INIT inside.
# usage: boot.sh OUTDIR INIT [KEY=VALUE ...]   exit status = the guest's.
# UML_MEM (environment) sets the guest's memory (default 384M).
# OUTDIR (absolute) receives console.log and whatever the init writes there.
set -eu
out=$1; init=$2; shift 2
mkdir -p "$out"
img=$out/home.img
rm -f "$img"
mkfs.ext4 -q -F -O quota -E quotatype=usrquota:grpquota "$img" 64M
# UML 6.1 cannot restore FPU state on hosts with AVX-512/AMX: see xstate-shim.c.
shim=$out/xstate-shim.so
cc -shared -fPIC -O2 -o "$shim" "$(dirname "$0")/xstate-shim.c" -ldl
set +e
LD_PRELOAD=$shim linux.uml mem="${UML_MEM:-384M}" ubd0="$img" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet loglevel=0 \
  init="$init" OUT="$out" "$@" con=null con0=null,fd:1 </dev/null >"$out/kernel.log" 2>&1
rc=$?
rm -f "$img" "$shim"
exit $rc
