# hdh-migration: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
UV := $(VENV)/bin/uv
ENV := source scripts/env.sh &&
SEED_ROWS ?= 2000
# make test's pytest-xdist workers (tests/conftest.py gives each its own Airflow database and api-server port)
PYTEST_WORKERS ?= 2

.PHONY: demo test test-deploy services faults bench bench-scale bench-board install stack-start stack-stop stack-reset lock clean prod-demo prod-stop demo-second-move

demo: install stack-start  ## install, start Azurite + SeaweedFS, seed synthetic SNDS data, migrate everything
	$(ENV) $(VENV)/bin/airflow db migrate >/dev/null
	$(ENV) $(VENV)/bin/python -m hdh_migration seed --seed 42 --rows-per-partition $(SEED_ROWS)
	$(ENV) $(VENV)/bin/python -m hdh_migration plan
	@echo "migrating; task logs go to .local/migrate.log"
	$(ENV) set -o pipefail; $(VENV)/bin/python -m hdh_migration migrate --local 2>&1 | tee .local/migrate.log \
	  | grep --line-buffered -vE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T|^\[\]|^\s*$$'
	$(ENV) set -o pipefail; $(VENV)/bin/python -m hdh_migration cutover --local --all --by "make demo" 2>&1 | tee -a .local/migrate.log \
	  | grep --line-buffered -vE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T|^\[\]|^\s*$$'
	$(ENV) set -o pipefail; $(VENV)/bin/python -m hdh_migration verify --local --all 2>&1 | grep -vE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T'
	$(ENV) $(VENV)/bin/python -m hdh_migration status

demo-second-move: install stack-start  ## after `make demo`: interim -> final host, chained record, decommissions, verify --chain offline
	scripts/second_move.sh

test: install stack-start services  ## start what the tests need, lint, then every test but the deployment and fault suites, on two workers
	$(ENV) $(VENV)/bin/airflow db migrate >/dev/null
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(ENV) $(VENV)/bin/python -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile \
	  -m "not faults and not prod and not scheduler" $(PYTEST_ARGS)

test-deploy: install stack-start services  ## the tests that start a deployment of their own: the gap scan through a scheduler, the production profile
	$(ENV) $(VENV)/bin/airflow db migrate >/dev/null
	$(ENV) $(VENV)/bin/python -m pytest -p no:cacheprovider -m "(prod or scheduler) and not faults" $(PYTEST_ARGS)

prod-demo: install  ## the production-shaped profile (scripts/prod.sh): start it, migrate through its scheduler and Celery workers
	scripts/prod.sh demo

prod-stop:  ## stop the production-shaped profile
	scripts/prod.sh stop

faults: install stack-start services  ## the faults a deployment must survive (kills and restarts SeaweedFS)
	$(ENV) $(VENV)/bin/airflow db migrate >/dev/null
	$(ENV) $(VENV)/bin/python -m pytest -p no:cacheprovider -m faults tests/faults $(PYTEST_ARGS)

bench: install stack-start  ## transfer benchmark: raw SDK copy vs the provider's operator vs ours (BENCH_ARGS=--quick)
	$(ENV) $(VENV)/bin/python bench/transfer_bench.py $(BENCH_ARGS)

bench-scale: install stack-start  ## scale sanity: DAG parse time with ~220 tables, a 240-partition backfill, a 1,000-object fan-out (BENCH_ARGS="--parts parse")
	$(ENV) $(VENV)/bin/python bench/scale_bench.py $(BENCH_ARGS)

bench-board: install services  ## the board at real scale: server render with 50,000 table-partitions and 500,000 events (SQLite, PostgreSQL), Chromium's timing (BENCH_ARGS="--backend sqlite")
	$(ENV) $(VENV)/bin/python bench/board_bench.py $(BENCH_ARGS)

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements/dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(UV) pip sync --python $(VENV)/bin/python --quiet --require-hashes requirements.txt requirements/dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lock:  ## recompile both locks from their inputs, with every distribution's hashes
	$(UV) pip compile --quiet --python-version 3.11 --generate-hashes requirements/main.in -o requirements.txt
	$(UV) pip compile --quiet --python-version 3.11 --generate-hashes requirements/dev.in -o requirements/dev.txt

stack-start:
	scripts/stack.sh start

services:  ## PostgreSQL and Redis started, Debian's Chromium installed (scripts/services.sh)
	scripts/services.sh

stack-stop:
	scripts/stack.sh stop

stack-reset:
	scripts/stack.sh reset

clean: stack-stop
	rm -rf .local
