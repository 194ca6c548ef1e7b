# One entry point for building, running and testing the gateway. Targets that need the
# virtualenv create it first, so `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
.PHONY: help venv gen run up down status test test-unit test-e2e lint fmt db-migrate db-seed token helm-lint clean bench bench-fraud bench-webhooks bench-recon recon fraud-model image image-test lock run-dev run-prod test-coverage test-integration test-providers load-test chaos

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -q --upgrade pip
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	@# xds-protos ships stale copies of opentelemetry/proto over opentelemetry-proto's files,
	@# which breaks the OTLP exporter; put the real ones back.
	$(PY) -m pip install -q --force-reinstall --no-deps opentelemetry-proto==1.45.2
	$(PY) tools/dev_paths.py
	@touch $@

# The local stack's Node.js parts (s3rver: the broker's storage), pinned by package-lock.json.
NODE_DIR := tools/devstack/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

# The browser libraries the web service serves (uPlot for the dashboard's charts), pinned by its
# package-lock.json; the application image copies them with services/.
WEB_NODE_DIR := services/web
WEB_NODE_STAMP := $(WEB_NODE_DIR)/node_modules/.installed
$(WEB_NODE_STAMP): $(WEB_NODE_DIR)/package.json $(WEB_NODE_DIR)/package-lock.json
	npm ci --prefix $(WEB_NODE_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

venv: $(STAMP) $(NODE_STAMP) $(WEB_NODE_STAMP)  ## create the virtualenv and install everything

# The Helm SDK and Kubernetes schemas (~350 MB): the chart's tests need them, so `make test`
# installs them too.
HELM_STAMP := $(VENV)/.helm-installed
$(HELM_STAMP): requirements-helm.txt $(STAMP)
	$(PY) -m pip install --progress-bar on -q -r requirements-helm.txt
	@$(PY) -c "import helm_python, kubernetes_validate" || { echo "helm SDK missing after install"; exit 1; }
	@touch $@

REDOCLY := $(NODE_DIR)/node_modules/.bin/redocly
gen: $(STAMP) $(NODE_STAMP) $(WEB_NODE_STAMP)  ## generate Python code, Envoy's descriptor set, the OpenAPI description and API docs from protos/, the chart's service topology and Envoy configuration
	$(PY) tools/gen_protos.py
	$(PY) tools/chart_topology.py
	$(PY) -m devstack.envoy --chart --out helm/payment-gateway/files/envoy.yaml
	$(PY) tools/openapi_spec.py gen/descriptors.pb gen/openapi.json $(IMAGE_VERSION)
	@$(REDOCLY) build-docs gen/openapi.json --inlineBundle --title "Payment gateway API" \
	  -o gen/api-docs.html > /dev/null 2>&1 || { echo "redocly build-docs failed"; exit 1; }

run: gen  ## start the whole stack in the foreground (Ctrl-C stops it); REPLICAS=orchestrator=2,webhook=2 runs copies
	$(PY) -m devstack run

run-dev: run  ## the seed's name for `make run`

# Production settings on the local stack: APP_ENV=production, so every development secret is
# refused (set your own in the environment or .env), and no demo data. Its own state directory.
run-prod: gen  ## the local stack with production settings (refuses development secrets, no demo data)
	$(PY) -m devstack --state-dir .stack-prod run --production

up: gen  ## start the whole stack in the background; REPLICAS=orchestrator=2,webhook=2 runs copies
	$(PY) -m devstack up

down:  ## stop a stack started with `make up`
	$(PY) -m devstack down

status:  ## show what the background stack is running
	$(PY) -m devstack status

# Every test, measured: line and branch coverage of libs/ and services/, the services included
# (they run as subprocesses of the test stack; pyproject.toml [tool.coverage]). Under the floor
# the run fails.
COVERAGE_FLOOR ?= 90
COVERAGE := $(VENV)/bin/coverage
test: gen $(HELM_STAMP)  ## unit tests (the Helm chart's too), then end-to-end tests against a stack the harness starts itself; coverage floor COVERAGE_FLOOR %
	@rm -rf .coverage-data && mkdir -p .coverage-data
	$(COVERAGE) run -m pytest -q
	@$(COVERAGE) combine -q
	@echo "coverage of libs/ and services/ (lines and branches): $$($(COVERAGE) report --format=total)% (floor $(COVERAGE_FLOOR)%)"
	@$(COVERAGE) report --format=total --fail-under=$(COVERAGE_FLOOR) > /dev/null || \
	  { echo "coverage is under the floor of $(COVERAGE_FLOOR)%: make test-coverage shows where"; exit 2; }

test-coverage: test  ## `make test`, then the coverage table and an HTML report in htmlcov/
	$(COVERAGE) report --skip-covered --sort=cover
	$(COVERAGE) html -q -d htmlcov
	@echo "HTML report: htmlcov/index.html"

test-integration: test-e2e  ## the seed's name for the end-to-end tests (real stack, through Envoy)

# The sandbox providers' contract: their rules (unit) and the gateway talking to them over the
# network, callbacks and failures included (end to end).
test-providers: gen  ## the sandbox provider contract tests
	$(PY) -m pytest -q tests/unit/test_sandbox_*.py tests/e2e/test_provider_*.py

load-test: bench  ## the seed's name for `make bench`

test-unit: gen $(HELM_STAMP)
	$(PY) -m pytest -q tests/unit

test-e2e: gen
	$(PY) -m pytest -q tests/e2e

lint: gen  ## ruff, mypy, import boundaries, buf lint/format/breaking, the OpenAPI description (redocly)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs services tools tests
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format --diff --exit-code
	@$(REDOCLY) lint gen/openapi.json --format=summary 2>&1 | grep -v -e '^ *║' -e '^ *╔' -e '^ *╚' ; \
	  exit $${PIPESTATUS[0]}
	@if git rev-parse -q --verify main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  $(VENV)/bin/buf breaking --against '.git#branch=main'; else echo "buf breaking: no main baseline yet"; fi

fmt: $(STAMP)  ## format code and protos
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/buf format -w

db-migrate: gen  ## apply every service's pending SQL migrations (DB_* variables)
	$(PY) -m gateway_core.db migrate

db-seed: gen  ## load demo data: a merchant and its pricing (idempotent)
	$(PY) -m orchestrator.seed

token: $(STAMP)  ## print a JWT: make token MERCHANT=<id> ROLE=merchant|admin [TTL=<seconds, at most JWT_MAX_LIFETIME>]
	@$(PY) -m gateway_core.tokens --merchant "$(MERCHANT)" --role "$(or $(ROLE),merchant)" --ttl "$(or $(TTL),3600)"

helm-lint: gen $(HELM_STAMP)  ## lint, render and schema-check the Helm chart (installs requirements-helm.txt, ~350 MB)
	$(PY) -m pytest -q -rs tests/unit/test_helm_chart.py

# BENCH_RATE, BENCH_DURATION, BENCH_WARMUP, BENCH_MERCHANTS, BENCH_GET_DURATION (the GET phase;
# 0: none), BENCH_OUT, BENCH_GATEWAY (a running gateway instead of a new stack), BENCH_BROKER
# (durable or memory: where the started stack's broker keeps its log) and BENCH_ARGS (any other
# option) pass through.
bench: gen  ## run the load benchmark (starts its own stack)
	$(PY) -m bench $(if $(BENCH_RATE),--rate $(BENCH_RATE)) \
	  $(if $(BENCH_DURATION),--duration $(BENCH_DURATION)) \
	  $(if $(BENCH_WARMUP),--warmup $(BENCH_WARMUP)) \
	  $(if $(BENCH_MERCHANTS),--merchants $(BENCH_MERCHANTS)) \
	  $(if $(BENCH_GET_DURATION),--get-duration $(BENCH_GET_DURATION)) \
	  $(if $(BENCH_OUT),--out $(BENCH_OUT)) \
	  $(if $(BENCH_GATEWAY),--gateway $(BENCH_GATEWAY)) \
	  $(if $(BENCH_BROKER),--broker $(BENCH_BROKER)) $(BENCH_ARGS)

# CHAOS_SEED (default: a random one, printed), CHAOS_DURATION (seconds of load and faults,
# default 180), CHAOS_RATE (journeys/s, default 5) and CHAOS_ARGS (any other option) pass through.
chaos: gen  ## seeded fault injection under load, then the no-loss checks (starts its own stack)
	$(PY) -m chaos $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) \
	  $(if $(CHAOS_DURATION),--duration $(CHAOS_DURATION)) \
	  $(if $(CHAOS_RATE),--rate $(CHAOS_RATE)) $(CHAOS_ARGS)

