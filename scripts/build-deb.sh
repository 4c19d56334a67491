#!/bin/sh
# make deb: builds quotapolicy_VERSION_ARCH.deb from `make install`'s layout
# with dpkg's own tools (dpkg-gencontrol, dpkg-shlibdeps, dpkg-deb), offline,
# as root, after scripts/setup.sh (npm ci and the build). Why not
# dpkg-buildpackage: see README, "Debian package".
#   DEB_OUT      directory for the .deb (default: build/deb in the checkout)
#   DEB_VERSION  package version (default: debian/changelog's, which a test
#                keeps equal to package.json's); a rebuild for an upgrade
#                test passes a higher one
# The native addons are the ones npm ci compiled on this machine, so the
# package's architecture is this machine's (no cross-building); lintian's
# binary-from-other-architecture check would catch a foreign one.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "build-deb.sh: run as root (make install sets root ownership)" >&2; exit 1; }
for tool in dpkg-deb dpkg-gencontrol dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing: apt-get install dpkg-dev" >&2; exit 1; }
done
test -f dist/src/cli/main.js || { echo "build-deb.sh: run npm run build first" >&2; exit 1; }

out=${DEB_OUT:-$PWD/build/deb}
version=${DEB_VERSION:-$(dpkg-parsechangelog -SVersion)}
arch=$(dpkg --print-architecture)
mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root

# Units where packages put them (/etc/systemd/system is the admin's); the
# helper's node is the packaged one, whatever this machine's PATH says.
make install DESTDIR="$stage" UNITDIR=/lib/systemd/system NODE=/usr/bin/node >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; exit 1; }
# The modules as npm unpacked them, tidied as Debian's helpers would: their
# authors' tool dotfiles and pino's documentation web page are not used at
# run time; the addons stripped and not executable (dh_strip, dh_fixperms);
# nothing else executable that is not a script (node loads them all).
nm=$stage/usr/lib/quotapolicy/node_modules
find "$nm" -depth -name '.*' ! -name .package-lock.json -exec rm -rf {} +
rm -f "$nm/pino/index.html"
find "$nm" -name '*.node' -type f -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} + \
  -exec chmod 0644 {} +
find "$nm" -type f -perm /111 ! -name '*.node' | while read -r f; do
  [ "$(head -c 2 "$f")" = '#!' ] || chmod a-x "$f"
done
# Policy 10.5: a link within one top-level directory is relative.
ln -sfr "$stage/usr/lib/quotapolicy/bin/quotapolicy.js" "$stage/usr/sbin/quotapolicy"
# The sudoers drop-in ships inactive: sudo reads /etc/sudoers.d only.
install -D -m 0644 sudoers.d/quotapolicy "$stage/usr/share/quotapolicy/sudoers.d/quotapolicy"
doc=$stage/usr/share/doc/quotapolicy
install -d -m 0755 "$doc" "$stage/usr/share/man/man8" "$stage/usr/share/man/man5"
install -m 0644 debian/copyright "$doc/copyright"
gzip -9n <debian/changelog >"$doc/changelog.gz"
gzip -9n <man/quotapolicy.8 >"$stage/usr/share/man/man8/quotapolicy.8.gz"
gzip -9n <man/quotapolicy.yaml.5 >"$stage/usr/share/man/man5/quotapolicy.yaml.5.gz"
chmod 0644 "$doc/changelog.gz" "$stage/usr/share/man/man8/quotapolicy.8.gz" "$stage/usr/share/man/man5/quotapolicy.yaml.5.gz"

install -d -m 0755 "$stage/DEBIAN"
install -m 0755 debian/postinst debian/prerm debian/postrm "$stage/DEBIAN/"
install -m 0644 debian/conffiles "$stage/DEBIAN/conffiles"
# The C libraries the addons link against, as Depends (dpkg-shlibdeps reads
# debian/control and writes the substitution for ${shlibs:Depends}).
find "$stage" -name '*.node' -type f >"$work/addons"
# shellcheck disable=SC2046
dpkg-shlibdeps -T"$work/substvars" --warnings=0 $(sed 's/^/-e/' "$work/addons")
dpkg-gencontrol -pquotapolicy -v"$version" -P"$stage" -T"$work/substvars" -f"$work/files" -DArchitecture="$arch"
deb=$out/quotapolicy_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
