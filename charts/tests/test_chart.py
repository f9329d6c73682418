"""The Helm chart: rendered with its defaults and with every documented toggle, linted, every
object validated against the Kubernetes 1.33 schemas, and checked for what matters to a
cluster operator (the agent's privileges, RBAC, host network, leader election, the CRDs being
the generator's output, the examples being valid custom resources).

Helm itself runs in-process through helm-python-sdk (Helm's Go SDK); no helm binary and no
cluster are needed.
"""

import copy
import json
import re
import subprocess

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import CHART, EXAMPLES, ROOT, load_docs, portwarden_bin

KUBE_VERSION = "1.33.0"
RELEASE, NAMESPACE = "portwarden", "portwarden"

# Each documented toggle (values.yaml) with a value that changes what is rendered.
TOGGLES = {
    "defaults": {},
    "controller-disabled": {"controller": {"enabled": False}},
    "controller-single-replica": {"controller": {"replicas": 1}},
    "pdb-disabled": {"controller": {"podDisruptionBudget": {"enabled": False}}},
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s"},
            "prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "driftFor": "2m"},
        },
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                             "annotations": {"grafana_folder": "Security"}},
    },
    "monitoring-without-controller": {
        "controller": {"enabled": False},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "grafanaDashboard": {"enabled": True},
    },
    "no-metrics-service": {"metrics": {"service": {"enabled": False}}},
    "external-rbac-and-accounts": {
        "rbac": {"create": False},
        "agent": {"serviceAccount": {"create": False, "name": "pw-agent"}},
        "controller": {"serviceAccount": {"create": False, "name": "pw-controller"}},
    },
    "agent-tuning": {
        "logFormat": "text",
        "agent": {
            "refresh": 30, "scanInterval": 0, "peers": 3, "backend": "legacy", "port": 19750,
            "failsafe": [{"protocol": "TCP", "ports": "2222"}, {"protocol": "udp", "ports": 68}],
            "extraArgs": ["--poll-ms=500"], "env": [{"name": "RUST_LOG", "value": "debug"}],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}],
            "nodeSelector": {"role": "web"}, "priorityClassName": "",
            "podAnnotations": {"a": "b"}, "podLabels": {"team": "sec"},
        },
    },
    "no-failsafe": {"agent": {"failsafe": []}},
    "scan-rate": {"agent": {"scanRate": 5000, "confirmBudget": 20}},
    "image-digest-and-pull-secret": {
        "image": {"repository": "registry.example/portwarden", "digest": "sha256:" + "a" * 64,
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
    },
    "names-and-labels": {"fullnameOverride": "pw", "commonLabels": {"cost-center": "sec"},
                         "controller": {"leaderElection": {"leaseName": "pw-leader"},
                                        "resync": 60, "port": 19751}},
}

# Kinds of the prometheus-operator CRDs: not in the core schemas, checked structurally below.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.fixture(scope="session")
def chart():
    return helm.Chart.load(str(CHART))


_rendered, _parsed = {}, {}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render(chart, values=None):
    """The rendered objects (NOTES.txt excluded) as dicts (a fresh copy; renders are cached)."""
    key = json.dumps(values or {}, sort_keys=True)
    if key not in _rendered:
        _rendered[key] = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    if key not in _parsed:
        docs = []
        for path, text in sorted(_rendered[key].items()):
            if not path.endswith("NOTES.txt"):
                docs += [d for d in yaml.load_all(text, Loader=LOADER) if d]
        _parsed[key] = docs
    return copy.deepcopy(_parsed[key])


def notes(chart, values=None):
    render(chart, values)
    out = _rendered[json.dumps(values or {}, sort_keys=True)]
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


# --- render, lint, validate -------------------------------------------------------------------


@pytest.mark.parametrize("toggle", TOGGLES)
def test_renders_and_every_object_validates_for_kubernetes_1_33(chart, toggle):
    docs = render(chart, TOGGLES[toggle])
    assert docs
    validated = 0
    for d in docs:
        if d["kind"] in OPERATOR_KINDS:
            check_operator_object(d)
            continue
        # strict: unknown fields are errors too (a typo in a template is not silently dropped).
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
        validated += 1
    assert validated >= 3
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"
    assert "CustomResourceDefinition" not in {d["kind"] for d in docs}, "CRDs belong in crds/"
    assert notes(chart, TOGGLES[toggle]).strip()


