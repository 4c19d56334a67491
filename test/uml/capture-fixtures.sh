#!/bin/sh
# Re-capture test/fixtures/quota/* from the real quota(1) against real kernel
# quotas inside user-mode-linux. Needs: user-mode-linux kmod quota iproute2.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/qp-capture.XXXXXX)
"$here/boot.sh" "$out" "$here/capture-quota-output.sh" || { cat "$out/console.log"; exit 1; }
mkdir -p "$here/../fixtures/quota"
cp "$out"/fixtures/* "$here/../fixtures/quota/"
rm -rf "$out"
echo "fixtures written to test/fixtures/quota"
