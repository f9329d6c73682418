//! The custom resources: `PortPolicy` (what users write) and `PortReport` (what each node's
//! agent observes), both cluster-scoped in `portwarden.io/v1alpha1`.
//!
//! A key design decision is that `PortPolicy`'s spec *is* the standalone document's spec
//! ([`portwarden_policy::PortPolicySpec`], wrapped in a transparent newtype so kube's derive
//! can hang the resource on it): one format, one schema, one semantic validator
//! ([`portwarden_policy::validate::policy`]) for files and for the cluster. The CRD's schema is
//! generated from those types by schemars; `portwarden crd` prints it and the chart ships the
//! generated copy (a test fails when the copy is stale).
//!
//! A `PortReport` is a record that one agent writes about its node and the peers it scans; no
//! one reconciles it towards a desired state, so (like an Event) it has no status subresource
//! and its content lives in `spec`, written by server-side apply with the agent's own field
//! manager. Its size is bounded by construction ([`MAX_FINDINGS`] and the schema's
//! `maxItems`), however many ports drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every portwarden resource.
pub const GROUP: &str = "portwarden.io";

/// At most this many not-in-sync ports are listed in one `PortReport` (drift first); the rest
/// are counted in `omittedFindings`. Keeps a report well under 100 KiB whatever happens.
pub const MAX_FINDINGS: usize = 100;

/// At most this many per-policy counters in one `PortReport`.
pub const MAX_POLICY_COUNTS: usize = 1024;

/// At most this many peers listed in one `PortReport`.
pub const MAX_PEERS: usize = 64;

/// At most this many notes in one `PortReport`.
pub const MAX_NOTES: usize = 16;

/// At most this many expired entries listed in one `PortReport` (by policy, then entry); the
/// rest are counted in `omittedExpiredEntries`.
pub const MAX_EXPIRED: usize = 100;

/// At most this many per-entry packet counts in one `PortReport` (those that matched last and
/// most); the rest are counted in `omittedEntries`.
pub const MAX_ENTRY_COUNTS: usize = 100;

/// At most this many expired entries in a `PortPolicy`'s status: as many as a policy can have
/// ([`portwarden_policy::document::MAX_ENTRIES`]), so none is left out.
pub const MAX_STATUS_EXPIRED: usize = portwarden_policy::document::MAX_ENTRIES as usize;

/// What the policy says: which nodes it selects, its priority, and for each entry which ports
/// must look open, closed or filtered to which sources.
// Each `printcolumn(...)` repeats the same keys, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[kube(
    group = "portwarden.io",
    version = "v1alpha1",
    kind = "PortPolicy",
    plural = "portpolicies",
    singular = "portpolicy",
    shortname = "ppol",
    category = "portwarden",
    status = "PortPolicyStatus",
    derive = "PartialEq",
    doc = "Which ports on the selected nodes must look open, closed or filtered, and to which sources.",
    printcolumn(
        name = "Priority",
        type_ = "integer",
        json_path = ".spec.priority",
        description = "Lower wins when policies overlap"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.matchedNodes",
        description = "Nodes the selector matches"
    ),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.appliedNodes",
        description = "Matched nodes whose agent applied this generation"
    ),
    printcolumn(
        name = "In sync",
        type_ = "integer",
        json_path = ".status.ports.inSync",
        description = "Ports that look as intended from the scanning peers"
    ),
    printcolumn(
        name = "Drift",
        type_ = "integer",
        json_path = ".status.ports.drift",
        description = "Ports that do not"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"InSync\")].reason",
        description = "Reason of the InSync condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(transparent)]
pub struct PolicySpec(pub portwarden_policy::PortPolicySpec);

/// Decodes a spec so that *any* value the schema admits decodes: a `ports` value that is not
/// a number, a string or a list of those (the schema cannot type the union, see
/// [`portwarden_policy::document::Ports`]) becomes its JSON text, which the validator then
/// refuses with a message. Without this, one object with `ports: true` would fail to decode,
/// fail the watcher's whole list, and stall every agent and the controller.
impl<'de> Deserialize<'de> for PolicySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = serde_json::Value::deserialize(d)?;
        if let Some(entries) = v.get_mut("ports").and_then(|p| p.as_array_mut()) {
            for entry in entries {
                if let Some(ports) = entry.get_mut("ports") {
                    tolerate_ports(ports);
                }
            }
        }
        serde_json::from_value(v)
            .map(PolicySpec)
            .map_err(serde::de::Error::custom)
    }
}

