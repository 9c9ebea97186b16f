# The two commands a newcomer needs: `make demo` and `make test`. Each sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Test files run spread over the cores (one worker per core; `make test TEST_WORKERS=0` runs them in
# this process); a file stays on one worker, so its module-scoped fixtures (a synthesized stack) run once.
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile
CONSTRAINTS := constraints.txt
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-unit test-integration test-infrastructure test-e2e synth schemas examples bench \
        bench-% setup-demo setup-test setup-bench setup-cdk mosquitto chromium clean lint

# --- set-up -------------------------------------------------------------------------------------
$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.demo-installed: $(VENV)/bin/activate pyproject.toml setup.py $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[local]'
	touch $@

$(VENV)/.test-installed: $(VENV)/bin/activate pyproject.toml setup.py $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[local,gateway,cdk,dev,pipelines]'
	touch $@ $(VENV)/.demo-installed

$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[local,gateway,cdk,dev,pipelines,bench]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }

# headless Chromium, in which tests/e2e/test_demo_report_browser.py opens the demo report (Debian's package;
# without Recommends, which bring avahi, polkit and printer daemons: ~150 packages, ~200 MB on a bare bookworm)
chromium:
	@test -x /usr/bin/chromium || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

setup-demo: $(VENV)/.demo-installed mosquitto
setup-test: $(VENV)/.test-installed node_modules/.installed mosquitto chromium
setup-cdk: $(VENV)/.test-installed node_modules/.installed

# --- the two commands ---------------------------------------------------------------------------
demo: setup-demo
	$(VENV)/bin/edgeloop demo

test: setup-test
	$(PYTEST) tests

test-unit: setup-test
	$(PYTEST) tests/unit
test-integration: setup-test
	$(PYTEST) tests/integration
test-infrastructure: setup-test
	$(PYTEST) tests/infrastructure
test-e2e: setup-test
	$(PYTEST) tests/e2e

# --- the rest -----------------------------------------------------------------------------------
synth: setup-cdk
	npx cdk synth --no-notices --quiet
	@# W3005: CDK adds a DependsOn on each function's role that its GetAtt already implies
	$(VENV)/bin/cfn-lint --non-zero-exit-code error --ignore-checks W3005 -- cdk.out/*.template.json
	@echo "synth: cdk-nag AwsSolutions and cfn-lint report no unacknowledged findings"

schemas: $(VENV)/.demo-installed
	$(PY) -m edgeloop.schemas.export

# the second example line's recording, mapping and use case (device_shims/examples/pipe_extrusion/)
examples: $(VENV)/.demo-installed
	$(PY) -m edgeloop.device_shims.pipe_extrusion

setup-bench: setup-test $(VENV)/.bench-installed

bench: setup-bench
	$(PY) -m benchmarks all

bench-%: setup-bench
	$(PY) -m benchmarks $*

# `edgeloop backfill` of 30 days x 15 metrics at 0.5 Hz through ingest's validation into curated
# Parquet -> benchmarks/results/onboarding.json (`make bench` runs it with every other area).
bench-onboarding: setup-bench
	$(PY) -m benchmarks onboarding

# What AWS would bill per gateway-month: 2/4/8 simulated gateways on the local stack, every billed call
# counted, priced from benchmarks/cost_prices_us_east_1.json -> benchmarks/results/cost.json (about 3 min).
bench-cost: setup-bench
	$(PY) -m benchmarks cost

# Live accuracy: one line-day (30 s predictions x 1 Hz target) joined and scored, and the gateway's alert
# quality on the extrusion simulator (benchmarks/alerts_quality.py) -> benchmarks/results/monitoring.json.
bench-monitoring: setup-bench
	$(PY) -m benchmarks monitoring

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf cdk.out .pytest_cache demo-report.html .edgeloop
