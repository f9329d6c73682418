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
  # the fault-injection tests: hold an xtables lock, drop capabilities, a private tmpfs
  [flock]=util-linux
  [setpriv]=util-linux
  [unshare]=util-linux
  [nsenter]=util-linux
)
if [ "$want" = test ]; then
  # The chart tests' Python (a venv below) and the container image's base (debootstrap, also
  # the lab engines' image); the image test and the lab's containers and pods borrow busybox's
  # httpd as web servers.
  pkgs[debootstrap]=debootstrap
  pkgs[busybox]=busybox-static
  # The lab's own Docker engines (crates/lab, docker.rs): dockerd in a node's namespace on
  # fuse-overlayfs (vfs when that cannot work), the firewalld-style nft table, kube-proxy's
  # chain hashes (sha256sum).
  pkgs[dockerd]=docker.io
  pkgs[docker]=docker.io
  pkgs[fuse-overlayfs]=fuse-overlayfs
  pkgs[nft]=nftables
  pkgs[sha256sum]=coreutils
  # The HTML report's browser tests (crates/reconcile/tests/html_chromium.rs): headless
  # Chromium renders the page, its DOM and screenshot are checked.
  pkgs[chromium]=chromium
  /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || pkgs[pw-python3-venv]=python3-venv
fi
if [ "$want" = bench ]; then
  pkgs[masscan]=masscan
  pkgs[hyperfine]=hyperfine
  # The HTML report's figure: the page of 100 nodes x 100 ports in headless Chromium.
  pkgs[chromium]=chromium
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

# The chart tests' venv (.venv, git-ignored): Helm's Go SDK in a wheel, Kubernetes' schemas,
# pytest. Pinned, so every machine renders and validates alike; rebuilt only when they change.
if [ "$want" = test ]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  venv="$root/.venv"
  reqs="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 jsonschema==4.26.0 pytest==9.2.0 PyYAML==6.0.4"
  if [ "$(cat "$venv/.portwarden-reqs" 2>/dev/null)" != "$reqs" ]; then
    echo "deps: creating $venv ($reqs)" >&2
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check $reqs >/dev/null
    echo "$reqs" >"$venv/.portwarden-reqs"
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
