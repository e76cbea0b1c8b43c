# loopwise — the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install demo test proto lint up down status clean cassandra-up cassandra-down bench

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

STORE ?= sqlite

demo: install
	$(VENV)/bin/loopwise demo --store $(STORE)

test: install
	$(PY) -m pytest

# Decision service vs baselines in the same run (about 6 minutes); writes docs/benchmarks.md.
bench: install
	LOOPWISE_BENCH_FROM_MAKE=1 $(PY) -m bench --out docs/benchmarks.md

proto: install
	$(PY) scripts/gen_protos.py

lint: install
	$(VENV)/bin/ruff check .

up: install
	$(VENV)/bin/loopwise up

down:
	@test -x $(VENV)/bin/loopwise && $(VENV)/bin/loopwise down || true

status: install
	$(VENV)/bin/loopwise status

clean: down
	rm -rf var build dist *.egg-info

# A real single-node Cassandra for development and `make demo STORE=cassandra`.
cassandra-up:
	bash deploy/cassandra/cassandra.sh start --dir var/cassandra --cql-port 9042 --storage-port 7000

cassandra-down:
	bash deploy/cassandra/cassandra.sh stop --dir var/cassandra
