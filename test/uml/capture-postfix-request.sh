#!/bin/sh
# Guest init: a real Postfix sends one policy request to a capture server;
# its exact bytes become test/fixtures/postfix-request.txt, the seed of the
# protocol fuzzer. Run on the host with: test/uml/capture-postfix-request-host.sh
. "$(dirname "$0")/prelude.sh"
set -x
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
postconf -e 'myhostname = mx.example.test' 'mydestination = $myhostname, example.test, localhost' \
  'inet_interfaces = loopback-only' 'inet_protocols = ipv4' 'mynetworks = 127.0.0.0/8' 'alias_maps =' 'alias_database =' \
  'smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:private/capture'
mkdir -p /var/spool/postfix/private
node -e '
const net = require("net"), fs = require("fs");
const path = "/var/spool/postfix/private/capture";
const srv = net.createServer((s) => {
  let buf = Buffer.alloc(0);
  s.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    if (buf.includes("\n\n")) { fs.writeFileSync("/run/out/postfix-request.txt", buf); s.write("action=DUNNO\n\n"); }
  });
}).listen(path, () => fs.chmodSync(path, 0o666));
setTimeout(() => process.exit(0), 20000);
' &
sleep 0.5
/usr/lib/postfix/sbin/master -w
smtp-source -c -m 1 -f sender@example.org -t root@example.test 127.0.0.1:25
sleep 0.5
[ -s /run/out/postfix-request.txt ] && finish 0
finish 1
