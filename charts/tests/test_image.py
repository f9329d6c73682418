"""The container image, built and run for real: `scripts/image.sh` (what `make image` runs)
builds it from a debootstrap base without any registry; three containers run its agent on the
example policies with only NET_ADMIN and NET_RAW, each on a dedicated Docker network; a
scanner container then checks what an outsider sees, port by port, and `portwarden verify`
reports everything in sync.

Netfilter: every iptables call happens inside the containers' own network namespaces (the
agents'). The test never runs iptables on the host; the only host rules that change are the
ones Docker itself adds for the network it creates, and they go when the network is removed.

Skipped (with the reason) where no Docker engine runs; under CI=true that is a failure.
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import EXAMPLES, ROOT, in_ci, portwarden_bin

NODES = {"web-1": ("web", 11, "legacy"), "web-2": ("web", 12, "nft"), "db-1": ("db", 13, "auto")}
SCANNER = 2
DEADLINE = 90  # seconds for the agents to apply and answer


def docker(*args, check=True, timeout=300):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def docker_available():
    if not shutil.which("docker"):
        return "the docker command is not installed"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"no Docker engine answers: {r.stderr.strip()[:200]}"
    return None


def free_subnet():
    """A /24 in 10.214.0.0/16 that no route and no Docker network uses."""
    used = []
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    for word in routes.split():
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            pass
    nets = docker("network", "ls", "-q").stdout.split()
    if nets:
        for n in json.loads(docker("network", "inspect", *nets).stdout):
            for c in (n.get("IPAM") or {}).get("Config") or []:
                if c.get("Subnet"):
                    used.append(ipaddress.ip_network(c["Subnet"], strict=False))
    start = int(uuid.uuid4().int % 200)
    for i in range(256):
        cand = ipaddress.ip_network(f"10.214.{(start + i) % 256}.0/24")
        if not any(cand.overlaps(u) for u in used if u.version == 4 and u.prefixlen > 0):
            return cand
    pytest.fail("no free /24 in 10.214.0.0/16 for the test network")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = docker_available()
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but {reason}: the container test must run in CI")
        pytest.skip(f"container image test skipped: {reason}")
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.fail("busybox (busybox-static) is missing: run scripts/deps.sh test")

    run_id = uuid.uuid4().hex[:8]
    tag = f"portwarden-test:{run_id}"
    net = f"portwarden-test-{run_id}"
    names = {n: f"pw-{run_id}-{n}" for n in list(NODES) + ["scanner"]}
    created = {"containers": [], "network": None, "image": None}
    started = time.monotonic()
    try:
        binary = os.environ.get("PORTWARDEN_IMAGE_BIN") or str(portwarden_bin())
        subprocess.run([str(ROOT / "scripts" / "image.sh"), binary, tag], check=True,
                       capture_output=True, text=True, timeout=900)
        created["image"] = tag
        subnet = free_subnet()
        hosts = list(subnet.hosts())
        ip = {n: str(hosts[NODES[n][1] - 1]) for n in NODES}
        ip["scanner"] = str(hosts[SCANNER - 1])
        docker("network", "create", "--driver", "bridge", "--internal", "--subnet", str(subnet),
               "--label", "portwarden-test=1", net)
        created["network"] = net

        work = tmp_path_factory.mktemp("image")
        inventory = work / "inventory.yaml"
        inventory.write_text(
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n" + "".join(
                f'  - name: {n}\n    addresses: ["{ip[n]}"]\n    labels: {{role: {NODES[n][0]}}}\n'
                for n in NODES))
        policies = work / "policies"
        policies.mkdir()
        for sub in ("quarantine", "web", "db"):
            shutil.copytree(EXAMPLES / sub, policies / sub)

        common = ["--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
                  "--read-only", "--tmpfs", "/run", "--tmpfs", "/tmp",
                  "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
                  "--network", net, "--label", "portwarden-test=1",
                  "-v", f"{policies}:/etc/portwarden/policies:ro",
                  "-v", f"{inventory}:/etc/portwarden/inventory.yaml:ro",
                  "-v", f"{busybox}:/usr/local/bin/busybox:ro"]
        for n, (_, _, backend) in NODES.items():
            docker("run", "-d", "--name", names[n], "--hostname", n, "--ip", ip[n], *common, tag,
                   "agent", "--policy-dir", "/etc/portwarden/policies",
                   "--inventory", "/etc/portwarden/inventory.yaml", "--node", n,
                   "--backend", backend, "--refresh", "2", "--log-format", "json")
            created["containers"].append(names[n])
        # The web servers the web policy keeps open: httpd on 80 and 443 in the web nodes.
        for n, (role, _, _) in NODES.items():
            if role == "web":
                for port in (80, 443):
                    docker("exec", "-d", names[n], "busybox", "httpd", "-f", "-p", str(port), "-h", "/tmp")
        # The scanner: raw probes need NET_RAW only.
        docker("run", "-d", "--name", names["scanner"], "--hostname", "scanner", "--ip", ip["scanner"],
               "--cap-drop", "ALL", "--cap-add", "NET_RAW", "--read-only", "--network", net,
               "--label", "portwarden-test=1",
               "-v", f"{policies}:/policies:ro", "-v", f"{inventory}:/inventory.yaml:ro",
               "--entrypoint", "/usr/local/bin/busybox",
               "-v", f"{busybox}:/usr/local/bin/busybox:ro", tag, "sleep", "3600")
        created["containers"].append(names["scanner"])

        # Ready = every agent's /readyz answers 200 (policies loaded, rules applied). Asked
        # from the host over the Docker bridge (no proxy), with a deadline.
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + DEADLINE
        pending = set(NODES)
        while pending and time.monotonic() < deadline:
            for n in sorted(pending):
                try:
                    with no_proxy.open(f"http://{ip[n]}:9750/readyz", timeout=2) as r:
                        if r.status == 200:
                            pending.discard(n)
                except OSError:
                    pass
            if pending:
                time.sleep(0.2)  # polling interval, not synchronisation: the loop waits on /readyz
        if pending:
            logs = {n: docker("logs", "--tail", "30", names[n], check=False).stderr for n in pending}
            pytest.fail(f"agents not ready within {DEADLINE}s: {logs}")
        yield {"names": names, "ip": ip, "tag": tag, "started": started}
    finally:
        for c in created["containers"]:
            docker("rm", "-f", "-v", c, check=False)
        if created["network"]:
            docker("network", "rm", created["network"], check=False)
        if created["image"]:
            docker("image", "rm", "-f", created["image"], check=False)
        print(f"\ncontainer lab: {time.monotonic() - started:.1f}s including the image build")


def scan(lab, node, ports, kind="syn"):
    # By node name: the scanner refuses targets that are not in an inventory.
    r = docker("exec", lab["names"]["scanner"], "/usr/local/bin/portwarden", "scan",
               "--inventory", "/inventory.yaml", node, "-p", ports, "--scan", kind, "-o", "json")
    [host] = json.loads(r.stdout)["hosts"]
    return {p["port"]: p["state"] for p in host["ports"]}


def test_image_is_small_has_both_iptables_backends_and_runs_as_root(lab):
    tag = lab["tag"]
    size = int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout)
    print(f"\nimage size: {size / 1e6:.0f} MB")
    assert size < 400e6
    out = docker("run", "--rm", "--entrypoint", "/bin/sh", tag, "-c",
                 "iptables-legacy --version && iptables-nft --version && portwarden --version && id -u").stdout
    assert "legacy" in out and "nf_tables" in out and out.strip().endswith("0")


def test_an_outside_scan_sees_the_intended_states(lab):
    for web in ("web-1", "web-2"):
        # web: 80 and 443 open (httpd listens), 8080 closed (quarantine), 9090 filtered except
        # from the bastion network (the scanner is not in it).
        assert scan(lab, web, "80,443,8080,9090") == {80: "open", 443: "open", 8080: "closed", 9090: "filtered"}, web
        assert scan(lab, web, "161", "udp") == {161: "closed"}, web
    # db: PostgreSQL filtered from outside the application network, Redis closed.
    assert scan(lab, "db-1", "5432,6379") == {5432: "filtered", 6379: "closed"}


def test_verify_from_the_scanner_reports_in_sync(lab):
    r = docker("exec", lab["names"]["scanner"], "/usr/local/bin/portwarden", "verify",
               "-f", "/policies", "--inventory", "/inventory.yaml", "-o", "json", check=False)
    assert r.returncode == 0, f"verify exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
    report = json.loads(r.stdout)
    assert report["summary"]["drift"] == 0
    assert report["summary"]["in_sync"] >= 10
    nodes = {row["node"] for row in report["results"]}
    assert nodes == set(NODES)
    assert all(row["verdict"] in ("in_sync", "indeterminate") for row in report["results"])


def test_the_rules_live_in_the_containers(lab):
    """Each agent wrote its chains with the backend it was given, inside its own network
    namespace (read with the container's iptables-save; the host's netfilter is never read or
    written by this test)."""
    for n, (_, _, backend) in NODES.items():
        tools = {"legacy": ["iptables-legacy-save"], "nft": ["iptables-nft-save"],
                 "auto": ["iptables-legacy-save", "iptables-nft-save"]}[backend]
        text = "".join(docker("exec", lab["names"][n], t, "-t", "filter", check=False).stdout for t in tools)
        assert ":PORTWARDEN-" in text and re.search(r"^-A INPUT .*-j PORTWARDEN", text, re.M), (n, text)
