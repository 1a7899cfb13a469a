# KCM developer commands. All configuration is environment variables (see README).
#   make run          web + worker + beat on http://localhost:8000 (state in .state/)
#   make test         pytest against a project-local PostgreSQL, then lint and types
#                     (first installs missing system packages, e.g. SoftHSM2, if it can)
#   make bench        every bench/*.py, each as `python -m bench.<name>`
#   make lint         ruff check, ruff format --check, mypy, lint-imports (layers)
#   make clean-state  stop the local PostgreSQL and delete .state/ (database, HSM token, keys)

PYTHON ?= python3
VENV := .venv
DEVSTACK := $(VENV)/bin/python tools/devstack.py
# mypy's Django plugin imports the settings, which insist on a database URL; it never connects.
LINT_ENV := KCM_DATABASE_URL=$${KCM_DATABASE_URL:-postgres://unused@/unused}

.PHONY: help venv system-deps run test lint bench clean-state
help:
	@sed -n 's/^#   //p' Makefile

venv: $(VENV)/.synced

# The virtualenv and uv; rebuilt only if uv is missing (e.g. an interrupted first run).
$(VENV)/bin/uv:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; KCM needs Python >= 3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: KCM needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1)." >&2; \
	  echo "       Install a newer Python or run e.g. make PYTHON=python3.12 ..." >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: could not create $(VENV); on Debian/Ubuntu: sudo apt-get install python3-venv" >&2; exit 1; }
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9

# Re-sync only when uv.lock changed since the last sync.
$(VENV)/.synced: uv.lock | $(VENV)/bin/uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --frozen --inexact
	@touch $@

run: venv
	$(DEVSTACK) run

# The system packages the suite needs (SoftHSM2, ...): installed when root or passwordless
# sudo can, else one line says what to install and nothing else runs.
system-deps:
	@tools/install-system-deps

# Every step runs even if an earlier one fails; the target fails if any did.
test: system-deps venv
	@status=0; \
	KCM_ENV=test $(DEVSTACK) exec -- pytest $(PYTEST_ARGS) || status=1; \
	$(MAKE) --no-print-directory lint || status=1; \
	exit $$status

lint: venv
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(LINT_ENV) $(VENV)/bin/mypy . || status=1; \
	$(VENV)/bin/lint-imports --no-cache --no-logo || status=1; \
	exit $$status

# One bootstrap for all benchmarks; each runs as its own module even if another fails.
bench: venv
	@$(DEVSTACK) exec -- bash -c 'status=0; \
	  for file in bench/*.py; do \
	    name=$$(basename "$$file" .py); \
	    case "$$name" in __init__|common|celery_fastpoll) continue;; esac; \
	    echo "== python -m bench.$$name"; \
	    python -m "bench.$$name" || status=1; \
	  done; exit $$status'

clean-state:
	$(PYTHON) tools/devstack.py stop
	rm -rf .state
