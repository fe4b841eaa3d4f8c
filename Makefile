# Orzbob Cloud Billing — `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench fmt lint install clean browser web-test verify wrk proof
CHROMIUM ?= /usr/bin/chromium
# pytest-xdist workers for `make test` (auto: one per core; 0 runs the suite in one process).
TEST_WORKERS ?= auto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/orz dev

# The browser tests drive Debian's Chromium; never a downloaded browser build.
browser:
	@test -x $(CHROMIUM) || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; }

# The React BillingCard: npm ci from the committed lock file, Vitest, then the library build.
web-test:
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run build

test: install browser web-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The seed's verification scripts: each runs its part's tests and a short smoke run against a
# started service. On demand (not part of `make test`); every script runs, failures are listed.
VERIFY := billing-secrets metering usage-emission budget-alerts throttle cli-dashboard docs-support

verify: install
	@failed=""; for s in $(VERIFY); do hack/verify-$$s.sh || failed="$$failed $$s"; done; \
	if [ -n "$$failed" ]; then echo "make verify: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make verify: all $(words $(VERIFY)) checks passed"

# The full-size proofs (PostgreSQL): the crash and chaos runs with their summary table, then
# schemathesis and the webhook fuzzing with many more examples than CI gives them.
proof: install
	$(BIN)/python -m tests.proof.crash $(PROOF_ARGS)
	ORZBOB_FUZZ_EXAMPLES=$${ORZBOB_FUZZ_EXAMPLES:-100} $(BIN)/python -m pytest tests/proof tests/fuzz -k "not crash" $(PYTEST_ARGS)

# wrk (Debian's package) generates the HTTP load; figures are ratios to a same-run baseline.
wrk:
	@command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; }

bench: install wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

fmt: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
