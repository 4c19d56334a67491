#!/bin/sh
# Re-capture test/fixtures/postfix-request.txt from a real Postfix (in user-mode-linux).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/qp-capture-req.XXXXXX)
"$here/boot.sh" "$out" "$here/capture-postfix-request.sh" || { cat "$out/console.log"; exit 1; }
cp "$out/postfix-request.txt" "$here/../fixtures/postfix-request.txt"
rm -rf "$out"
echo "written test/fixtures/postfix-request.txt"
