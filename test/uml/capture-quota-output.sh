#!/bin/sh
# Guest init: brings users to each quota state and records what the real
# quota(1) prints for them, as fixtures for the parser's unit tests.
# Run on the host with: test/uml/capture-fixtures.sh
. "$(dirname "$0")/prelude.sh"
set -x
F=/run/out/fixtures
mkdir -p $F
mkuser() { useradd -M -d /home/$1 -u $2 -U $1 && mkdir /home/$1 && chown $1: /home/$1; }
fill() { setpriv --reuid=$1 --regid=$1 --clear-groups dd if=/dev/zero of=/home/$1/f$2 bs=1024 count=$2 conv=fsync 2>/dev/null; }
mkuser under 2001;  setquota -u under 1000 2000 100 200 /home; fill under 10
mkuser grace 2002;  setquota -u grace 100 200 10 20 /home; fill grace 150
mkuser hard 2003;   setquota -u hard 100 200 10 20 /home; fill hard 300
mkuser files 2004;  setquota -u files 1000 2000 3 5 /home
for i in 1 2 3 4 5 6; do setpriv --reuid=files --regid=files --clear-groups touch /home/files/x$i; done
mkuser expired 2005; setquota -u expired 100 200 10 20 /home; fill expired 150; setquota -T -u expired 1 1 /home
mkuser noquota 2006; fill noquota 5
# Group: gu1 (primary group shared, 3000) fills the group to its hard limit on /home.
groupadd -g 3000 shared
useradd -M -d /home/gu1 -u 2101 -g 3000 gu1; mkdir /home/gu1; chown gu1:shared /home/gu1
setquota -g shared 100 200 10 20 /home
setpriv --reuid=2101 --regid=3000 --clear-groups dd if=/dev/zero of=/home/gu1/f bs=1024 count=250 conv=fsync 2>/dev/null
# Project 42 on the project file system (/home/prj, see prelude.sh), full.
mkdir /home/prj/carol; chattr -p 42 +P /home/prj/carol; setquota -P 42 100 200 10 20 /home/prj
useradd -M -d /home/prj/carol -u 2102 -U carol; chown carol: /home/prj/carol
setpriv --reuid=2102 --regid=2102 --clear-groups dd if=/dev/zero of=/home/prj/carol/f bs=1024 count=300 conv=fsync 2>/dev/null
setquota -g carol 1 2 1 2 /home/prj
sleep 2
Q="quota -w -p -v --show-mntpoint --hide-device"
cap() { name=$1; shift; $Q "$@" >$F/$name.stdout 2>$F/$name.stderr; echo $? > $F/$name.rc; }
cap under -u 2001
cap grace -u 2002
cap hard -u 2003
cap files -u 2004
cap expired -u 2005
cap noquota -u 2006
cap nopasswd -u 4242
cap nosuchuser -u nosuchuser
cap batch -u 2001 2002 2003 4242
cap byname -u under
cap group -g 3000
cap groupbatch -g 3000 2102 4343
cap project -P 42
finish 0
