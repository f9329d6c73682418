# portwarden — the two commands a newcomer needs are `make demo` and `make test`.
# Both install their own prerequisites (scripts/deps.sh) and must run as root: the lab uses
# network namespaces and iptables inside them (never in the root namespace).

CARGO ?= cargo
BIN := target/release/portwarden
# The image `make image` builds; IMAGE=registry.example.com/portwarden:0.1.0 to tag for a push.
IMAGE ?= portwarden:latest
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: demo test lint fmt bench build deps clean image chart-test soak-fuzz

build:
	$(CARGO) build --release -p portwarden -p portwarden-demo

demo: build
	scripts/deps.sh demo
	scripts/demo.sh $(BIN)

test:
	scripts/deps.sh test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory chart-test

# The Helm chart (render, lint, Kubernetes 1.33 schemas, RBAC, CRDs, GitOps examples) and the
# container image, built and run on a Docker network (skipped without a Docker engine, except
# under CI=true). The tests use the debug binary `cargo test` already built: a second, release
# build of the whole dependency tree would double CI's compile time for no extra coverage.
chart-test:
	scripts/deps.sh test
	$(CARGO) build -p portwarden
	PORTWARDEN_BIN=$(TARGET_DIR)/debug/portwarden .venv/bin/pytest -q -p no:cacheprovider charts/tests

# The container image, without a registry: debootstrap base (cached), then docker build.
image:
	$(CARGO) build --release -p portwarden
	scripts/image.sh $(TARGET_DIR)/release/portwarden $(IMAGE)

# Long fuzz runs of the parsers of untrusted input (fuzz/; nightly + cargo-fuzz, installed when
# missing): FUZZ_SECONDS per target (default 600), fails on any crash, timeout or OOM. The
# corpora in fuzz/corpus are replayed by `make test` already.
soak-fuzz:
	scripts/soak-fuzz.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	scripts/deps.sh bench
	$(CARGO) bench --workspace

clean:
	$(CARGO) clean
