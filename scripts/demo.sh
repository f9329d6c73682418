#!/usr/bin/env bash
# `make demo`: portwarden on the examples. First the policy layer (validate, a mistake, explain
# the seed story's decisions), then the whole job on a lab of network namespaces: agents apply
# the policies, verify scans from outside, things break, the report names the causes, the
# agents repair rule drift (crates/demo). Run as root; nothing outside the lab is touched.
set -euo pipefail
bin="${1:-target/release/portwarden}"
cd "$(dirname "$0")/.."

if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; else bold=; dim=; off=; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }

step "Validate the example policies and inventory"
run "$bin" validate examples/

step "A mistake is reported at its token, with a suggestion, and nothing is applied"
set +e
run "$bin" validate tests/fixtures/invalid/bad-state.yaml tests/fixtures/invalid/cidr-host-bits.yaml
code=$?
set -e
echo "(exit code $code)"
[ "$code" -eq 1 ] || { echo "demo: expected exit code 1 for invalid files" >&2; exit 1; }

step "The seed story: port 80 on web-1, from the attacker and from anyone else"
run "$bin" explain -f examples --node web-1 --port 80/tcp --from 172.16.7.80
run "$bin" explain -f examples --node web-1 --port 80/tcp --from 10.213.1.2

step "The quarantined port and the admin console through the bastion"
run "$bin" explain -f examples --node web-1 --port 8080/tcp --from 10.213.1.2
run "$bin" explain -f examples --node web-1 --port 9090/tcp --from 10.213.1.2
run "$bin" explain -f examples --node web-1 --port 9090/tcp --from 10.213.2.2

step "The same answer as JSON, for scripts"
run "$bin" explain -f examples --node web-1 --port 80/tcp --from 172.16.7.80 -o json

step "The whole job on a lab: apply, verify, break, explain, repair"
demo_bin="$(dirname "$bin")/portwarden-demo"
"$demo_bin" "$bin"