/// Rewrites a `ports` value the wire type cannot hold into its JSON text.
fn tolerate_ports(v: &mut serde_json::Value) {
    use serde_json::Value;
    let fits = |v: &Value| match v {
        Value::Number(n) => n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
        Value::String(_) => true,
        _ => false,
    };
    match v {
        Value::Array(items) => {
            for item in items.iter_mut().filter(|i| !fits(i)) {
                *item = Value::String(item.to_string());
            }
        }
        other if !fits(other) => *other = Value::String(other.to_string()),
        _ => {}
    }
}

/// Port counts by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Ports that look as intended.
    #[serde(default)]
    pub in_sync: u64,
    /// Ports that do not.
    #[serde(default)]
    pub drift: u64,
    /// Ports a scan cannot decide (a silent UDP service).
    #[serde(default)]
    pub indeterminate: u64,
}

impl Counts {
    /// Adds another count.
    pub fn add(&mut self, other: &Counts) {
        self.in_sync += other.in_sync;
        self.drift += other.drift;
        self.indeterminate += other.indeterminate;
    }

    /// All ports counted.
    pub fn total(&self) -> u64 {
        self.in_sync + self.drift + self.indeterminate
    }
}

/// What the controller observed about the policy: matched and applied nodes, port counts from
/// the peer scans, and the Applied and InSync conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes the selector matches.
    #[serde(default)]
    pub matched_nodes: u32,
    /// Matched nodes whose agent reports this generation applied.
    #[serde(default)]
    pub applied_nodes: u32,
    /// Ports decided by this policy, by verdict, summed over the latest peer scans.
    #[serde(default)]
    pub ports: Counts,
    /// Nodes with at least one drifting port (at most 20, sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub drift_nodes: Vec<String>,
    /// The policy's entries whose `expires` has passed by the controller's clock, by entry:
    /// no longer applied anywhere (the kernel's time match stopped their rules at the
    /// instant, the agents remove them at their next refresh).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub expired_entries: Vec<ExpiredEntry>,
    /// `Applied` and `InSync`, following the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A policy an agent has applied, at the generation it applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// The policy's name.
    pub name: String,
    /// Its `metadata.generation` when applied.
    #[serde(default)]
    pub generation: i64,
}

/// Port counts of one policy in one report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCounts {
    /// The policy that decides the ports.
    pub policy: String,
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Peers with at least one drifting port of this policy (at most 8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub drift_nodes: Vec<String>,
}

/// One port of one peer that is not in sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The scanned node.
    pub node: String,
    /// The address scanned.
    pub address: String,
    /// The port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The vantage: the probes' source address.
    pub from: String,
    /// Intended state, or `unlisted`.
    pub expected: String,
    /// nmap's word for what the scan saw.
    pub observed: String,
    /// `drift` or `indeterminate`.
    pub verdict: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub cause: Option<String>,
    /// The policy that decides the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Its entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<u32>,
    /// When the observation was confirmed, for a UDP port: the agent re-checks a share of a
    /// peer's UDP ports per scan (as many as the peer's ICMP rate limit lets it answer) and
    /// reports each from its last confirmation. Absent when none was confirmed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<Time>,
}

/// A port entry whose `expires` has passed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiredEntry {
    /// Its index in the policy's `spec.ports`.
    pub entry: u32,
    /// Its ports, as ranges (`8080`, `8000-8100,9000`).
    #[schemars(length(max = 1024))]
    pub ports: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// When it expired.
    pub expires: Time,
}

/// An expired entry of one of the policies applied on a node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeExpiredEntry {
    /// The entry's policy.
    pub policy: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: ExpiredEntry,
}