def check_operator_object(d):
    """ServiceMonitor and PrometheusRule: their CRDs are not part of Kubernetes' schemas, so
    the fields prometheus-operator needs are checked here, and every PromQL expression names
    only metrics portwarden exports."""
    assert d["apiVersion"] == "monitoring.coreos.com/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"])
    spec = d["spec"]
    if d["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints"}
        assert spec["selector"]["matchLabels"]
        for e in spec["endpoints"]:
            assert set(e) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
            assert e["port"] == "http" and e["path"] == "/metrics"
    else:
        for g in spec["groups"]:
            assert set(g) == {"name", "rules"}
            for r in g["rules"]:
                assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, r
                assert re.fullmatch(r"[0-9]+[smh]", r["for"])
                assert r["labels"]["severity"] in ("info", "warning", "critical")
                assert {"summary", "description"} <= set(r["annotations"])
                assert_known_metrics(r["expr"])


@pytest.mark.parametrize("toggle", TOGGLES)
def test_helm_lint_has_no_errors(toggle):
    report = helm.lint(str(CHART), TOGGLES[toggle], strict=True, namespace=NAMESPACE,
                       kube_version="v" + KUBE_VERSION)
    assert report["errors"] == []
    # Severity 3 is an error, 2 a warning; strict makes warnings errors too. Info (the chart
    # has no icon) is allowed.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("bad", [
    {"logFormat": "xml"},
    {"agent": {"port": 0}},
    {"agent": {"refresh": 0}},
    {"agent": {"backend": "iptables"}},
    {"agent": {"failsafe": [{"protocol": "SCTP", "ports": "22"}]}},
    {"agent": {"failsafe": [{"protocol": "TCP", "ports": "22,80"}]}},
    {"agent": {"scanIntervall": 60}},
    {"image": {"digest": "latest"}},
    {"metrics": {"prometheusRule": {"driftFor": "ten minutes"}}},
])
def test_schema_refuses_bad_values(chart, bad):
    with pytest.raises(helm.HelmError):
        render(chart, bad)


# --- what matters ---------------------------------------------------------------------------


