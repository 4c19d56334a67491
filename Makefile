# make install / make uninstall, as root, after scripts/setup.sh (or npm ci &&
# npm run build). Installs into $(LIBDIR), root-owned and not writable by the
# service user: root must never load code that user could change.
#   make install                 code, units, config, service user
#   make install SUDOERS=yes     ... and the sudoers drop-in (sudo mode)
#   make uninstall               removes what install put there (the config
#                                and the service user stay unless PURGE=yes)
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

.PHONY: all build install uninstall createuser
all: build

build:
	npm run build

createuser:
	getent passwd $(SERVICE_USER) >/dev/null || \
	  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group $(SERVICE_USER)

install: createuser
	test -f dist/src/cli/main.js || { echo "run npm run build first" >&2; exit 1; }
	install -d -o root -g root -m 0755 $(DESTDIR)$(LIBDIR) $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR)
	cp -R dist package.json README.md $(DESTDIR)$(LIBDIR)/
	cp -R node_modules $(DESTDIR)$(LIBDIR)/
	cd $(DESTDIR)$(LIBDIR) && npm prune --omit=dev --no-audit --no-fund >/dev/null
	rm -f $(DESTDIR)$(LIBDIR)/dist/*.tsbuildinfo
	install -o root -g root -m 0755 bin/quotapolicy.js $(DESTDIR)$(LIBDIR)/bin/quotapolicy.js
	printf '#!/bin/sh\n# The root helper for sudo mode: no arguments, built-in settings.\nexec %s %s/dist/src/helper/main.js\n' "$(NODE)" "$(LIBDIR)" > $(DESTDIR)$(LIBDIR)/quotapolicy-helper
	chmod 0755 $(DESTDIR)$(LIBDIR)/quotapolicy-helper
	chown -R root:root $(DESTDIR)$(LIBDIR)
	chmod -R go-w $(DESTDIR)$(LIBDIR)
	ln -sf $(LIBDIR)/bin/quotapolicy.js $(DESTDIR)$(BINDIR)/quotapolicy
	install -o root -g root -m 0644 systemd/quotapolicy.socket systemd/quotapolicy.service systemd/quotapolicy-clean.service systemd/quotapolicy-clean.timer $(DESTDIR)$(UNITDIR)/
	install -d -o $(SERVICE_USER) -g $(SERVICE_USER) -m 0750 $(DESTDIR)/var/lib/quotapolicy
	install -d -o root -g $(SERVICE_USER) -m 0750 $(DESTDIR)$(CONFDIR)
	test -f $(DESTDIR)$(CONFDIR)/quotapolicy.yaml || \
	  install -o root -g $(SERVICE_USER) -m 0640 quotapolicy.yaml.example $(DESTDIR)$(CONFDIR)/quotapolicy.yaml
	if [ "$(SUDOERS)" = yes ]; then \
	  visudo -cf sudoers.d/quotapolicy && install -d -m 0755 $(DESTDIR)$(SUDOERSDIR) && \
	  install -o root -g root -m 0440 sudoers.d/quotapolicy $(DESTDIR)$(SUDOERSDIR)/quotapolicy; fi
	@echo "installed; with systemd: systemctl daemon-reload && systemctl enable --now quotapolicy.socket"

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -f $(DESTDIR)$(BINDIR)/quotapolicy $(DESTDIR)$(UNITDIR)/quotapolicy.socket $(DESTDIR)$(UNITDIR)/quotapolicy.service \
	  $(DESTDIR)$(UNITDIR)/quotapolicy-clean.service $(DESTDIR)$(UNITDIR)/quotapolicy-clean.timer $(DESTDIR)$(SUDOERSDIR)/quotapolicy
	if [ "$(PURGE)" = yes ]; then rm -rf $(DESTDIR)$(CONFDIR) $(DESTDIR)/var/lib/quotapolicy; userdel $(SERVICE_USER) 2>/dev/null || true; fi
