//! Checked intent: what validated documents mean, with ports and sources parsed.
//!
//! Values of these types only come out of [`crate::validate`], so code downstream never sees a
//! malformed port or CIDR.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::document::{LabelSelector, Protocol, SelectorOperator, State, Unlisted};
use crate::expiry::Timestamp;
use crate::ports::PortRange;

/// A validated policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Unique name.
    pub name: String,
    /// Lower wins.
    pub priority: u32,
    /// Which nodes it applies to.
    pub selector: LabelSelector,
    /// Whether undeclared open ports are drift.
    pub unlisted: Unlisted,
    /// Entries, in document order.
    pub entries: Vec<Entry>,
}

/// A validated entry of a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Position in the policy's `spec.ports` (0-based), as reported by `explain`.
    pub index: usize,
    /// Sorted, disjoint port ranges.
    pub ports: Vec<PortRange>,
    /// Protocol.
    pub protocol: Protocol,
    /// Intended state.
    pub state: State,
    /// Source networks; empty means any source (IPv4 and IPv6).
    pub from: Vec<IpNet>,
    /// Why the entry exists.
    pub reason: Option<String>,
    /// When the entry stops applying (see [`crate::expiry`]); `None` for a permanent entry.
    pub expires: Option<Timestamp>,
}

/// A validated inventory node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Addresses to scan it at.
    pub addresses: Vec<IpAddr>,
    /// Labels for policy selection.
    pub labels: BTreeMap<String, String>,
}

/// Whether a node's labels satisfy a selector (Kubernetes semantics: every `matchLabels` pair
/// and every expression must hold; an empty selector selects everything).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.operator {
                SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn selector_semantics() {
        let web = labels(&[("role", "web"), ("zone", "a")]);
        let bare = labels(&[]);
        assert!(selects(&LabelSelector::default(), &bare));
        let sel = LabelSelector {
            match_labels: labels(&[("role", "web")]),
            match_expressions: vec![],
        };
        assert!(selects(&sel, &web) && !selects(&sel, &bare));
        let op = SelectorOperator::In;
        assert!(selects(&expr("zone", op, &["a", "b"]), &web));
        assert!(!selects(&expr("zone", op, &["b"]), &web));
        assert!(!selects(&expr("zone", op, &["a"]), &bare));
        let op = SelectorOperator::NotIn;
        assert!(!selects(&expr("zone", op, &["a"]), &web));
        assert!(selects(&expr("zone", op, &["a"]), &bare));
        assert!(selects(&expr("zone", SelectorOperator::Exists, &[]), &web));
        assert!(!selects(
            &expr("zone", SelectorOperator::Exists, &[]),
            &bare
        ));
        assert!(selects(
            &expr("zone", SelectorOperator::DoesNotExist, &[]),
            &bare
        ));
    }
}
