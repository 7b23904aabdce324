# The commands the README names.  `make run` and `make test` do all the set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
SERVICES ?=
PYTEST_ARGS ?=

.PHONY: venv services stop-services run test lint dist bench bench-brokers soak reliability docs clean

$(VENV)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml) scripts/venv.sh
	scripts/venv.sh $(VENV) $(PYTHON) $(PLUGINS)
	touch $@

venv: $(VENV)/.installed

services:
	scripts/services.sh install $(SERVICES)
	scripts/services.sh start $(SERVICES)

stop-services:
	scripts/services.sh stop $(SERVICES)

## Run the host in the foreground against the local services (Ctrl-C stops it).
run: venv
	scripts/services.sh install activemq xrootd rucio
	scripts/services.sh start activemq xrootd rucio
	$(PY) -m opsagent_fetch_payload_log.demo > /dev/null
	mkdir -p .state .cache
	OPSAGENT_CONFIG=$${OPSAGENT_CONFIG:-contrib/dev.toml} $(VENV)/bin/opsagent run

## Install and start what the tests need, run every test, stop the services.  The broker
## tests run on ActiveMQ Classic and on Artemis (PYTEST_ARGS=--broker=classic|artemis for one).
test: venv
	scripts/services.sh install
	scripts/services.sh start
	trap 'scripts/services.sh stop' EXIT; \
	$(VENV)/bin/ruff check core plugins tests bench templates scripts && \
	$(VENV)/bin/mypy && \
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check core plugins tests bench templates scripts
	$(VENV)/bin/mypy

## Wheels and sdists of the host and of each plugin, into dist/.
dist: venv
	rm -rf dist && mkdir -p dist
	$(PY) -m build --outdir dist .
	for p in $(PLUGINS); do $(PY) -m build --outdir dist $$p || exit 1; done

## Every benchmark, then every reliability measurement: docs/performance.md (its plots in
## docs/img/) and docs/reliability.md.  The 10,000-request soak takes most of the time;
## `make bench BENCH_ARGS=--quick-reliability` runs a shorter reliability pass (1,000
## requests, one broker restart, one host kill, smaller standby and flood);
## `BENCH_ARGS=--host-only` runs the host's benchmarks alone.
BENCH_ARGS ?=
bench: venv
	scripts/services.sh install
	scripts/services.sh start
	# A fresh broker: one that served hours of tests held their unconsumed messages and
	# once blocked the benchmarks' producers.
	scripts/services.sh restart activemq
	$(PY) bench/run_all.py $(BENCH_ARGS)

## The main figures on ActiveMQ Classic and on Artemis in one run, each beside its
## baseline on the same broker (short runs): the "On both brokers" sections of
## docs/performance.md and docs/reliability.md.
bench-brokers: venv
	scripts/services.sh install activemq artemis
	scripts/services.sh start activemq artemis
	$(PY) bench/brokers.py

## Chaos soak: 10,000 requests, 5 broker restarts, 3 host SIGKILLs (own persistent broker);
## BROKER=artemis runs it on Artemis (default classic).
BROKER ?= classic
SOAK_ARGS ?= --requests 10000 --broker-restarts 5 --host-kills 3
soak: venv
	scripts/services.sh install $(if $(filter artemis,$(BROKER)),artemis,activemq)
	mkdir -p build
	cd bench && $(abspath $(PY)) chaos_soak.py --broker $(BROKER) $(SOAK_ARGS) --out ../build/soak-$(BROKER).json

## Every reliability measurement (soak, hot standby, resource faults) into docs/reliability.md;
## RELIABILITY_ARGS=--quick for a shorter pass, --only catalogue to re-measure one part.
RELIABILITY_ARGS ?=
reliability: venv
	scripts/services.sh install activemq
	scripts/services.sh start activemq
	cd bench && $(abspath $(PY)) reliability.py $(RELIABILITY_ARGS)

## The reference pages regenerated from the code, then the site built strictly into site/.
docs: venv
	$(PY) scripts/gen_docs.py
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf dist build .state .cache site
