# seer — the two commands are `make demo` and `make test`; everything else is
# a building block of those. All state lives under .cache/ (git-ignored).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
STACK := deploy/local/stack.sh
# The environment the stack script prints (addresses, library and venv paths).
STACK_ENV = eval "$$($(STACK) env)"
DEMO_ARGS ?=
TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: all build image demo test stack-up stack-down stack-status models gpu-bundle bench bench-features bench-hotpath bench-e2e bench-secure profile clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

build: ## build bin/seer
	$(GO) build -o bin/seer ./cmd/seer

demo: build ## run seer demo: embedded Kafka, local Redis + ClickHouse, rollouts and drift, ~105 s (DEMO_ARGS=--secure: over the secured ports)
	$(STACK) up redis clickhouse $(if $(findstring --secure,$(DEMO_ARGS)),kafka)
	$(STACK_ENV); bin/seer demo --summary-json .cache/demo-summary.json $(DEMO_ARGS)

test: build ## install and start the stack, then run every test (services required)
	$(STACK) up
	$(STACK_ENV); SEER_REQUIRE_SERVICES=1 $(GO) test -race $(TEST_FLAGS) ./...

bench-secure: build ## seer serve's max throughput open, then over Kafka SASL_SSL and TLS to Redis and ClickHouse (about 1 minute)
	loadtest/bench-secure.sh

bench: build ## the suite: seer against a JVM peer and the Python baseline, then seer's own figures and stage breakdown (18 to 20 minutes from a fresh clone on the 2-core VM)
	$(STACK) up
	loadtest/bench.sh
	loadtest/bench-e2e.sh

image: ## build the container image localhost/seer:<git commit> (buildah, from scratch) and its CycloneDX SBOM (.cache/image/)
	$(STACK) install
	deploy/image/build.sh

bench-features: build ## seer features ingest against a Python (confluent-kafka, redis-py) baseline on 200,000 updates (about 1 minute)
	loadtest/bench-features.sh

bench-hotpath: ## per-event CPU of decode → enrich → score → encode → log row (go test -bench)
	$(STACK) install
	$(STACK_ENV); $(GO) test -run XXX -bench HotPath -benchmem -benchtime 5s ./stream

bench-e2e: build ## end-to-end throughput, p99 and RSS of seer serve on the real local stack
	$(STACK) up
	loadtest/bench-e2e.sh

profile: build ## CPU and allocation profiles of seer serve at saturation, and its CPU, bytes and allocations per event in benchstat form (BENCH_RUNS=6 for a comparison)
	$(STACK) up
	loadtest/profile.sh

stack-up: ## install and start Kafka, Redis and ClickHouse on 127.0.0.1
	$(STACK) up

stack-down: ## stop the services the stack script started
	$(STACK) down

stack-status: ## show which services answer
	$(STACK) status

models: ## retrain the example model packages (1.0.0, a better 1.1.0, a bad 1.2.0-rc.1; byte-for-byte reproducible) and export the GPU checks' MLP
	$(STACK) install python
	$(STACK_ENV); $$SEER_PYTHON deploy/examples/card-fraud/train.py
	$(STACK_ENV); $$SEER_PYTHON deploy/examples/card-fraud/train.py --out deploy/examples/card-fraud-1.1.0 --version 1.1.0 --trees 400 --depth 1
	$(STACK_ENV); $$SEER_PYTHON deploy/examples/card-fraud/train.py --out deploy/examples/card-fraud-1.2.0-rc.1 --version 1.2.0-rc.1 --shuffle-labels
	$(STACK_ENV); mkdir -p $$SEER_CACHE_DIR/models && $$SEER_PYTHON deploy/examples/mlp/export.py $$SEER_CACHE_DIR/models/mlp.onnx
	git status --short -- deploy/examples

gpu-bundle: ## pack the CUDA build of ONNX Runtime and seer for the GPU machine (.gpu/, see deploy/gpu)
	deploy/gpu/bundle.sh

clean: ## remove build outputs (keeps the .cache downloads)
	rm -rf bin
