# portwarden's runtime image: the `portwarden` binary and iptables with both backends
# (Debian's iptables package ships iptables-nft and iptables-legacy; the agent detects which one
# holds the host's rules, --backend overrides).
#
# Build it with `make image`: our machines reach no container registry, so the base is a
# minimal Debian root filesystem made with debootstrap (the host's release, so the binary built
# on the host finds the same glibc) and `docker import`ed as portwarden-base:<release>. With a
# registry, any slim Debian of the same release works as the base:
#
#   cargo build --release -p portwarden
#   docker build --build-arg BASE=debian:bookworm-slim --build-arg BIN=target/release/portwarden -t portwarden .
#
# It runs as root on purpose: the agent needs CAP_NET_ADMIN (netfilter writes) and CAP_NET_RAW
# (raw probes), and Kubernetes and Docker give added capabilities to a non-root process only
# through ambient capabilities, which neither offers; a non-root iptables fails with EPERM. Run it
# with every other capability dropped (the Helm chart does: drop ALL, add NET_ADMIN and NET_RAW,
# not privileged, read-only root filesystem). The controller needs no capability and runs as
# 65534 in the chart.
ARG BASE=portwarden-base:bookworm
FROM ${BASE}

ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The debootstrap base already has iptables; a stock slim base gets it here.
RUN if ! command -v iptables-legacy >/dev/null || ! command -v iptables-nft >/dev/null; then \
      apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && iptables-legacy --version && iptables-nft --version

ARG BIN=portwarden
COPY ${BIN} /usr/local/bin/portwarden

USER 0:0
ENTRYPOINT ["/usr/local/bin/portwarden"]
CMD ["--help"]
