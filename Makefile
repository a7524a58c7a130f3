# factorflow: two commands do everything — `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Airflow runs from this checkout with a SQLite metadata DB under .airflow/.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__PARALLELISM := 2
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN := sqlite:///$(AIRFLOW_HOME)/airflow.db
export AIRFLOW__LOGGING__LOGGING_LEVEL := INFO
export FACTORFLOW_WAREHOUSE ?= $(CURDIR)/data/warehouse.duckdb
export FACTORFLOW_ARTIFACTS_DIR ?= $(CURDIR)/data/artifacts
export JAX_PLATFORMS ?= cpu
export GX_ANALYTICS_ENABLED := false
export PATH := $(BIN):$(PATH)

.PHONY: help demo test install airflow-db services browser clean bench bench-pipeline

help:
	@echo "make demo   build the demo warehouse, run the DAG through Airflow, show the result"
	@echo "make test   run the whole test suite"

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"factorflow needs Python 3.11, found {sys.version.split()[0]} at {sys.executable}; set PYTHON=/path/to/python3.11"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned requirements into .venv (first run takes a few minutes)"
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v 'is ignored' || true
	@$(BIN)/python -m pip install --quiet -r requirements.txt 2>&1 | { grep -v 'is ignored' || true; }
	@$(BIN)/python -m pip install --quiet --no-deps -e . 2>&1 | { grep -v 'is ignored' || true; }
	@$(BIN)/python -c 'import airflow, jax, polars, duckdb, factorflow'
	@touch $@

airflow-db: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	@airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { cat $(AIRFLOW_HOME)/db-migrate.log; exit 1; }

demo: $(STAMP) airflow-db
	@factorflow demo-data --warehouse "$(FACTORFLOW_WAREHOUSE)"
	@echo "running DAG factorize_ratings with 'airflow dags test' (log: $(AIRFLOW_HOME)/demo-run.log)"
	@airflow dags test factorize_ratings > $(AIRFLOW_HOME)/demo-run.log 2>&1 || { tail -n 80 $(AIRFLOW_HOME)/demo-run.log; exit 1; }
	@factorflow show --warehouse "$(FACTORFLOW_WAREHOUSE)"

# The tests keep their own Airflow home and metadata DB (tests/conftest.py), so
# the demo's .airflow/ never shows a test's runs.
test: $(STAMP) services browser
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

# PostgreSQL (127.0.0.1:5432, database `test`) and Redis (127.0.0.1:6379) for the
# tests that name them: started (and the database created) when installed here
# but down or missing; otherwise those tests skip, and the run's last line says so.
services:
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then \
	    echo "starting PostgreSQL"; \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start || true; \
	  fi; \
	fi
	@if ! (command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432); then \
	  echo "note: no PostgreSQL on 127.0.0.1:5432; the PostgreSQL tests will skip"; \
	elif [ -z "$${FACTORFLOW_TEST_POSTGRES:-}" ]; then \
	  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1; then \
	    echo "creating the PostgreSQL database 'test' for the tests"; \
	    createdb -h 127.0.0.1 -U postgres test 2>/tmp/factorflow-createdb.log || \
	      echo "note: could not create database 'test' as user postgres ($$(head -n1 /tmp/factorflow-createdb.log)); the PostgreSQL tests will skip"; \
	  fi; \
	fi
	@if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then \
	  echo "starting Redis"; \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
	    --logfile /tmp/factorflow-redis.log || true; \
	fi
	@if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then \
	  echo "note: no Redis on 127.0.0.1:6379; the Celery tests will skip"; fi

# Debian's chromium + chromium-driver for the UI test: installed when apt-get runs
# as root here; otherwise that test skips with the reason.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian chromium and chromium-driver for the UI test (log: /tmp/factorflow-apt.log)"; \
	    { timeout 900 apt-get install -y -q chromium chromium-driver || \
	      { timeout 300 apt-get update -q && timeout 900 apt-get install -y -q chromium chromium-driver; }; \
	    } > /tmp/factorflow-apt.log 2>&1 || echo "note: could not install chromium; the browser test will skip"; \
	  else \
	    echo "note: chromium/chromedriver not installed (needs root and apt-get); the browser test will skip"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) $(AIRFLOW_HOME) $(CURDIR)/.airflow-test data

# Benchmark (tests/bench/README.md): peers (Surprise, PySpark) live in their own venv.
BENCH_VENV := $(CURDIR)/.bench/venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS ?=

$(BENCH_STAMP): tests/bench/requirements.txt tests/bench/build-constraints.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@echo "installing the bench's peers into .bench/venv (first run compiles scikit-surprise: a few minutes)"
	@$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v 'is ignored' || true; }
	@$(BENCH_VENV)/bin/python -m pip install --quiet --build-constraint tests/bench/build-constraints.txt -r tests/bench/requirements.txt 2>&1 | { grep -v 'is ignored' || true; }
	@$(BENCH_VENV)/bin/python -c 'import surprise, pyspark'
	@touch $@

bench: $(STAMP) $(BENCH_STAMP)
	@$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

# The whole DAG at 1M, 10M and 25M ratings (BENCH_ARGS="--huge" adds 100M; "--sizes 1M" for a
# quick look): tests/bench/pipeline.py, figures in .bench/pipeline.json. Not part of `make test`.
bench-pipeline: $(STAMP)
	@$(BIN)/python -m tests.bench.pipeline $(BENCH_ARGS)
