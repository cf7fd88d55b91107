# Two set-up commands for a fresh Debian 12 machine with Python 3.11: `make demo` and `make test`.
# Both install what is missing first: Debian packages (DCMTK, Orthanc, rsyslog) and a virtual environment.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := dcmtk orthanc rsyslog rsyslog-gnutls
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo bench lint typecheck system-deps venv clean fuzz

test: venv
	$(PY) -m ruff check dicomwire oauthclient agent server_agent hial_mock tomlconf audit devtools tests bench fuzz
	$(PY) -m mypy dicomwire oauthclient hial_mock tomlconf agent server_agent audit
	$(PY) -m pytest -q -p no:cacheprovider

demo: venv
	$(PY) -m devtools.demo

bench: venv
	$(PY) -m bench.run $(if $(QUICK),--quick,)

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
	for cmd in /usr/bin/storescu /usr/sbin/Orthanc /usr/sbin/rsyslogd; do [ -x $$cmd ] || missing="yes"; done; \
	[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -e /usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so ] || missing="yes"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
