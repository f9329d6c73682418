#!/usr/bin/env bash
# Builds the portwarden container image without pulling anything from a registry:
#   1. the base: a minimal Debian of the host's release made with debootstrap and imported with
#      `docker import` (cached: the image portwarden-base:<release> is reused, and the root
#      filesystem tarball under $PORTWARDEN_CACHE survives `docker image rm`);
#   2. `docker build` of ./Dockerfile on it with the given binary.
# Usage: scripts/image.sh BINARY TAG      (BASE=debian:bookworm-slim to use a registry base)
#        scripts/image.sh --rootfs-only   makes (or reuses) the cached root filesystem tarball
#                                         only, needs no Docker engine, and prints its path: the
#                                         lab's own engines (crates/lab, docker.rs) import it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${PORTWARDEN_CACHE:-/var/cache/portwarden}"

# shellcheck disable=SC1091
release="$(. /etc/os-release && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}")" || true

# Prints the path of $cache/rootfs-<release>.tar, making it first when missing. Concurrent
# callers (parallel tests, a test beside `make image`) serialise on a lock, so one debootstrap
# runs and the others reuse its tarball.
rootfs_tarball() {
  [ -n "$release" ] || { echo "image: the host is not Debian; pass BASE=<a slim image of the glibc the binary needs>" >&2; return 1; }
  local tarball="$cache/rootfs-$release.tar"
  mkdir -p "$cache"
  exec 9>"$cache/rootfs-$release.lock"
  flock 9
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "image: debootstrap is missing (apt-get install debootstrap)" >&2; return 1; }
    local tmp
    tmp="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$tmp" "$tmp.log"' EXIT
    echo "image: debootstrap $release (minbase + iptables) into $tmp" >&2
    debootstrap --variant=minbase --include=iptables "$release" "$tmp" \
      "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$tmp.log" 2>&1 \
      || { tail -20 "$tmp.log" >&2; return 1; }
    # Slim: no apt caches, documentation, manuals or locales in a runtime image.
    rm -rf "$tmp"/var/cache/apt/* "$tmp"/var/lib/apt/lists/* "$tmp"/usr/share/doc/* \
      "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* "$tmp"/usr/share/locale/* \
      "$tmp"/var/log/* "$tmp"/tmp/*
    tar --numeric-owner -C "$tmp" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$tmp" "$tmp.log"
    trap - EXIT
  fi
  exec 9>&-
  echo "$tarball"
}

if [ "${1:-}" = --rootfs-only ]; then
  rootfs_tarball
  exit 0
fi

bin="${1:?usage: scripts/image.sh BINARY TAG | --rootfs-only}"
tag="${2:?usage: scripts/image.sh BINARY TAG | --rootfs-only}"
[ -x "$bin" ] || { echo "image: $bin is not an executable (cargo build --release -p portwarden)" >&2; exit 1; }
command -v docker >/dev/null && docker info >/dev/null 2>&1 \
  || { echo "image: no Docker engine is reachable" >&2; exit 1; }

if [ -z "${BASE:-}" ]; then
  [ -n "$release" ] || { echo "image: the host is not Debian; pass BASE=<a slim image of the glibc the binary needs>" >&2; exit 1; }
  BASE="portwarden-base:$release"
  if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    tarball="$(rootfs_tarball)"
    echo "image: docker import $tarball as $BASE" >&2
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' "$tarball" "$BASE" >/dev/null
  fi
fi

# The build context holds the binary only, stripped (the release profile keeps debug info:
# ~140 MB with it, a fraction without).
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx" "$ctx.log"' EXIT
cp "$bin" "$ctx/portwarden"
if command -v strip >/dev/null; then strip "$ctx/portwarden"; fi
# The classic builder: it is in every engine (BuildKit needs the buildx plugin); its output is
# shown only when the build fails.
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build -f "$root/Dockerfile" \
  --build-arg BASE="$BASE" --build-arg BIN=portwarden -t "$tag" "$ctx" >"$ctx.log" 2>&1 \
  || { cat "$ctx.log" >&2; rm -f "$ctx.log"; exit 1; }
echo "image: built $tag on $BASE ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
