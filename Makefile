# loopwise — the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install demo test proto lint up down status clean cassandra-up cassandra-down bench certs \
	tools manifests images go-stubs ts-stubs api-baseline settings-table

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

# Decision service vs baselines in the same run, then the floor, DecideStream, DecideBatch,
# SQLite ingest and Cassandra ingest sections (the last starts its own Cassandra node), then
# the overload section (about 25 minutes); writes docs/benchmarks.md.
bench: install
	LOOPWISE_BENCH_FROM_MAKE=1 $(PY) -m bench --out docs/benchmarks.md
	LOOPWISE_BENCH_FROM_MAKE=1 $(PY) -m bench.overload --out docs/benchmarks.md

# Decide with tracing off, on and 10% sampled, in the same run (about 4 minutes);
# replaces the tracing section of docs/benchmarks.md.
.PHONY: bench-tracing
bench-tracing: install
	$(PY) -m bench.tracing --out docs/benchmarks.md

# Decide with own metrics and tracing vs prometheus_client (multiprocess) and
# opentelemetry-instrumentation-grpc, interleaved rounds in the same run with ghz (about
# 5 minutes); replaces the libraries section of docs/benchmarks.md.
.PHONY: bench-libraries
bench-libraries: install
	$(PY) -m bench.libraries --out docs/benchmarks.md

# Decide offered open loop at 1x, 2x and 3x its measured capacity with ghz (3 rounds), and 3x
# with the admission bounds off (about 8 minutes; scripts/install_tools.sh builds ghz);
# replaces the overload section of docs/benchmarks.md.
.PHONY: bench-overload
bench-overload: install
	LOOPWISE_BENCH_FROM_MAKE=1 $(PY) -m bench.overload --out docs/benchmarks.md

# Decide with the decision log's default (interval) and durable modes, in the same run
# (about 5 minutes); replaces the durability section of docs/benchmarks.md.
.PHONY: bench-durability
bench-durability: install
	$(PY) -m bench.durability --out docs/benchmarks.md

proto: install
	$(PY) scripts/gen_protos.py
	bash scripts/gen_go.sh
	bash scripts/gen_ts.sh

# helm, buf, the Go protoc plugins and ghz, built with `go install` and cached by version.
tools:
	bash scripts/install_tools.sh

# The Go and TypeScript stubs of the API (clients/go/gen, clients/typescript/gen).
go-stubs:
	bash scripts/gen_go.sh

ts-stubs:
	bash scripts/gen_ts.sh

# Plain Kubernetes manifests rendered from the Helm chart (deploy/k8s/manifests/).
manifests:
	bash scripts/render_manifests.sh

# Replace the committed v1 API baseline that `buf breaking` compares with (deliberately).
api-baseline:
	bash scripts/api_baseline.sh

IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_REPOSITORY ?= loopwise
# The five images (four services and the console) from the one Dockerfile, whose SERVICE
# build argument picks the extra and the command; needs a Docker engine with BuildKit.
images:
	@command -v docker >/dev/null || { echo "make images needs a Docker engine (docker not found)"; exit 1; }
	for s in decision feedback trainer evaluator console; do \
	  DOCKER_BUILDKIT=1 docker build -f Dockerfile --build-arg SERVICE=$$s \
	    --build-arg VERSION=$(IMAGE_TAG) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	    --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
	    -t $(IMAGE_REPOSITORY)/$$s:$(IMAGE_TAG) . || exit 1; \
	done

lint: install
	$(VENV)/bin/ruff check --extend-select RUF100 .

# The settings table of README.md (Configuration), rendered from lib/loopwise/settings.py.
settings-table: install
	$(PY) scripts/settings_table.py

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

# A development CA and mTLS certificates for the four services and a client (var/certs).
certs: install
	$(PY) scripts/make_certs.py --out var/certs
