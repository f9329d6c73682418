#!/usr/bin/env bash
# Installs what portwarden's demo, tests and benchmarks need, only when missing, so a newcomer's
# fresh machine (and CI's) needs nothing done by hand. Usage: scripts/deps.sh [test|demo|bench]
set -euo pipefail
want="${1:-test}"

# command -> Debian package
declare -A pkgs=(
  [ip]=iproute2
  [iptables]=iptables
  [iptables-legacy]=iptables
  [nmap]=nmap
  [ndiff]=ndiff
  [tc]=iproute2
)
if [ "$want" = bench ]; then
  pkgs[masscan]=masscan
  pkgs[hyperfine]=hyperfine
fi

missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${missing[*]}; run as root or install them: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
