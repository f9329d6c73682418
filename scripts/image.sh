#!/usr/bin/env bash
# Builds the portwarden container image without pulling anything from a registry:
#   1. the base: a minimal Debian of the host's release made with debootstrap and imported with
#      `docker import` (cached: the image portwarden-base:<release> is reused, and the root
#      filesystem tarball under $PORTWARDEN_CACHE survives `docker image rm`);
#   2. `docker build` of ./Dockerfile on it with the given binary.
# Usage: scripts/image.sh BINARY TAG      (BASE=debian:bookworm-slim to use a registry base)
set -euo pipefail
bin="${1:?usage: scripts/image.sh BINARY TAG}"
tag="${2:?usage: scripts/image.sh BINARY TAG}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${PORTWARDEN_CACHE:-/var/cache/portwarden}"

[ -x "$bin" ] || { echo "image: $bin is not an executable (cargo build --release -p portwarden)" >&2; exit 1; }
command -v docker >/dev/null && docker info >/dev/null 2>&1 \
  || { echo "image: no Docker engine is reachable" >&2; exit 1; }

# shellcheck disable=SC1091
release="$(. /etc/os-release && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}")" || true
if [ -z "${BASE:-}" ]; then
  [ -n "$release" ] || { echo "image: the host is not Debian; pass BASE=<a slim image of the glibc the binary needs>" >&2; exit 1; }
  BASE="portwarden-base:$release"
  if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    tarball="$cache/rootfs-$release.tar"
    if [ ! -s "$tarball" ]; then
      command -v debootstrap >/dev/null || { echo "image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
      mkdir -p "$cache"
      tmp="$(mktemp -d "$cache/rootfs.XXXXXX")"
      trap 'rm -rf "$tmp"' EXIT
      echo "image: debootstrap $release (minbase + iptables) into $tmp" >&2
      debootstrap --variant=minbase --include=iptables "$release" "$tmp" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$tmp.log" 2>&1 \
        || { tail -20 "$tmp.log" >&2; rm -f "$tmp.log"; exit 1; }
      rm -f "$tmp.log"
      # Slim: no apt caches, documentation, manuals or locales in a runtime image.
      rm -rf "$tmp"/var/cache/apt/* "$tmp"/var/lib/apt/lists/* "$tmp"/usr/share/doc/* \
        "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* "$tmp"/usr/share/locale/* \
        "$tmp"/var/log/* "$tmp"/tmp/*
      tar --numeric-owner -C "$tmp" -cf "$tarball.part" .
      mv "$tarball.part" "$tarball"
      rm -rf "$tmp"
      trap - EXIT
    fi
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
