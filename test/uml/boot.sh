#!/bin/sh
# Boot user-mode-linux with a fresh ext4 quota image and run INIT inside.
# usage: boot.sh OUTDIR INIT [KEY=VALUE ...]   exit status = the guest's.
# OUTDIR (absolute) receives console.log and whatever the init writes there.
set -eu
out=$1; init=$2; shift 2
mkdir -p "$out"
img=$out/home.img
rm -f "$img"
mkfs.ext4 -q -F -O quota -E quotatype=usrquota:grpquota "$img" 64M
set +e
linux.uml mem=384M ubd0="$img" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet loglevel=0 \
  init="$init" OUT="$out" "$@" con=null con0=null,fd:1 </dev/null >"$out/kernel.log" 2>&1
rc=$?
rm -f "$img"
exit $rc
