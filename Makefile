# Two set-up commands for a fresh Debian 12 machine with Python 3.11: `make demo` and `make test`.
# Both install what is missing first: Debian packages (DCMTK, Orthanc, rsyslog, Chromium, HAProxy) and a virtual environment.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# chromium: headless, it renders the decision-log report and patient pages in tests/audit/test_report_page.py
# (about 124 MB to download; measured 17 s to install on our 2-core machine, where the others were installed).
# haproxy: the load balancer in front of several server agents (tests/e2e/test_haproxy.py, PROXY protocol v2).
# nodejs, npm: the foreign OpenID provider of the tests (panva oidc-provider, devtools/foreign_idp).
# prometheus: its promtool checks and unit-tests the alert rules of docs/prometheus (tests/e2e/test_admin.py); about
# 19 MB to download. Without systemd (containers, CI) nothing is started; on a host with it, disable the service.
# redis-server: the state several server agents share (outstanding C-MOVEs, throttles, ended sessions).
# stunnel4, socat: the C baselines `make bench` measures the agents against in the same run (devtools/tunnels.py).
# libnotify-bin: notify-send, the desktop notification of a refusal (agent/notices.py); dbus-daemon, dbus-bin,
# dunst, xvfb: a real session bus, monitor and notification daemon to test it (tests/agent/test_notices.py).
# systemd: its offline tools (systemd-analyze verify/security, systemd-sysusers, systemd-tmpfiles, systemctl
# --root) check packaging/systemd/ and docs/deployment.md's steps (tests/unit/test_deployment.py).
# xvfb, xdotool, tesseract-ocr: a virtual X display, a keyboard on it and OCR to read the screen back, for the
# desktop sign-in dialog's tests (tests/e2e/test_desktop_login.py; about 20 MB with OCR's English data).
# python3-tk: Tk for Debian's python3.11, which the venv is built from (the sign-in dialog, agent/dialog.py; a
# Python built without _tkinter falls back to the device flow).
# faketime: libfaketime, preloaded into a whole test site to move its clocks a day ahead while it runs
# (tests/e2e/test_research_days.py: pseudonyms stable across days; about 100 KB).
# One group per line, with the commands that tell whether it is installed in SYSTEM_COMMANDS below.
APT_PACKAGES := dcmtk orthanc rsyslog rsyslog-gnutls chromium haproxy nodejs npm
APT_PACKAGES += prometheus redis-server
APT_PACKAGES += stunnel4 socat
APT_PACKAGES += libnotify-bin dbus-daemon dbus-bin dunst xvfb
APT_PACKAGES += systemd
APT_PACKAGES += xdotool tesseract-ocr python3-tk
APT_PACKAGES += faketime
SYSTEM_COMMANDS := /usr/bin/storescu /usr/sbin/Orthanc /usr/sbin/rsyslogd /usr/bin/chromium /usr/sbin/haproxy
SYSTEM_COMMANDS += /usr/bin/node /usr/bin/npm
SYSTEM_COMMANDS += /usr/bin/promtool /usr/bin/redis-server
SYSTEM_COMMANDS += /usr/bin/stunnel4 /usr/bin/socat
SYSTEM_COMMANDS += /usr/bin/notify-send /usr/bin/dbus-run-session /usr/bin/dbus-monitor /usr/bin/dunst /usr/bin/xvfb-run
SYSTEM_COMMANDS += /usr/bin/systemd-analyze
SYSTEM_COMMANDS += /usr/bin/Xvfb /usr/bin/xdotool /usr/bin/tesseract
SYSTEM_COMMANDS += /usr/bin/faketime
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo bench lint typecheck system-deps venv clean fuzz lock foreign-idp install

test: venv foreign-idp
	$(PY) -m ruff check dicomwire oauthclient agent server_agent hial_mock tomlconf audit devtools tests bench deid fuzz \
		pseudonymizer
	$(PY) -m mypy dicomwire oauthclient hial_mock tomlconf agent server_agent audit deid pseudonymizer
	$(PY) -m pytest -q -p no:cacheprovider

demo: venv
	$(PY) -m devtools.demo

