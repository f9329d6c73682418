//! The documents as users write them: `PortPolicy` and `Inventory`.
//!
//! These are wire types: they hold what the user wrote (ports as text, sources as text) so that
//! both the YAML decoder and, later, the Kubernetes API can produce them, and one semantic
//! validation ([`crate::validate`]) turns them into checked intent. They derive serde and
//! schemars because the same shapes become the Kubernetes custom resources.

use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The API group and version of every portwarden document.
pub const API_VERSION: &str = "portwarden.io/v1alpha1";

/// The default `priority` of a policy; lower wins.
pub const DEFAULT_PRIORITY: u32 = 1000;

/// At most this many entries in one policy's `ports` (a bound the CRD schema enforces, so the
/// API server's CEL cost estimate stays finite; the YAML loader does not impose it).
pub const MAX_ENTRIES: u32 = 256;

/// At most this many sources in one entry's `from` (CRD schema bound, as [`MAX_ENTRIES`]).
pub const MAX_SOURCES: u32 = 64;

/// A policy: which ports on the selected nodes must look open, closed or filtered, and to whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortPolicy {
    /// Always `portwarden.io/v1alpha1`.
    pub api_version: String,
    /// Always `PortPolicy`.
    pub kind: String,
    /// Name (unique among policies) and labels.
    pub metadata: Metadata,
    /// What the policy says.
    pub spec: PortPolicySpec,
}

/// Object metadata: the subset of Kubernetes' `ObjectMeta` a standalone document uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The object's name.
    pub name: String,
    /// Labels, for people and tools; portwarden does not interpret them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The body of a [`PortPolicy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortPolicySpec {
    /// Which nodes the policy applies to; empty selects every node.
    #[serde(default)]
    pub node_selector: LabelSelector,
    /// Lower wins when policies overlap. Default 1000.
    #[serde(default = "default_priority")]
    #[schemars(range(max = u32::MAX))]
    pub priority: u32,
    /// Whether open ports that no policy declares open are reported as drift.
    #[serde(default)]
    pub unlisted: Unlisted,
    /// The port entries, evaluated by precedence (not by order).
    #[schemars(length(min = 1, max = MAX_ENTRIES))]
    pub ports: Vec<PortEntry>,
}

fn default_priority() -> u32 {
    DEFAULT_PRIORITY
}

/// One entry of a policy: ports, protocol, intended state, and sources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortEntry {
    /// `"80"`, `"8000-8100"`, `"22,80"`, a number, or a list of those.
    pub ports: Ports,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// How the ports must look to a scanner at the listed sources.
    pub state: State,
    /// Source CIDRs (IPv4 or IPv6; a bare address means one host). Empty means any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "sources_schema")]
    pub from: Vec<String>,
    /// Why the entry exists; shown in explanations and rule comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// When the entry stops applying: an RFC 3339 date-time with an offset
    /// (`2026-12-24T18:00:00Z`). The rules carry a kernel time match, so the entry stops
    /// matching at that instant even when no portwarden process runs, and the next entry in
    /// precedence order decides, as if it were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"), length(max = 64))]
    pub expires: Option<String>,
}

/// The schema of `from`: a bounded list of addresses or networks without host bits, checked by
/// a CEL rule (`isIP`/`isCIDR`, Kubernetes 1.31+) so the API server refuses a bad source at
/// `kubectl apply` time, with the same meaning as [`crate::validate`] (both refuse IPv4-mapped
/// IPv6 sources such as `::ffff:10.0.0.1`).
fn sources_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_SOURCES,
        "items": {
            "type": "string",
            "maxLength": 64,
            "x-kubernetes-validations": [{
                "rule": "isIP(self) || (isCIDR(self) && cidr(self) == cidr(self).masked())",
                "message": "must be an IP address or a network without host bits, e.g. 172.16.7.80 or 10.0.0.0/24 (IPv4 in its own form: IPv4-mapped ::ffff:a.b.c.d is refused)"
            }]
        }
    })
}

/// The `ports` field as written: a number, a string, or a list of either.
///
/// Its schema is hand-written: a structural schema (what a CRD needs) can type a value as
/// int-or-string but not as "number, string or list", so the field is declared with
/// `x-kubernetes-preserve-unknown-fields` and no type. The price is that CEL cannot see it
/// (the API server compiles no rule on an untyped field), so port syntax and range order
/// (`start <= end`) are checked by [`crate::validate`], which the agents and the controller run on
/// every object: a bad value is reported in the policy's status and an Event, never applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ports {
    /// `ports: 80`
    Number(u32),
    /// `ports: "8000-8100"` or `ports: "22,80"`
    Text(String),
    /// `ports: [22, "8000-8100"]`
    List(Vec<PortItem>),
}

impl JsonSchema for Ports {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Ports".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Ports: a number (80), a string (\"80\", \"8000-8100\", \"22,80\"), or a list of those.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// One item of a `ports` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PortItem {
    /// `80`
    Number(u32),
    /// `"8000-8100"`
    Text(String),
}

/// A transport protocol.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "TCP", alias = "tcp")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP", alias = "udp")]
    Udp,
}

impl Protocol {
    /// Lower-case name as used by iptables, nmap and `80/tcp` notation.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a port must look from outside.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Accepted: a listener answers (SYN/ACK), nothing is in the way.
    Open,
    /// Rejected with a TCP reset / ICMP port-unreachable: looks like nothing listens.
    Closed,
    /// Dropped: the scanner gets no answer.
    Filtered,
}

impl State {
    /// The word used in documents and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::Filtered => "filtered",
        }
    }

    /// How restrictive the state is; on a precedence tie the more restrictive state wins
    /// (filtered > closed > open).
    pub fn restrictiveness(self) -> u8 {
        match self {
            State::Open => 0,
            State::Closed => 1,
            State::Filtered => 2,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with open ports that no policy declares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// Leave them alone (default).
    #[default]
    Ignore,
    /// Report any open port not declared open as drift.
    Report,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based selector requirement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
    "message": "In and NotIn need at least one value; Exists and DoesNotExist take none"
}]))]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In`/`NotIn` (non-empty); must be empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// The operator of a [`LabelSelectorRequirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// The standalone inventory: the nodes portwarden manages and scans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    /// Always `portwarden.io/v1alpha1`.
    pub api_version: String,
    /// Always `Inventory`.
    pub kind: String,
    /// Optional metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// The nodes.
    pub nodes: Vec<InventoryNode>,
}

/// One node of the inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryNode {
    /// The node's name (`--node` refers to it; defaults to the host name).
    pub name: String,
    /// Addresses the node is scanned at (IPv4 or IPv6).
    pub addresses: Vec<String>,
    /// Labels matched by policies' `nodeSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