def test_agent_runs_on_the_host_network_with_net_admin_and_net_raw_only(chart):
    ds = one(render(chart), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}], "must tolerate every taint"
    assert "hostPID" not in pod and "hostIPC" not in pod
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert c["args"][:2] == ["agent", "--kube"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["ports"] == [{"name": "http", "containerPort": 9750, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in c["env"]
    # The xtables lock is the host's, shared with kube-proxy and the CNI.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert mounts["xtables-lock"]["mountPath"] == "/run/xtables.lock"
    assert vols["xtables-lock"]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    # portwarden's own lock directory is the host's too: the pod agent and a `portwarden apply`
    # run on the node take the same one-writer-per-namespace lock, and a second agent refuses.
    assert mounts["portwarden-locks"]["mountPath"] == "/run/portwarden"
    assert "readOnly" not in mounts["portwarden-locks"]
    assert vols["portwarden-locks"]["hostPath"] == {"path": "/run/portwarden", "type": "DirectoryOrCreate"}
    # The only host paths are the two locks.
    assert [v["name"] for v in pod["volumes"] if "hostPath" in v] == ["xtables-lock", "portwarden-locks"]


def test_the_lock_directory_follows_its_value(chart):
    ds = one(render(chart, {"agent": {"lockDir": "/var/run/pw-locks"}}), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["portwarden-locks"]["hostPath"] == {"path": "/var/run/pw-locks", "type": "DirectoryOrCreate"}
    # Inside the container it is always the default directory: no flag or variable needed.
    [c] = pod["containers"]
    assert {m["name"]: m for m in c["volumeMounts"]}["portwarden-locks"]["mountPath"] == "/run/portwarden"


def test_no_container_is_privileged_or_gains_capabilities_beyond_the_agents(chart):
    for toggle in TOGGLES.values():
        for d in render(chart, toggle):
            if d["kind"] not in ("DaemonSet", "Deployment"):
                continue
            pod = d["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                sc = c["securityContext"]
                assert sc.get("privileged") is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                allowed = ["NET_ADMIN", "NET_RAW"] if d["kind"] == "DaemonSet" else []
                assert sc["capabilities"].get("add", []) == allowed
            if d["kind"] == "Deployment":
                assert pod["securityContext"]["runAsNonRoot"] is True
                assert "hostNetwork" not in pod


def test_agent_flags_follow_the_values(chart):
    v = TOGGLES["agent-tuning"]
    ds = one(render(chart, v), "DaemonSet")
    [c] = ds["spec"]["template"]["spec"]["containers"]
    assert c["args"] == [
        "agent", "--kube", "--peers=3", "--refresh=30", "--scan-interval=0",
        "--metrics-addr=0.0.0.0:19750", "--failsafe=tcp:2222,udp:68", "--backend=legacy",
        "--log-format=text", "--poll-ms=500",
    ]
    assert c["ports"][0]["containerPort"] == 19750
    no_failsafe = one(render(chart, TOGGLES["no-failsafe"]), "DaemonSet")
    assert "--failsafe=none" in no_failsafe["spec"]["template"]["spec"]["containers"][0]["args"]
    rated = one(render(chart, TOGGLES["scan-rate"]), "DaemonSet")
    assert "--scan-rate=5000" in rated["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--confirm-budget=20" in rated["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--scan-rate") for a in c["args"]), "0 means no flag"
    assert not any(a.startswith("--confirm-budget") for a in c["args"]), "0 means no flag"
    assert "scans are disabled" in notes(chart, v)


def cli_flags(*command):
    out = subprocess.run([str(portwarden_bin()), *command, "--help"], capture_output=True,
                         text=True, check=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


@pytest.mark.parametrize("kind,command", [("DaemonSet", "agent"), ("Deployment", "controller")])
def test_every_flag_the_chart_passes_exists_in_the_binary(chart, kind, command):
    """The chart and the CLI are released together: a renamed flag must fail here, not in a
    crash-looping pod."""
    known = cli_flags(command)
    for toggle in TOGGLES.values():
        for d in by_kind(render(chart, toggle), kind):
            args = d["spec"]["template"]["spec"]["containers"][0]["args"]
            assert args[0] == command
            for a in args[1:]:
                assert a.split("=")[0] in known, f"{a} is not a flag of portwarden {command}"


def test_controller_has_two_replicas_leader_election_and_a_disruption_budget(chart):
    docs = render(chart)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert "--lease-name=portwarden-controller" in c["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert by_kind(render(chart, TOGGLES["controller-single-replica"]), "PodDisruptionBudget") == []
    lease = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == NAMESPACE]
    assert lease[0]["rules"][0]["resourceNames"] == ["portwarden-controller"]
    renamed = render(chart, TOGGLES["names-and-labels"])
    role = [r for r in by_kind(renamed, "Role") if r["metadata"]["name"].endswith("leader-election")]
    assert role[0]["rules"][0]["resourceNames"] == ["pw-leader"]


EXPECTED_RULES = {
    # What crates/kube calls; see the comment at the top of templates/rbac.yaml.
    "portwarden-agent": {
        ("portwarden.io", "portpolicies", "list"), ("portwarden.io", "portpolicies", "watch"),
        ("portwarden.io", "portreports", "create"), ("portwarden.io", "portreports", "patch"),
        ("", "nodes", "list"), ("", "nodes", "watch"),
    },
    "portwarden-controller": {
        ("portwarden.io", "portpolicies", "list"), ("portwarden.io", "portpolicies", "watch"),
        ("portwarden.io", "portreports", "list"), ("portwarden.io", "portreports", "watch"),
        ("portwarden.io", "portpolicies/status", "patch"),
        ("", "nodes", "list"), ("", "nodes", "watch"),
    },
    "portwarden-controller-leader-election": {
        ("coordination.k8s.io", "leases", "get"), ("coordination.k8s.io", "leases", "patch"),
        ("coordination.k8s.io", "leases", "create"),
    },
    "portwarden-controller-events": {
        ("events.k8s.io", "events", "create"), ("events.k8s.io", "events", "patch"),
    },
}


def flatten(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_rbac_is_least_privilege_without_wildcards(chart):
    docs = render(chart)
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    assert {r["metadata"]["name"]: flatten(r["rules"]) for r in roles} == EXPECTED_RULES
    for toggle in TOGGLES.values():
        for r in by_kind(render(chart, toggle), "ClusterRole") + by_kind(render(chart, toggle), "Role"):
            for rule in r["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                    assert "*" not in rule.get(key, []), f"{r['metadata']['name']}: {rule}"
                assert not {"escalate", "bind", "impersonate", "delete", "deletecollection",
                            "update"} & set(rule["verbs"])
    # Events of cluster-scoped objects land in "default"; nothing else there.
    events = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "default"]
    assert [r["metadata"]["name"] for r in events] == ["portwarden-controller-events"]
    # Each binding names its component's ServiceAccount.
    sas = {sa["metadata"]["name"] for sa in by_kind(docs, "ServiceAccount")}
    for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert b["subjects"][0]["name"] in sas
        assert b["subjects"][0]["namespace"] == NAMESPACE
    external = render(chart, TOGGLES["external-rbac-and-accounts"])
    assert not {"ServiceAccount", "ClusterRole", "Role"} & {d["kind"] for d in external}
    assert one(external, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "pw-agent"


def test_metrics_services_select_the_pods_and_name_their_port(chart):
    docs = render(chart, TOGGLES["monitoring"])
    svcs = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    assert svcs["portwarden-agent-metrics"]["spec"]["clusterIP"] == "None"
    for w in by_kind(docs, "DaemonSet") + by_kind(docs, "Deployment"):
        labels = w["spec"]["template"]["metadata"]["labels"]
        matching = [s for s in svcs.values()
                    if s["spec"]["selector"].items() <= labels.items()]
        assert len(matching) == 1
        port = w["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert matching[0]["spec"]["ports"][0]["port"] == port
    for sm in by_kind(docs, "ServiceMonitor"):
        target = [s for s in svcs.values()
                  if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(target) == 1 and sm["metadata"]["labels"]["release"] == "prom"
    assert len(by_kind(docs, "ServiceMonitor")) == 2
    assert len(by_kind(render(chart, TOGGLES["monitoring-without-controller"]), "ServiceMonitor")) == 1


def test_alerts_cover_drift_and_a_failing_agent(chart):
    rule = one(render(chart, TOGGLES["monitoring"]), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"PortwardenDrift", "PortwardenAgentDown", "PortwardenAgentMissing",
            "PortwardenAgentReconcileFailing"} <= set(alerts)
    assert "portwarden_drift_ports" in alerts["PortwardenDrift"]["expr"]
    assert alerts["PortwardenDrift"]["for"] == "2m"
    assert 'job="portwarden-agent-metrics"' in alerts["PortwardenAgentDown"]["expr"]


def exported_metrics():
    """Every metric name registered in crates/agent/src/metrics.rs (the agents') and
    crates/kube/src/metrics.rs (the controller's), with the suffixes the Prometheus client adds
    (counters: _total; histograms: _bucket, _sum, _count)."""
    names = set()
    for path, prefix in (("crates/agent/src/metrics.rs", "portwarden_"),
                         ("crates/kube/src/metrics.rs", "portwarden_controller_")):
        src = (ROOT / path).read_text()
        # register("name", ...) and a collector's encode_descriptor("name", ...)
        for name in re.findall(r'(?:register|encode_descriptor)\(\s*"([a-z_]+)"', src):
            base = prefix + name
            names |= {base, base + "_total", base + "_bucket", base + "_sum", base + "_count"}
    names.add("up")
    return names


def assert_known_metrics(expr):
    used = set(re.findall(r"\b(portwarden_[a-z_]+|up)\b", expr))
    unknown = used - exported_metrics()
    assert not unknown, f"{expr}: unknown metrics {unknown}"


def test_grafana_dashboard_is_picked_up_by_the_sidecar_and_shows_drift_and_latency(chart):
    cm = one(render(chart, TOGGLES["monitoring"]), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dash = json.loads(cm["data"]["portwarden.json"])
    titles = {p["title"]: p for p in dash["panels"]}
    assert {"Drift by node and port", "Reconcile latency (agents)", "Scan latency (agents)"} <= set(titles)
    assert "by (node, port, protocol)" in titles["Drift by node and port"]["targets"][0]["expr"]
    assert "scan_duration_seconds_bucket" in titles["Scan latency (agents)"]["targets"][0]["expr"]
    assert "portwarden_entry_packets_total" in titles["Packets by entry"]["targets"][0]["expr"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        for t in p["targets"]:
            assert_known_metrics(t["expr"])
    assert by_kind(render(chart), "ConfigMap") == []


def test_crds_are_the_generators_output_and_not_templated(chart):
    out = subprocess.run([str(portwarden_bin()), "crd"], capture_output=True, text=True, check=True)
    assert out.stdout == (CHART / "crds" / "portwarden.io.yaml").read_text()
    assert [c["name"] for c in chart.crds] == ["crds/portwarden.io.yaml"]
    kinds = {d["spec"]["names"]["kind"] for d in load_docs(CHART / "crds" / "portwarden.io.yaml")}
    assert kinds == {"PortPolicy", "PortReport"}
    for t in (CHART / "templates").iterdir():
        assert "CustomResourceDefinition" not in t.read_text(), t


# --- example custom resources ---------------------------------------------------------------


def openapi_to_jsonschema(s):
    """Kubernetes' structural schema → JSON Schema: `nullable` becomes a null type; an object
    with declared properties refuses others, as the API server does with strict field
    validation (kubectl's default); the other x-kubernetes-* extensions are annotations
    jsonschema ignores (CEL rules are checked by the kube crate's tests with kube-cel)."""
    if isinstance(s, dict):
        s = {k: (openapi_to_jsonschema(v) if k != "properties" else
                 {name: openapi_to_jsonschema(sub) for name, sub in v.items()})
             for k, v in s.items()}
        if ("properties" in s and "additionalProperties" not in s
                and not s.get("x-kubernetes-preserve-unknown-fields")):
            s["additionalProperties"] = False
        if s.pop("nullable", False) and "type" in s:
            s["type"] = [s["type"], "null"]
        if s.get("x-kubernetes-int-or-string"):
            s.pop("type", None)
            s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return s
    if isinstance(s, list):
        return [openapi_to_jsonschema(v) for v in s]
    return s


def crd_schemas():
    out = {}
    for crd in load_docs(CHART / "crds" / "portwarden.io.yaml"):
        for v in crd["spec"]["versions"]:
            key = (f'{crd["spec"]["group"]}/{v["name"]}', crd["spec"]["names"]["kind"])
            schema = openapi_to_jsonschema(v["schema"]["openAPIV3Schema"])
            # Implicit in every CRD: the API server adds them to the root.
            schema["properties"].update({"apiVersion": {"type": "string"},
                                         "kind": {"type": "string"},
                                         "metadata": {"type": "object"}})
            out[key] = schema
    return out


def example_resources():
    docs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for d in load_docs(path):
            if d.get("kind") in ("PortPolicy", "PortReport"):
                docs.append(pytest.param(path, d, id=f"{path.relative_to(EXAMPLES)}:{d['metadata']['name']}"))
    return docs


@pytest.mark.parametrize("path,doc", example_resources())
def test_example_custom_resources_validate_against_the_crd_schema(path, doc):
    schema = crd_schemas()[(doc["apiVersion"], doc["kind"])]
    jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)


def test_the_crd_schema_refuses_what_it_should():
    schema = crd_schemas()[("portwarden.io/v1alpha1", "PortPolicy")]
    good = load_docs(EXAMPLES / "quarantine" / "quarantine.yaml")[0]
    bad = json.loads(json.dumps(good))
    bad["spec"]["ports"][0]["state"] = "blocked"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema, cls=jsonschema.Draft7Validator)
    bad = json.loads(json.dumps(good))
    bad["spec"]["prority"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema, cls=jsonschema.Draft7Validator)


GITOPS = EXAMPLES / "gitops"
EXAMPLE_POLICY_FILES = {"quarantine/quarantine.yaml", "web/web.yaml", "db/db.yaml"}


def gitops(path):
    return json.loads((GITOPS / path).read_text())


def flux_kept(ignore, rel):
    """Whether a file survives a GitRepository's `ignore` (gitignore syntax, the subset used:
    anchored "/*" and "!/dir/" lines)."""
    kept = True
    for line in ignore.splitlines():
        neg, pat = line.startswith("!"), line.lstrip("!")
        if pat == "/*" or rel.startswith(pat.strip("/") + "/"):
            kept = neg
    return kept


def test_gitops_manifests_install_the_chart_and_sync_the_example_policies(chart):
    files = sorted(p.relative_to(GITOPS).as_posix() for p in GITOPS.rglob("*.json"))
    docs = {f: gitops(f) for f in files}
    kinds = {(d["apiVersion"], d["kind"]) for d in docs.values()}
    assert kinds == {
        ("source.toolkit.fluxcd.io/v1", "GitRepository"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
        ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
        ("v1", "Namespace"),
        ("argoproj.io/v1alpha1", "Application"),
    }
    kubernetes_validate.validate(docs["flux/release/namespace.json"], KUBE_VERSION, strict=True)
    repo_files = [p.relative_to(ROOT).as_posix() for top in ("charts", "examples")
                  for p in (ROOT / top).rglob("*") if p.is_file()]

    # Flux: the release Kustomization applies flux/release/ from a source that keeps it and the chart.
    repos = {d["metadata"]["name"]: d for d in docs.values() if d["kind"] == "GitRepository"}
    ks = {d["metadata"]["name"]: d for d in docs.values() if d["kind"] == "Kustomization"}
    release = ks["portwarden"]
    src = repos[release["spec"]["sourceRef"]["name"]]["spec"]["ignore"]
    path = release["spec"]["path"].lstrip("./")
    applied = [f for f in repo_files if f.startswith(path + "/") and flux_kept(src, f)]
    assert sorted(applied) == ["examples/gitops/flux/release/helmrelease.json",
                               "examples/gitops/flux/release/namespace.json"]
    hr = docs["flux/release/helmrelease.json"]
    chart_path = hr["spec"]["chart"]["spec"]["chart"].lstrip("./")
    assert chart_path == "charts/portwarden" and flux_kept(src, chart_path + "/Chart.yaml")
    assert hr["spec"]["chart"]["spec"]["sourceRef"]["name"] == release["spec"]["sourceRef"]["name"]
    assert hr["spec"]["upgrade"]["crds"] == "CreateReplace"
    # The policies: after the release, exactly the example PortPolicies.
    pol = ks["portwarden-policies"]
    assert pol["spec"]["dependsOn"] == [{"name": "portwarden"}] and pol["spec"]["prune"] is True
    src = repos[pol["spec"]["sourceRef"]["name"]]["spec"]["ignore"]
    path = pol["spec"]["path"].lstrip("./")
    synced = {f[len(path) + 1:] for f in repo_files if f.startswith(path + "/") and flux_kept(src, f)}
    assert synced == EXAMPLE_POLICY_FILES

    # Argo CD: the chart in wave 0, the policies in wave 1.
    apps = {d["metadata"]["name"]: d for d in docs.values() if d["kind"] == "Application"}
    app = apps["portwarden"]
    assert app["spec"]["source"]["path"] == "charts/portwarden"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    pol = apps["portwarden-policies"]["spec"]
    assert int(apps["portwarden-policies"]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) > \
        int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
    include = pol["source"]["directory"]["include"].strip("{}").split(",")
    base = EXAMPLES.parent / pol["source"]["path"]
    synced = {p.relative_to(base).as_posix() for g in include for p in base.glob(g)}
    assert synced == EXAMPLE_POLICY_FILES
    for f in synced:
        assert {d["kind"] for d in load_docs(base / f)} == {"PortPolicy"}

    # The chart values both carry are valid and render.
    for values in (hr["spec"]["values"], app["spec"]["source"]["helm"]["valuesObject"]):
        docs = render(chart, values)
        assert one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["image"] \
            == "registry.example.com/portwarden:0.1.0"
        assert by_kind(docs, "PrometheusRule") and by_kind(docs, "ConfigMap")
