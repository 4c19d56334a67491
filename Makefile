# make install / make uninstall, as root, after scripts/setup.sh (or npm ci &&
# npm run build). Installs into $(LIBDIR), root-owned and not writable by the
# service user: root must never load code that user could change.
#   make install                 code, units, config, service user
#   make install SUDOERS=yes     ... and the sudoers drop-in (sudo mode)
#   make uninstall               removes what install put there (the config
#                                and the service user stay unless PURGE=yes)
#   make install DESTDIR=/stage  staging for a package: creates no user and
#                                leaves /etc/quotapolicy and /var/lib/quotapolicy
#                                owned by root (the package's postinst sets
#                                the group), so the build host is not changed
# Only dist/src is installed: tests and benchmarks stay in the checkout.
#   make deb                     the Debian package, from this same layout
#                                (scripts/build-deb.sh; DEB_OUT, DEB_VERSION)
DESTDIR ?=
PREFIX ?= /usr
LIBDIR ?= $(PREFIX)/lib/quotapolicy
BINDIR ?= $(PREFIX)/sbin
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/quotapolicy
SUDOERSDIR ?= /etc/sudoers.d
SERVICE_USER ?= quotapolicy
NODE ?= $(shell command -v node)
SUDOERS ?= no
PURGE ?= no
# Without DESTDIR the service user is created and owns its state directory;
# a staged install must not touch the build host's user database.
ifeq ($(DESTDIR),)
STATE_OWNER := $(SERVICE_USER)
USER_STEP := createuser
else
STATE_OWNER := root
USER_STEP :=
endif

.PHONY: all build install uninstall createuser deb
all: build

build:
	npm run build

createuser:
	getent passwd $(SERVICE_USER) >/dev/null || \
	  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group $(SERVICE_USER)

install: $(USER_STEP)
	test -f dist/src/cli/main.js || { echo "run npm run build first" >&2; exit 1; }
	install -d -o root -g root -m 0755 $(DESTDIR)$(LIBDIR) $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(LIBDIR)/dist $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR)
	cp -R dist/src $(DESTDIR)$(LIBDIR)/dist/
	cp package.json README.md $(DESTDIR)$(LIBDIR)/
	# node_modules/. copies the tree even where node_modules is a link (a git
	# worktree's): a copied link would let npm prune the checkout's own modules.
	cp -R node_modules/. $(DESTDIR)$(LIBDIR)/node_modules
	cd $(DESTDIR)$(LIBDIR) && npm prune --omit=dev --no-audit --no-fund >/dev/null
	# Native addons: only the built .node file is loaded (through `bindings`);
	# compiler intermediates, C sources and better-sqlite3's test addon are not installed.
	cd $(DESTDIR)$(LIBDIR)/node_modules && for m in $$(find . -path '*/build/Release/*.node' | sed 's,/build/Release/.*,,' | sort -u); do \
	  find $$m/build -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} + && \
	  find $$m/build/Release -mindepth 1 -maxdepth 1 ! -name '*.node' -exec rm -rf {} + && \
	  rm -rf $$m/build/Release/test_extension.node $$m/deps $$m/src; done
	install -o root -g root -m 0755 bin/quotapolicy.js $(DESTDIR)$(LIBDIR)/bin/quotapolicy.js
	printf '#!/bin/sh\n# The root helper for sudo mode: no arguments, built-in settings.\nexec %s %s/dist/src/helper/main.js\n' "$(NODE)" "$(LIBDIR)" > $(DESTDIR)$(LIBDIR)/quotapolicy-helper
	chmod 0755 $(DESTDIR)$(LIBDIR)/quotapolicy-helper
	chown -R root:root $(DESTDIR)$(LIBDIR)
	chmod -R go-w $(DESTDIR)$(LIBDIR)
	ln -sf $(LIBDIR)/bin/quotapolicy.js $(DESTDIR)$(BINDIR)/quotapolicy
	install -o root -g root -m 0644 systemd/quotapolicy.socket systemd/quotapolicy.service systemd/quotapolicy-clean.service systemd/quotapolicy-clean.timer $(DESTDIR)$(UNITDIR)/
	install -d -o $(STATE_OWNER) -g $(STATE_OWNER) -m 0750 $(DESTDIR)/var/lib/quotapolicy
	install -d -o root -g $(STATE_OWNER) -m 0750 $(DESTDIR)$(CONFDIR)
	test -f $(DESTDIR)$(CONFDIR)/quotapolicy.yaml || \
	  install -o root -g $(STATE_OWNER) -m 0640 quotapolicy.yaml.example $(DESTDIR)$(CONFDIR)/quotapolicy.yaml
	if [ "$(SUDOERS)" = yes ]; then \
	  visudo -cf sudoers.d/quotapolicy && install -d -m 0755 $(DESTDIR)$(SUDOERSDIR) && \
	  install -o root -g root -m 0440 sudoers.d/quotapolicy $(DESTDIR)$(SUDOERSDIR)/quotapolicy; fi
	@echo "installed; with systemd: systemctl daemon-reload && systemctl enable --now quotapolicy.socket"

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -f $(DESTDIR)$(BINDIR)/quotapolicy $(DESTDIR)$(UNITDIR)/quotapolicy.socket $(DESTDIR)$(UNITDIR)/quotapolicy.service \
	  $(DESTDIR)$(UNITDIR)/quotapolicy-clean.service $(DESTDIR)$(UNITDIR)/quotapolicy-clean.timer $(DESTDIR)$(SUDOERSDIR)/quotapolicy
	if [ "$(PURGE)" = yes ]; then rm -rf $(DESTDIR)$(CONFDIR) $(DESTDIR)/var/lib/quotapolicy; userdel $(SERVICE_USER) 2>/dev/null || true; fi

deb:
	scripts/build-deb.sh
