# Two commands matter: `make run` (the hub with a sandbox store) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install run test bench browsers clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

run: install
	bin/run

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var db.sqlite3 db.sqlite3-*
