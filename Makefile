# portwarden — the two commands a newcomer needs are `make demo` and `make test`.
# Both install their own prerequisites (scripts/deps.sh) and must run as root: the lab uses
# network namespaces and iptables inside them (never in the root namespace).

CARGO ?= cargo
BIN := target/release/portwarden
# The image `make image` builds; IMAGE=registry.example.com/portwarden:0.1.0 to tag for a push.
IMAGE ?= portwarden:latest
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: demo test lint fmt bench bench-quick build deps clean image chart-test soak soak-load soak-fuzz

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

# The long runs `make test` only samples (about 30 minutes with the defaults): the load run, then
# each fuzz target. Figures and how to read them: docs/reliability.md.
soak: soak-load soak-fuzz

# The agent under 200 policy changes a minute for 10 minutes on 10 000 rules (release build):
# latency percentiles, final state, memory. PW_LOAD_SECONDS / PW_LOAD_RULES to change the size.
soak-load:
	scripts/soak-load.sh

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

# The benchmark suite (crates/bench, as root): portwarden's release binary against nmap, masscan
# and iptables on a namespace lab; writes docs/benchmarks.md and docs/img/bench-*.png (about
# 10 minutes on 2 cores after the build, most of it the UDP workloads under the node's ICMP
# rate limit, which take the node's time). Two builds, so the measured binary is exactly the one
# `cargo build --release -p portwarden` makes (building both at once would unify features). QUICK=1, or `make bench-quick`: every workload with fewer runs and
# sizes in about three minutes, written under the target directory so a development run never
# overwrites the committed report.
BENCH_OUT = $(if $(QUICK),$(TARGET_DIR)/bench-quick/benchmarks.md,docs/benchmarks.md)
bench:
	scripts/deps.sh bench
	$(CARGO) build --release -p portwarden
	$(CARGO) build --release -p portwarden-bench
	mkdir -p $(dir $(BENCH_OUT))
	$(TARGET_DIR)/release/portwarden-bench $(if $(QUICK),--quick) \
	    --portwarden $(TARGET_DIR)/release/portwarden --out $(BENCH_OUT)

bench-quick:
	$(MAKE) --no-print-directory bench QUICK=1

clean:
	$(CARGO) clean
