# Lethe: `make demo` runs the main job on embedded defaults, `make test` runs the checks.
# Both set up everything they need first (a .venv and node_modules) and are idempotent.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP  := $(VENV)/.lethe-installed
NPM_STAMP := node_modules/.lethe-installed
NPM_TEST_STAMP := node_modules/.lethe-test-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test test-containers containers-images lint demo bench bench-secagg bench-unlearning bench-gas bench-federation bench-ingest bench-ingest-memory bench-sentiment bench-privacy bench-faults bench-epoch bench-verify clean

# `make setup` installs what `make demo` runs; `make setup-test` adds the test-only tools.
# Each long step prints a line first and its time after (a fresh clone's pip step takes
# minutes, with no output of its own under --quiet).
.PHONY: setup-test
setup: $(PY_STAMP) $(NPM_STAMP)

setup-test: setup $(NPM_TEST_STAMP)

$(PY_STAMP): pyproject.toml requirements.lock
	@echo "setup 1/3: Python packages from requirements.lock into $(VENV) (fresh clone: ~2 min) …"
	@start=$$(date +%s); \
	{ test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && \
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock && \
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . && \
	echo "setup 1/3: Python packages done in $$(( $$(date +%s) - start )) s"
	@touch $@

# npm 11 blocks install scripts; none of our tools needs one (anvil is called from
# its platform package, solc-js is pure JS/wasm). `npm install` with the committed lock
# installs exactly the locked tree; `npm ci` refuses it because one optional, never-used
# dependency deep in js-ipfs (electron-eval → headless) points at a git tarball.
# The demo needs only `dependencies` (solc-js, anvil: 10 packages); `devDependencies`
# (js-ipfs for the Kubo-backend tests, the reference UnixFS importer) are for `make test`.
$(NPM_STAMP): package.json package-lock.json
	@echo "setup 2/3: npm tools for the demo (solc-js, anvil) into node_modules …"
	@start=$$(date +%s); \
	npm install --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error && \
	echo "setup 2/3: npm demo tools done in $$(( $$(date +%s) - start )) s"
	@touch $@

# npm rewrites package-lock.json (same content, new mtime): both stamps are touched after
# it, or every later make would reinstall both trees.
$(NPM_TEST_STAMP): $(NPM_STAMP)
	@echo "setup 3/3: npm tools for the tests (js-ipfs daemon, UnixFS importer; ~1,730 packages, fresh clone: ~3 min) …"
	@start=$$(date +%s); \
	npm install --ignore-scripts --no-audit --no-fund --loglevel=error && \
	echo "setup 3/3: npm test tools done in $$(( $$(date +%s) - start )) s"
	@touch $(NPM_STAMP) $@

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# The explorer's browser test drives the system Chromium (Debian package, never a download).
test: lint
	@scripts/ensure_chromium.sh
	$(BIN)/pytest -q

demo: setup
	$(BIN)/lethe demo

# The compose federation under podman, built with no registry and no package index: a
# Debian base made with debootstrap, Python wheels and the anvil tarball from a wheelhouse
# filled on this host, js-ipfs from node_modules (README, "Running a federation").
export CONTAINERS_CONF := $(CURDIR)/docker/containers.conf
OFFLINE_BUILD := --build-arg BASE_IMAGE=localhost/lethe-base:bookworm

containers-images: setup-test
	@scripts/ensure_podman.sh
	@start=$$(date +%s); step=$$start; \
	lap() { now=$$(date +%s); echo "containers: $$1 in $$(( now - step )) s"; step=$$now; }; \
	docker/base-image.sh && lap "base image" && \
	PIP=$(BIN)/pip docker/wheelhouse.sh && lap "wheelhouse" && \
	podman build -q -f docker/Dockerfile --target runtime $(OFFLINE_BUILD) --build-arg PACKAGES=wheelhouse -t lethe:0.1.0 . && lap "lethe image" && \
	podman build -q -f docker/Dockerfile --target devstore $(OFFLINE_BUILD) -t lethe-devstore:0.1.0 . && lap "devstore image" && \
	echo "containers: images built in $$(( $$(date +%s) - start )) s"

test-containers: containers-images
	@start=$$(date +%s); \
	$(BIN)/pytest -q -m containers tests/containers -p no:cacheprovider && \
	echo "containers: compose test passed in $$(( $$(date +%s) - start )) s"

bench: bench-secagg bench-unlearning bench-gas bench-federation bench-ingest bench-ingest-memory bench-sentiment bench-privacy bench-faults bench-epoch bench-verify

bench-secagg: setup
	$(BIN)/python -m bench.secagg

bench-unlearning: setup
	$(BIN)/python -m bench.unlearning

bench-epoch: setup
	$(BIN)/python -m bench.epoch

# Manifest bytes and recomputation seconds of verifying a round at 3, 10, 30 senders → bench/results/verify.json
bench-verify: setup
	$(BIN)/python -m bench.verify

bench-gas: setup
	$(BIN)/python -m bench.gas

bench-federation: setup
	$(BIN)/python -m bench.federation

bench-faults: setup
	$(BIN)/python -m bench.faults

bench-ingest: setup
	$(BIN)/python -m bench.ingest

# Peak RSS of streaming a 50 MB CSV of short rows into a node (limit 500 MB) → bench/results/ingest_memory.json
bench-ingest-memory: setup
	$(BIN)/python -m bench.ingest_memory

# Accuracy on the held-out split of the global model that decides POST /feedback → bench/results/sentiment.json
bench-sentiment: setup
	$(BIN)/python -m bench.sentiment

bench-privacy: setup
	$(BIN)/python -m bench.privacy

clean:
	rm -rf $(VENV) node_modules .lethe .pytest_cache .mypy_cache .ruff_cache
