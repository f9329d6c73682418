# portwarden — the two commands a newcomer needs are `make demo` and `make test`.
# Both install their own prerequisites (scripts/deps.sh) and must run as root: the lab uses
# network namespaces and iptables inside them (never in the root namespace).

CARGO ?= cargo
BIN := target/release/portwarden

.PHONY: demo test lint fmt bench build deps clean

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
