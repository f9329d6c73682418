#!/usr/bin/env bash
# `make soak-load`: the agent under 200 policy changes a minute for PW_LOAD_SECONDS (default
# 600) on PW_LOAD_RULES policy entries (default 10000), in a lab network namespace, release
# build. Prints a summary: changes, applies, write->kernel latency percentiles, time to the
# final state, RSS and CPU of the agent. Fails when a change never reaches the kernel, the
# final state differs from the files, or memory grows. Run as root; nothing outside the lab is
# touched. The short version runs in `make test` (crates/cli/tests/load.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh demo  # iproute2 and iptables: what the lab needs
export PW_LOAD_SECONDS="${PW_LOAD_SECONDS:-600}" PW_LOAD_RULES="${PW_LOAD_RULES:-10000}"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
echo "soak-load: ${PW_LOAD_SECONDS} s of changes on ${PW_LOAD_RULES} entries (release build)" >&2
PW_LOAD_REPORT="$report" PORTWARDEN_REQUIRE_LAB=1 \
  "${CARGO:-cargo}" test --release -p portwarden --test load -- \
  --ignored --exact soak_agent_under_load --nocapture --test-threads 1
echo
cat "$report"
