#!/bin/sh
# Stand-in for quota(1), for plumbing tests only (acceptance uses the real one).
# Appends its argv to $DIR/argv.log, one line per run, then prints $DIR/UID.out
# for each uid (a "#UID" block with zero limits when absent); with -g, $DIR/gGID.out
# for each gid (a "#GID" group block with zero limits when absent). $DIR/mode picks a
# misbehaviour: sleep (hang), slow (answers after 0.5 s), stderr, garbage, exit3,
# empty (no output at all, as when no file system has quotas on).
DIR=$(dirname "$0")/fake-quota.d
printf '%s\n' "$*" >> "$DIR/argv.log"
mode=$(cat "$DIR/mode" 2>/dev/null)
case "$mode" in
  sleep) exec sleep 30 ;;
  slow) sleep 0.5 ;;
  stderr) echo "quota: error while getting quota from nfs:/export for 1" >&2; exit 1 ;;
  garbage) echo "this is not quota output"; exit 0 ;;
  exit3) exit 3 ;;
  empty) exit 0 ;;
esac
seen=0; rc=0; kind=user; k=u; pre=
for a in "$@"; do
  [ "$a" = "-g" ] && { kind=group; k=g; pre=g; }
  [ "$a" = "--" ] && { seen=1; continue; }
  [ $seen = 1 ] || continue
  if [ -f "$DIR/$pre$a.out" ]; then cat "$DIR/$pre$a.out"; grep -q '\*' "$DIR/$pre$a.out" && rc=1
  else
    printf "Disk quotas for $kind #%s (${k}id %s): \n     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n          /home       0       0       0       0       0       0       0       0\n" "$a" "$a"
  fi
done
exit $rc
