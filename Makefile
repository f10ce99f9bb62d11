# `make run` (the hub with a sandbox store), `make serve` (production mode: docs/deploy.md) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install run serve test bench bench-hook browsers clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

run: install
	bin/run

serve: install
	bin/serve

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The benchmark starts `vtex_sandbox` (installed only with HUB_SANDBOX on) and runs without DEBUG,
# where Django needs DJANGO_ALLOWED_HOSTS even though it serves no page. By default it runs 10,000 orders
# on 1, 2 and 4 worker processes plus a 500-order sequential baseline, several minutes in all; quicker:
# BENCH_ARGS="--orders 2000 --workers 2 --baseline 0". Other options (--mode qcluster, --kill): docs/performance.md.
bench: install
	HUB_SANDBOX=1 DJANGO_ALLOWED_HOSTS="$${DJANGO_ALLOWED_HOSTS:-localhost}" $(PY) scripts/bench.py $(BENCH_ARGS)

# The order hook endpoint under gunicorn at a fixed rate (docs/performance.md); needs DATABASE_URL (PostgreSQL).
bench-hook: install
	$(PY) scripts/bench_hook.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var db.sqlite3 db.sqlite3-*