/// The packets one entry's rules matched on the node, both families summed: the kernel's
/// counters, which count from when the rules were written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryCount {
    /// The entry's policy.
    pub policy: String,
    /// Its index in the policy's `spec.ports`.
    pub entry: u32,
    /// Packets matched.
    #[serde(default)]
    pub packets: u64,
    /// Bytes of those packets.
    #[serde(default)]
    pub bytes: u64,
    /// When the agent last saw the count grow between two of its refreshes (at most one
    /// refresh late); absent when it has not since the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_match: Option<Time>,
}

/// What one node's agent applied and what its scans of its peers saw.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "portwarden.io",
    version = "v1alpha1",
    kind = "PortReport",
    plural = "portreports",
    singular = "portreport",
    shortname = "prep",
    category = "portwarden",
    derive = "PartialEq",
    doc = "What one node's portwarden agent applied and what its scans of its peers saw. Written by the agent; named after the node.",
    printcolumn(name = "Rules", type_ = "integer", json_path = ".spec.rules"),
    printcolumn(
        name = "In sync",
        type_ = "integer",
        json_path = ".spec.summary.inSync"
    ),
    printcolumn(name = "Drift", type_ = "integer", json_path = ".spec.summary.drift"),
    printcolumn(
        name = "Indeterminate",
        type_ = "integer",
        json_path = ".spec.summary.indeterminate",
        priority = 1
    ),
    printcolumn(name = "Scanned", type_ = "date", json_path = ".spec.scannedAt"),
    printcolumn(name = "Reported", type_ = "date", json_path = ".spec.reportedAt"),
    printcolumn(
        name = "Error",
        type_ = "string",
        json_path = ".spec.applyError",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PortReportSpec {
    /// The node whose agent writes the report (also the object's name).
    pub node: String,
    /// Policies applied on the node, with the generation applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub applied: Vec<AppliedPolicy>,
    /// Rules in the node's compiled intent.
    #[serde(default)]
    pub rules: u32,
    /// Why the node's rules could not be made to match its intent, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub apply_error: Option<String>,
    /// Entries of the node's policies whose `expires` has passed (by the agent's clock at its
    /// last refresh), by policy and entry, at most 100: their rules are gone from the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub expired_entries: Vec<NodeExpiredEntry>,
    /// Expired entries left out of `expiredEntries` by the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_expired_entries: u32,
    /// Per-entry packet counts of the entries that matched any packet, by policy and entry, at
    /// most 100 (those that matched last, then most, are kept). As of `countedAt`: a new entry
    /// matching rewrites the report at once, growing counts only with the next write (at
    /// least every 10 minutes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub entries: Vec<EntryCount>,
    /// Entries with packets left out of `entries` by the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_entries: u32,
    /// When the agent read the counters in `entries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_at: Option<Time>,
    /// When the peers were last scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<Time>,
    /// When the agent last wrote or confirmed the report: at least every 10 minutes while it
    /// runs, so an old one means the agent is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<Time>,
    /// The peers this node is assigned to scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub peers: Vec<String>,
    /// Port counts over all scanned peers.
    #[serde(default)]
    pub summary: Counts,
    /// Port counts per deciding policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub policies: Vec<PolicyCounts>,
    /// Ports not in sync, drift first, at most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub findings: Vec<Finding>,
    /// Not-in-sync ports left out of `findings` by the bound.
    #[serde(default)]
    pub omitted_findings: u32,
    /// Remarks on the scan (agents unreachable, fallbacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 512)))]
    pub notes: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Both CustomResourceDefinitions, PortPolicy first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![PortPolicy::crd(), PortReport::crd()]
}

/// The CustomResourceDefinitions as a multi-document YAML stream: what `portwarden crd` prints
/// and what the chart ships under `charts/portwarden/crds/`.
///
/// # Errors
///
/// Only if serialization fails, which would be a bug in the types.
pub fn crds_yaml() -> Result<String, crate::Error> {
    let mut out = String::from(
        "# Generated by `portwarden crd` from the Rust types in crates/kube; do not edit.\n",
    );
    for crd in crds() {
        let value = serde_json::to_value(&crd).map_err(crate::Error::SerializeCrd)?;
        let yaml = serde_saphyr::to_string(&value)
            .map_err(|e| crate::Error::SerializeCrdYaml(e.to_string()))?;
        out.push_str("---\n");
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
