#!/bin/sh
# Sourced by every user-mode-linux init script (runs as PID 1, as root, on the
# host's / through hostfs). It makes the guest safe for the host: /etc and /var
# are overlays whose writes go to tmpfs, /tmp and /var/tmp are the guest's own
# tmpfs, and the only host directory written to is $OUT (bind-mounted at /run/out).
# After sourcing: /home is a fresh ext4 file system with user and group quotas
# enforced, /home/prj a second one with user and project quotas enforced (group
# quotas only counted; left unmounted with PRJ_FS=0 on the kernel command line), the checkout $REPO (if given) is at its own path, read-only, wherever
# it is, loopback is up, and finish STATUS powers the guest off.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /run/out
mount --bind "$OUT" /run/out
exec >>/run/out/console.log 2>&1

finish() {
  echo "$1" > /proc/exitcode
  sync
  poweroff -f
}

mods=/usr/lib/uml/modules/$(uname -r)/kernel/fs
insmod "$mods/quota/quota_tree.ko" || finish 90
insmod "$mods/quota/quota_v2.ko" || finish 91
insmod "$mods/overlayfs/overlay.ko" || finish 92

# The checkout ($REPO: /tmp, /var/tmp, /home/USER, /root, anywhere) is held at
# /run/repo before the mounts below can hide it. A path the guest mounts its own
# file system on, or inside /run, /proc, /sys or /dev, cannot be put back.
if [ -n "${REPO:-}" ]; then
  real=$(realpath -e "$REPO") && [ -d "$real" ] || { echo "prelude: REPO=$REPO: no such directory"; finish 95; }
  case "$real" in
    / | /etc | /usr | /var | /tmp | /var/tmp | /home | /run | /run/* | /proc | /proc/* | /sys | /sys/* | /dev | /dev/*)
      echo "prelude: REPO=$REPO ($real) would hide or be hidden by the guest's own mounts: use a checkout elsewhere"
      finish 95 ;;
  esac
  mkdir -p /run/repo && mount --bind "$real" /run/repo || finish 95
fi
# OVERLAY_USR=1 (kernel command line) also protects /usr, for install tests.
for d in etc var $( [ "${OVERLAY_USR:-}" = 1 ] && echo usr ); do
  mkdir -p /run/ov/$d/upper /run/ov/$d/work
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=/run/ov/$d/upper,workdir=/run/ov/$d/work" /$d || finish 93
done
mount -t tmpfs tmpfs /tmp
mkdir -p /var/tmp && mount -t tmpfs tmpfs /var/tmp
# hostfs keeps the host's /home visible; the quota file system replaces it.
mount -t ext4 -o usrquota,grpquota /dev/ubda /home || finish 94
# The second file system (boot.sh): project quotas enforced, group quotas not.
# The acceptance tests use it; the cache-miss bench (bench/uml.ts) does not.
if [ "${PRJ_FS:-1}" != 0 ]; then
  mkdir -p /home/prj && mount -t ext4 -o usrquota,prjquota /dev/ubdb /home/prj || finish 97
fi
# The checkout comes back at its own path over those mounts, read-only: the guest
# runs its code but cannot change it. Under /home its mount point is made on the
# quota file system: root-owned directories that count in root's usage only (a
# test user must not be named like the checkout's directory right under /home).
if [ -n "${REPO:-}" ]; then
  mkdir -p "$REPO" && mount --bind /run/repo "$REPO" && mount -o remount,bind,ro "$REPO" || finish 96
fi

ip link set lo up
hostname uml
echo "127.0.1.1 uml" >> /etc/hosts

# Waits (at most 60 s) until something accepts a connection on the unix
# socket $1: a name alone proves nothing, a stopped daemon may have left it.
wait_connect() {
  end=$(( $(date +%s) + 60 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    node -e 'require("net").connect(process.argv[1]).on("connect", () => process.exit(0)).on("error", () => process.exit(1))' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