bench: venv
	$(PY) -m bench.run $(if $(QUICK),--quick,)
	# Issue 15 item 7 at its full length: two instances behind HAProxy, 20 clients for 60 s, one killed
	FAILOVER_SECONDS=60 $(PY) -m pytest tests/e2e/test_failover.py -k under_load -q -s -p no:cacheprovider

# Long fuzzing runs (issue 13: 10^7 executions per harness): each harness of FUZZ_HARNESSES in turn, FUZZ_RUNS
# executions, corpus kept in .fuzz/<harness>/ between runs and seeded from real encodings (fuzz/make_seeds.py);
# a finding stops the run and is written as .fuzz/crash-*. `make test` runs each harness for a few seconds.
FUZZ_RUNS ?= 10000000
FUZZ_HARNESSES ?= dataset pdu dimse relay
fuzz: venv
	@for harness in $(FUZZ_HARNESSES); do \
	  mkdir -p .fuzz/$$harness && $(PY) fuzz/make_seeds.py .fuzz/$$harness $$harness && \
	  PYTHONPATH=. $(PY) fuzz/$${harness}_fuzz.py .fuzz/$$harness -atheris_runs=$(FUZZ_RUNS) -print_final_stats=1 \
	    -artifact_prefix=.fuzz/ || exit 1; \
	done

lint: venv
	$(PY) -m ruff check .

venv: system-deps $(STAMP)

# Debian packages: installed only when one of their commands is missing.
system-deps:
	@missing=""; \
	for cmd in $(SYSTEM_COMMANDS); do [ -x $$cmd ] || missing="yes"; done; \
	[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -e /usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so ] || missing="yes"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The locked versions, then the project itself (its dependencies are all in the lock)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	# Table E.1-1's option columns for devtools/gen_deid_table.py (data only; see pyproject.toml)
	$(PY) -m pip install -q --no-deps 'dicom-standard==0.1.0'
	touch $(STAMP)

# A new lock: pyproject.toml's dependencies and [dev] resolved afresh in a scratch environment.
lock:
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install -q '.[dev]'
	{ echo "# Exact versions for make test, make demo and make bench (issue 15 item 8), made by \`make lock\` from"; \
	  echo "# pyproject.toml's dependencies and its [dev] extra in a fresh Python 3.11 virtual environment."; \
	  build/lock-venv/bin/python -m pip freeze --exclude-editable | grep -iv '^dicom.identity.agents'; } > requirements.lock
	rm -rf build/lock-venv

# The foreign OpenID provider of the tests (issue 14): panva's oidc-provider at the versions the
# committed package-lock.json pins (npm ci: exactly those, integrity-checked, no install scripts run).
FOREIGN_IDP := devtools/foreign_idp
foreign-idp: system-deps $(FOREIGN_IDP)/node_modules/.package-lock.json

$(FOREIGN_IDP)/node_modules/.package-lock.json: $(FOREIGN_IDP)/package-lock.json $(FOREIGN_IDP)/package.json
	cd $(FOREIGN_IDP) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# What a hospital's package does (issue 17 item 2): the product in a private virtual environment of its
# own, its dependencies pinned by the lock, and only the product's commands linked into PREFIX/bin. The
# environment's bin (pynetdicom's findscu, storescu, movescu... beside the dependencies' other scripts) is
# never on PATH, so a clinician's `findscu` stays DCMTK's. DESTDIR stages it for a .deb/.rpm build.
PREFIX ?= /usr/local
APP_DIR ?= $(PREFIX)/lib/dicom-identity-agents
PRODUCT_COMMANDS := dicom-agent dicom-server-agent dicom-relay decision-log pseudonymizer
install:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(DESTDIR)$(APP_DIR)
	$(DESTDIR)$(APP_DIR)/bin/python -m pip install -q -c requirements.lock .
	mkdir -p $(DESTDIR)$(PREFIX)/bin
	for name in $(PRODUCT_COMMANDS); do ln -sfn $(APP_DIR)/bin/$$name $(DESTDIR)$(PREFIX)/bin/$$name; done

clean:
	rm -rf $(FOREIGN_IDP)/node_modules $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