# FRAUD_BENCH_ARGS passes options through, e.g. FRAUD_BENCH_ARGS="--rate 500 --skip-grpc".
bench-fraud: gen  ## fraud scoring latency, in-process and over gRPC (starts its own Valkey)
	$(PY) -m bench.fraud $(FRAUD_BENCH_ARGS)

# WEBHOOK_BENCH_ARGS passes options through, e.g. WEBHOOK_BENCH_ARGS="--endpoints 20 --rates 10,30".
bench-webhooks: gen  ## webhook deliveries/s and event-to-delivery latency (starts its own stack)
	$(PY) -m bench.webhooks $(WEBHOOK_BENCH_ARGS)

# RECON_BENCH_ARGS passes options through, e.g. RECON_BENCH_ARGS="--lines 200000 --payments 200000".
bench-recon: gen  ## reconciliation speed: 1,000,000 settlement lines against 1,000,000 payments (own PostgreSQL)
	$(PY) -m bench.recon $(RECON_BENCH_ARGS)

# FILE= reconciles a local CSV instead of fetching the provider's file.
recon: gen  ## reconcile a day by hand: make recon PROVIDER=<provider or method> DATE=YYYY-MM-DD [FILE=path]
	$(PY) -m reconciliation run --provider "$(PROVIDER)" --date "$(DATE)" $(if $(FILE),--file "$(FILE)")

# The application image the Helm chart deploys; its name and tag are the chart's defaults.
# BASE=local builds the debian:bookworm-slim base with debootstrap first (no registry needed).
CHART := helm/payment-gateway/Chart.yaml
IMAGE_VERSION = $(shell awk -F'"' '/^appVersion:/ {print $$2}' $(CHART))
IMAGE ?= paygate/payment-gateway:$(IMAGE_VERSION)
image: gen  ## build the application image (docker/podman, or buildah; BASE=local: no registry)
	IMAGE=$(IMAGE) VERSION=$(IMAGE_VERSION) BASE=$(BASE) tools/image/build.sh

image-test: gen image  ## run migrations and every service from the image (buildah) and the end-to-end smoke
	PAYGATE_STACK_IMAGE=$(IMAGE) $(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_image.py

lock: $(STAMP)  ## re-resolve requirements.txt into requirements.lock (exact versions and hashes)
	$(VENV)/bin/uv pip compile requirements.txt --generate-hashes --python-version 3.11 \
	  --python-platform linux --quiet -o requirements.lock

fraud-model: $(STAMP)  ## retrain the fraud model: writes services/fraud/fraud/model/fraud-model-*.json and REPORT.md
	$(PY) services/fraud/training/train.py $(FRAUD_MODEL_ARGS)

clean:  ## remove generated code and local stack state
	rm -rf gen .stack $(NODE_DIR)/node_modules
